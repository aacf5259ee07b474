/**
 * `mesh dlq` as a user runs it, a real process on RabbitMQ: list a service's dead letters (twice: they
 * stay), replay some and then all of them to the queue they died in, purge them, and bad input.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Stream } from "effect"
import { AmqpBroker, Broker } from "effect-mesh"
import { fileURLToPath } from "node:url"
import * as DeadLetterQueue from "../src/internal/deadLetterQueue.ts"
import * as topology from "../src/internal/topology.ts"
import { amqpUrl } from "./fixtures/amqpUrl.ts"
import { spawnProgram } from "./fixtures/processes.ts"

const bin = fileURLToPath(new URL("../src/bin.ts", import.meta.url))
const suffix = () => crypto.randomUUID().slice(0, 8)
const encode = (s: string) => new TextEncoder().encode(s)

/** runs `mesh <args>` to its end: exit code and everything it printed */
const mesh = (args: ReadonlyArray<string>, env: Readonly<Record<string, string>> = { AMQP_URL: amqpUrl() }) =>
  Effect.scoped(Effect.gen(function*() {
    const proc = yield* spawnProgram(bin, env, args)
    const { code } = yield* proc.exited
    return { code, lines: proc.output() }
  }))

interface Listed {
  readonly reason: string
  readonly origin: string
  readonly type: string
  readonly body: string
  readonly diedAt: string
  readonly routingKey: string
}

const listJson = (target: string) =>
  Effect.map(mesh(["dlq", target, "--json", "--wait", "500 millis"]), ({ code, lines }) => {
    assert.strictEqual(code, 0, lines.join("\n"))
    return JSON.parse(lines.join("")) as ReadonlyArray<Listed>
  })

/** a service's request queue, dead-lettering into its bounded dead-letter queue as the mesh declares it */
const declareService = (service: string) =>
  Effect.gen(function*() {
    const broker = yield* Broker.Broker
    yield* topology.declareCommon(broker)
    yield* DeadLetterQueue.declare(broker, topology.rpcDeadLetterQueue(service))
    yield* broker.declareQueue(topology.rpcQueue(service), {
      durable: true,
      deadLetterExchange: topology.deadLetterExchange,
      deadLetterRoutingKey: topology.rpcDeadLetterQueue(service)
    })
  })

/** publishes commands to the service's queue and rejects them: RabbitMQ dead-letters them */
const kill = (service: string, bodies: ReadonlyArray<string>) =>
  Effect.scoped(Effect.gen(function*() {
    const broker = yield* Broker.Broker
    for (const body of bodies) {
      yield* broker.publish("", topology.rpcQueue(service), encode(body), { type: "place", confirm: true })
    }
    const consumer = yield* broker.consume(topology.rpcQueue(service), { prefetch: bodies.length })
    yield* consumer.deliveries.pipe(Stream.take(bodies.length), Stream.runForEach((d) => d.nack(false)))
  }))

/** the next `n` messages of a queue, acked */
const take = (queue: string, n: number) =>
  Effect.scoped(Effect.gen(function*() {
    const broker = yield* Broker.Broker
    const consumer = yield* broker.consume(queue, { prefetch: n })
    const got = yield* consumer.deliveries.pipe(Stream.take(n), Stream.tap((d) => d.ack), Stream.runCollect, Effect.timeout("10 seconds"))
    return Array.from(got, (d) => new TextDecoder().decode(d.body))
  }))

const brokerLayer = () => Layer.fresh(AmqpBroker.layer({ url: amqpUrl(), reconnect: undefined }))

