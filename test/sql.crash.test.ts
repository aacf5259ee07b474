/**
 * The outbox across crashes, with real processes on RabbitMQ and PostgreSQL: an orders process
 * (`fixtures/programs/outboxOrders.ts`) SIGKILLed after its commits and before any publish, then a
 * relay started after it (in the test's process) publishes every committed event once, and nothing
 * more on its next rounds; a process killed at a random moment while it commits and relays loses no committed
 * event and publishes none that did not commit (a repeat, if the kill fell between a confirm and its
 * mark, carries the same message id).
 */
import { afterAll, assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Schedule, Schema } from "effect"
import { Rpc, RpcGroup } from "effect/rpc"
import { SqlClient } from "effect/sql"
import { AmqpBroker, Broker, Event, Outbox, Service, ServiceContract } from "effect-mesh"
import { fileURLToPath } from "node:url"
import * as topology from "../src/internal/topology.ts"
import { amqpUrl } from "./fixtures/amqpUrl.ts"
import { database } from "./fixtures/postgres.ts"
import { spawnProgram } from "./fixtures/processes.ts"

const db = database("sql_crash")
afterAll(() => db.release())

const program = fileURLToPath(new URL("./fixtures/programs/outboxOrders.ts", import.meta.url))

class PingRpcs extends RpcGroup.make(Rpc.make("ping", { success: Schema.String })) {}

interface Received {
  readonly n: number
  readonly messageId: string
  readonly correlationId: string
}

/** a subscriber of the orders' events in this process, recording every delivery */
const subscriber = (id: string, received: Array<Received>) =>
  Service.make(ServiceContract.make(`shipping-${id}`, PingRpcs), {
    handlers: { ping: () => Effect.succeed("pong") },
    entrypoints: [
      Event.handle(orderPlaced(id), {}, (order, metadata) =>
        Effect.sync(() => {
          received.push({ n: order.n, messageId: metadata.messageId, correlationId: metadata.context.correlationId })
        }))
    ]
  })

const eventually = (check: () => boolean, describe: () => string) =>
  Effect.suspend(() => check() ? Effect.void : Effect.fail("not yet")).pipe(
    Effect.retry(Schedule.spaced("25 millis")),
    Effect.timeoutOrElse({ duration: "20 seconds", orElse: () => Effect.die(new Error(`timed out: ${describe()}`)) })
  )

const eventuallyEffect = <E, R>(check: Effect.Effect<boolean, E, R>, describe: string) =>
  Effect.flatMap(check, (ok) => ok ? Effect.void : Effect.fail("not yet" as const)).pipe(
    Effect.retry(Schedule.spaced("25 millis")),
    Effect.timeoutOrElse({ duration: "20 seconds", orElse: () => Effect.die(new Error(`timed out: ${describe}`)) })
  )

/** the relay of the orders' events, as a restarted orders process runs it */
const relay = (id: string) =>
  Outbox.layerRelay({ events: [orderPlaced(id)], table: `outbox_${id}`, interval: "50 millis" })

const orderPlaced = (id: string) => Event.make(`orders-${id}`, "placed", Schema.Struct({ n: Schema.Int }))

const rows = (id: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ readonly id: string; readonly sent: boolean; readonly n: number }>`
      select id, sent_at is not null as sent, (payload->>'n')::int as n from ${sql(`outbox_${id}`)} order by seq`)

const committed = (id: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(sql<{ readonly n: number }>`select n from ${sql(`orders_${id}`)} order by n`, (r) => r.map((x) => x.n)))

const env = (id: string, mode: string, extra: Record<string, string> = {}) => ({
  AMQP_URL: amqpUrl(),
  DATABASE_URL: db.url,
  ID: id,
  MODE: mode,
  ...extra
})

