/**
 * Events against a real RabbitMQ when things break.
 *
 * - A subscriber process SIGKILLed mid-handler (on the shared node: nothing happens to the broker):
 *   its events are redelivered to another instance.
 * - The broker restarts while a publisher keeps publishing: on a private node of this file's own
 *   (`MESH_RABBITMQ_EVENT_FAULT_PORT`, default the checkout's base port + 4), so the restart never disturbs the test files
 *   running in parallel on the shared node.
 */
import { assert, describe, it } from "@effect/vitest"
import { Cause, Effect, Exit, Fiber, Layer, Schedule, Schema } from "effect"
import { Rpc, RpcGroup } from "effect/rpc"
import { AmqpBroker, Broker, Event, Service, ServiceContract } from "effect-mesh"
import { fileURLToPath } from "node:url"
import * as topology from "../src/internal/topology.ts"
import { amqpUrl } from "./fixtures/amqpUrl.ts"
import { spawnProgram } from "./fixtures/processes.ts"
import { useRabbitNode } from "./fixtures/rabbit.ts"
import { checkoutPort } from "./fixtures/ports.ts"

const program = fileURLToPath(new URL("./fixtures/programs/eventSubscriber.ts", import.meta.url))
const suffix = () => crypto.randomUUID().slice(0, 8)

const Tick = Schema.Struct({ n: Schema.Int, label: Schema.String })

class PingRpcs extends RpcGroup.make(Rpc.make("ping", { success: Schema.String })) {}

const poolQueues = (source: string, service: string) => {
  const base = topology.eventSubscription(source, "tick", "pool", service, undefined)
  return [base, topology.eventDeadLetterQueue(base)]
}

const deleteQueues = (queues: ReadonlyArray<string>) =>
  Effect.flatMap(Broker.Broker, (broker) =>
    Effect.forEach(queues, (q) => Effect.ignore(broker.deleteQueue(q)), { discard: true }))

describe("event faults on RabbitMQ", () => {
  it.live("a subscriber SIGKILLed mid-handler: its events are redelivered and processed by another instance", () =>
    Effect.gen(function*() {
      const id = suffix()
      const source = `src-${id}`
      const service = `kill-${id}`
      const TickEvent = Event.make(source, "tick", Tick)
      const env = { AMQP_URL: amqpUrl(), SOURCE: source, SERVICE: service }
      yield* Effect.gen(function*() {
        const doomed = yield* spawnProgram(program, { ...env, MODE: "block" })
        yield* doomed.waitFor(/^ready/)
        for (let n = 1; n <= 4; n++) yield* Event.publish(TickEvent, { n, label: "k" })
        for (let n = 1; n <= 4; n++) yield* doomed.waitFor(new RegExp(`^started ${n}$`))
        const survivor = yield* spawnProgram(program, { ...env, MODE: "work" })
        yield* survivor.waitFor(/^ready/)
        // the events are held, unacked, by the blocked instance: nobody else gets them yet
        yield* Effect.sleep("300 millis")
        assert.isFalse(survivor.output().some((l) => l.startsWith("started")))
        yield* doomed.kill("SIGKILL")
        assert.strictEqual((yield* doomed.exited).signal, "SIGKILL")
        for (let n = 1; n <= 4; n++) {
          yield* survivor.waitFor(new RegExp(`^handled ${n} redelivered=true$`))
        }
        // each once: acked after processing, so no further redelivery
        yield* Effect.sleep("300 millis")
        assert.strictEqual(survivor.output().filter((l) => l.startsWith("handled")).length, 4)
      }).pipe(Effect.scoped, Effect.ensuring(deleteQueues(poolQueues(source, service))))
    }).pipe(Effect.provide(Layer.suspend(() => AmqpBroker.layer({ url: amqpUrl() })))), 120_000)
})

describe("event faults on RabbitMQ: a broker restart", () => {
  const node = useRabbitNode(checkoutPort("eventFaults", process.env["MESH_RABBITMQ_EVENT_FAULT_PORT"]))

  it.live("publishing across a restart: each publish succeeds (and is delivered) or fails typed; none is lost", () =>
    Effect.gen(function*() {
      const id = suffix()
      const source = `src-${id}`
      const service = `restart-${id}`
      const TickEvent = Event.make(source, "tick", Tick)
      const delivered = new Set<number>()
      const broker = () => AmqpBroker.layer({ url: node.url(), reconnect: Schedule.spaced("200 millis") })
      const subscriber = Service.make(ServiceContract.make(service, PingRpcs), {
        handlers: { ping: () => Effect.succeed("pong") },
        entrypoints: [Event.handle(TickEvent, {}, (tick) => Effect.sync(() => delivered.add(tick.n)))]
      }).pipe(Layer.provide(broker()), Layer.fresh)

      yield* Effect.gen(function*() {
        yield* Layer.build(subscriber)
        const outcomes: Array<{ readonly n: number; readonly exit: Exit.Exit<void, Event.EventError | "hung"> }> = []
        const publish = (n: number) =>
          Event.publish(TickEvent, { n, label: "r" }).pipe(
            Effect.timeoutOrElse({ duration: "15 seconds", orElse: () => Effect.fail("hung" as const) }),
            Effect.exit,
            Effect.map((exit) => outcomes.push({ n, exit }))
          )
        let n = 0
        // before: the broker is up
        while (n < 20) yield* publish(n++)
        const restart = yield* Effect.forkChild(node.restart)
        // during and after: keep publishing until the restart is over and 20 more went through
        let afterRestart = 0
        while (afterRestart < 20) {
          yield* publish(n++)
          if (restart.pollUnsafe() !== undefined && Exit.isSuccess(outcomes[outcomes.length - 1].exit)) afterRestart++
          yield* Effect.sleep("10 millis")
        }
        yield* Fiber.join(restart)

        const succeeded = outcomes.filter((o) => Exit.isSuccess(o.exit)).map((o) => o.n)
        const failed = outcomes.filter((o) => Exit.isFailure(o.exit))
        const errors = failed.map((o) => Exit.isFailure(o.exit) ? Cause.squash(o.exit.cause) : undefined)
        // every failure is typed: an EventError saying the transport did not confirm it
        for (const error of errors) {
          assert.instanceOf(error, Event.EventError)
          assert.strictEqual((error as Event.EventError).reason, "Transport")
        }
        assert.isAbove(failed.length, 0, "the restart was seen by the publisher")
        assert.isAbove(succeeded.length, 40)
        // every confirmed event is delivered, the ones published before the restart included
        const missing = () => succeeded.filter((s) => !delivered.has(s))
        yield* Effect.suspend(() => missing().length === 0 ? Effect.void : Effect.fail("missing")).pipe(
          Effect.retry(Schedule.spaced("100 millis")),
          Effect.timeoutOrElse({
            duration: "60 seconds",
            orElse: () => Effect.die(new Error(`confirmed but never delivered: ${missing().join(",")}`))
          })
        )
        yield* Effect.logInfo(
          `restart: ${succeeded.length} confirmed and delivered, ${failed.length} failed typed, ` +
            `${failed.filter((o) => delivered.has(o.n)).length} of those delivered anyway`
        )
      }).pipe(
        Effect.scoped,
        Effect.ensuring(deleteQueues(poolQueues(source, service)).pipe(Effect.provide(broker()), Effect.ignore))
      )
    }).pipe(Effect.provide(Layer.suspend(() => AmqpBroker.layer({ url: node.url(), reconnect: Schedule.spaced("200 millis") })))), 240_000)
})