describe("mesh dlq", () => {
  it.live("lists a service's dead letters with reason, time and origin, leaves them; replays some, then all; purges", () => {
    const service = `dlq-cli-${suffix()}`
    const dead = topology.rpcDeadLetterQueue(service)
    const origin = topology.rpcQueue(service)
    return Effect.gen(function*() {
      const broker = yield* Broker.Broker
      yield* declareService(service)
      const before = Date.now()
      yield* kill(service, ["{\"id\":\"o-1\"}", "{\"id\":\"o-2\"}", "{\"id\":\"o-3\"}"])

      const text = yield* mesh(["dlq", service, "--wait", "500 millis"])
      assert.strictEqual(text.code, 0, text.lines.join("\n"))
      assert.strictEqual(text.lines[0], `${dead}: 3 dead letters, oldest first`)
      assert.match(text.lines[1], new RegExp(`^1\\. \\d{4}-\\d\\d-\\d\\dT\\S+Z {2}rejected {2}from ${origin} {2}type place {2}routing key ${dead}$`))
      assert.strictEqual(text.lines[2], "   body: {\"id\":\"o-1\"}")

      const listed = yield* listJson(service)
      assert.deepStrictEqual(listed.map((l) => [l.reason, l.origin, l.type, l.body]), [
        ["rejected", origin, "place", "{\"id\":\"o-1\"}"],
        ["rejected", origin, "place", "{\"id\":\"o-2\"}"],
        ["rejected", origin, "place", "{\"id\":\"o-3\"}"]
      ])
      // RabbitMQ records the time of a death to the second
      assert.isAtLeast(Date.parse(listed[0].diedAt), before - 1000)
      assert.isAtMost(Date.parse(listed[0].diedAt), Date.now() + 1000)
      assert.strictEqual((yield* listJson(dead)).length, 3, "listing left them in the queue; the queue's name works too")

      const one = yield* mesh(["dlq", service, "--replay", "--limit", "1", "--wait", "500 millis"])
      assert.deepStrictEqual(one, { code: 0, lines: [`replayed 1 dead letter from ${dead}`] })
      assert.deepStrictEqual(yield* take(origin, 1), ["{\"id\":\"o-1\"}"])
      assert.deepStrictEqual((yield* listJson(service)).map((l) => l.body), ["{\"id\":\"o-2\"}", "{\"id\":\"o-3\"}"])
      const rest = yield* mesh(["dlq", service, "--replay", "--wait", "500 millis"])
      assert.deepStrictEqual(rest, { code: 0, lines: [`replayed 2 dead letters from ${dead}`] })
      assert.deepStrictEqual(yield* take(origin, 2), ["{\"id\":\"o-2\"}", "{\"id\":\"o-3\"}"])
      assert.deepStrictEqual(yield* listJson(service), [])

      yield* kill(service, ["{\"id\":\"o-4\"}", "{\"id\":\"o-5\"}"])
      const purged = yield* mesh(["dlq", service, "--purge", "--wait", "500 millis"])
      assert.deepStrictEqual(purged, { code: 0, lines: [`purged 2 dead letters from ${dead}`] })
      assert.deepStrictEqual(yield* listJson(service), [])
      const empty = yield* mesh(["dlq", service, "--wait", "200 millis"])
      assert.deepStrictEqual(empty, { code: 0, lines: [`${dead}: no dead letters`] })

      yield* Effect.ignore(broker.deleteQueue(origin))
      yield* Effect.ignore(broker.deleteQueue(dead))
    }).pipe(Effect.provide(brokerLayer()))
  }, 120_000)

  it.live("a letter whose queue is gone stays, and the command says so (exit 1)", () => {
    const service = `dlq-gone-${suffix()}`
    const dead = topology.rpcDeadLetterQueue(service)
    return Effect.gen(function*() {
      const broker = yield* Broker.Broker
      yield* declareService(service)
      yield* kill(service, ["{\"id\":\"lost\"}"])
      yield* broker.deleteQueue(topology.rpcQueue(service))
      const replay = yield* mesh(["dlq", service, "--replay", "--wait", "500 millis"])
      assert.strictEqual(replay.code, 1)
      assert.include(replay.lines, `replayed 0 dead letters from ${dead}`)
      assert.isTrue(replay.lines.some((l) => l.startsWith(`mesh: could not replay to ${topology.rpcQueue(service)}: `)))
      assert.include(replay.lines, `mesh: could not replay 1 dead letter; it stays in ${dead}`)
      assert.deepStrictEqual((yield* listJson(service)).map((l) => l.body), ["{\"id\":\"lost\"}"])
      yield* Effect.ignore(broker.deleteQueue(dead))
    }).pipe(Effect.provide(brokerLayer()))
  }, 60_000)

  it.live("bad input: no RabbitMQ, no such queue, --replay with --purge", () =>
    Effect.gen(function*() {
      const embedded = yield* mesh(["dlq", "orders"], { AMQP_URL: "" })
      assert.strictEqual(embedded.code, 2)
      assert.match(embedded.lines.join("\n"), /^mesh: dlq needs RabbitMQ: set AMQP_URL/)
      const missing = `nothing-${suffix()}.dead`
      assert.deepStrictEqual(yield* mesh(["dlq", missing, "--wait", "200 millis"]), {
        code: 1,
        lines: [`mesh: no queue ${missing}`]
      })
      assert.deepStrictEqual(yield* mesh(["dlq", "orders", "--replay", "--purge"]), {
        code: 2,
        lines: ["mesh: choose one of --replay and --purge"]
      })
    }), 60_000)
})