const withSubscriber = <A, E, R>(id: string, received: Array<Received>, body: Effect.Effect<A, E, R>) => {
  const queue = topology.eventSubscription(`orders-${id}`, "placed", "pool", `shipping-${id}`, undefined)
  return body.pipe(
    Effect.provide(subscriber(id, received), { local: true }),
    Effect.ensuring(Effect.flatMap(Broker.Broker, (broker) =>
      Effect.forEach(
        [queue, topology.eventDeadLetterQueue(queue), topology.rpcQueue(`shipping-${id}`)],
        (q) => Effect.ignore(broker.deleteQueue(q)),
        { discard: true }
      ))),
    Effect.provide(Layer.fresh(Layer.suspend(() => AmqpBroker.layer({ url: amqpUrl() }))), { local: true }),
    Effect.provide(db.layer, { local: true })
  )
}

describe("the outbox across crashes (RabbitMQ, PostgreSQL, real processes)", () => {
  it.live("SIGKILL after the commits, before any publish: a relay started later publishes each committed event once", () => {
    const id = crypto.randomUUID().slice(0, 8)
    const received: Array<Received> = []
    const count = 20
    return withSubscriber(id, received, Effect.gen(function*() {
      const orders = yield* spawnProgram(program, env(id, "commit", { COUNT: String(count) }))
      yield* orders.waitFor(/^all committed$/)
      yield* orders.kill("SIGKILL")
      assert.strictEqual((yield* orders.exited).signal, "SIGKILL")
      const before = yield* rows(id)
      assert.strictEqual(before.length, count)
      assert.isTrue(before.every((r) => !r.sent), "nothing was published before the kill")
      assert.deepStrictEqual(received, [])

      // the relay of a second life (here, in this process) publishes what the first had committed
      yield* Layer.build(relay(id))
      yield* eventually(() => received.length >= count, () => `${received.length}/${count} received`)
      yield* eventuallyEffect(Effect.map(rows(id), (after) => after.every((r) => r.sent)), "every row marked sent")
      // a few more rounds of the relay publish nothing again
      yield* Effect.sleep("400 millis")
      const after = yield* rows(id)
      // each committed order once, with its row's id as message id and its call's correlation id
      assert.deepStrictEqual(
        [...received].sort((a, b) => a.n - b.n),
        after.map((r) => ({ n: r.n, messageId: r.id, correlationId: `order-${r.n}` }))
      )
    }).pipe(Effect.scoped))
  })

  it.live("SIGKILL at a random moment while committing and relaying: every committed event goes out, nothing else", () => {
    const id = crypto.randomUUID().slice(0, 8)
    const received: Array<Received> = []
    return withSubscriber(id, received, Effect.gen(function*() {
      const orders = yield* spawnProgram(program, env(id, "stream"))
      yield* orders.waitFor(new RegExp(`^committed ${30 + Math.floor(Math.random() * 30)}$`))
      yield* orders.kill("SIGKILL")
      yield* orders.exited
      const commits = yield* committed(id)
      // the relay of a second life publishes what the first had not
      yield* Layer.build(relay(id))
      yield* eventually(
        () => new Set(received.map((r) => r.n)).size >= commits.length,
        () => `${new Set(received.map((r) => r.n)).size}/${commits.length} received`
      )
      yield* eventuallyEffect(Effect.map(rows(id), (after) => after.every((r) => r.sent)), "every row marked sent")
      const outbox = yield* rows(id)
      assert.deepStrictEqual(Array.from(new Set(received.map((r) => r.n))).sort((a, b) => a - b), commits)
      assert.deepStrictEqual(outbox.map((r) => r.n), commits, "one outbox row per commit, none for a rolled-back one")
      assert.isTrue(outbox.every((r) => r.sent))
      // one message id per commit: a repeat (between a confirm and its mark) is recognisable
      const idOf = new Map(outbox.map((r) => [r.n, r.id]))
      for (const r of received) assert.strictEqual(r.messageId, idOf.get(r.n))
    }).pipe(Effect.scoped))
  })
})
