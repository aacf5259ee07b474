/**
 * Calls in flight when the client's connection to RabbitMQ drops: their replies can never come (the
 * reply channel is gone), so each fails at once with `TransportError` `OutcomeUnknown`, with a deadline
 * or without one, instead of waiting out its deadline (or for ever). On a node of its own
 * (`MESH_RABBITMQ_RPC_LOSS_PORT`, default the checkout's base port + 5), restarted and SIGKILLed; the service runs as a
 * separate process (test/fixtures/programs/workService.ts).
 */
import { assert, describe, it } from "@effect/vitest"
import { Clock, Effect, Fiber, Layer, Schedule } from "effect"
import { AmqpBroker, Broker, Nameko, ServiceClient, ServiceError } from "effect-mesh"
import { readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { spawnProgram } from "./fixtures/processes.ts"
import { workContract } from "./fixtures/programs/workContract.ts"
import { useRabbitNode } from "./fixtures/rabbit.ts"
import { checkoutPort } from "./fixtures/ports.ts"

const program = fileURLToPath(new URL("./fixtures/programs/workService.ts", import.meta.url))
const port = checkoutPort("rpcLoss", process.env["MESH_RABBITMQ_RPC_LOSS_PORT"])
const node = useRabbitNode(port)

/** SIGKILLs the node's Erlang VM (its pid is in the script's pid file), then starts it again */
const killNode = Effect.sync(() => {
  const pidFile = fileURLToPath(new URL(`../.rabbitmq/${port}/rabbitmq.pid`, import.meta.url))
  process.kill(Number(readFileSync(pidFile, "utf8").trim()), "SIGKILL")
})

const clientLayer = () =>
  Layer.merge(ServiceClient.layer, Nameko.layerClient).pipe(
    Layer.provideMerge(AmqpBroker.layer({ url: node.url(), reconnect: Schedule.spaced("250 millis") })),
    Layer.fresh
  )

const suffix = () => crypto.randomUUID().slice(0, 8)

/** how each of 20 calls in flight ended (10 with a 20 s timeout, 10 without), and after how long */
const lostInFlight = (fault: Effect.Effect<unknown, Error>) =>
  Effect.gen(function*() {
    const service = `lost-${suffix()}`
    const instance = yield* spawnProgram(program, { AMQP_URL: node.url(), SERVICE: service })
    yield* instance.waitFor(/^ready/)
    const work = yield* ServiceClient.make(workContract(service))
    const call = (id: number) =>
      Effect.gen(function*() {
        const start = yield* Clock.currentTimeMillis
        // the handler takes a minute: only the connection's loss can end the call early
        const request = work.work({ id, millis: 60_000 }, id % 2 === 0 ? { timeout: "20 seconds" } : undefined)
        const error = yield* request.pipe(
          Effect.flip,
          // a call without a deadline waited for ever before: fail the test instead
          Effect.timeoutOrElse({ duration: "30 seconds", orElse: () => Effect.succeed("hung" as const) })
        )
        return { id, error, millis: (yield* Clock.currentTimeMillis) - start }
      })
    const calls = yield* Effect.forkChild(Effect.forEach(Array.from({ length: 20 }, (_, id) => id), call, {
      concurrency: "unbounded"
    }))
    // and calls on Nameko's wire, to a Nameko service whose queue nobody consumes: they wait
    const namekoService = `nameko_${suffix()}`
    const broker = yield* Broker.Broker
    yield* broker.declareExchange("nameko-rpc", "topic", { durable: true })
    yield* broker.declareQueue(`rpc-${namekoService}`, { autoDelete: false, expires: 600_000 })
    yield* broker.bindQueue(`rpc-${namekoService}`, "nameko-rpc", `${namekoService}.*`)
    const nameko = yield* Nameko.client(workContract(namekoService), { args: { work: ["id", "millis"] } })
    const namekoCall = (id: number) =>
      Effect.gen(function*() {
        const start = yield* Clock.currentTimeMillis
        const error = yield* nameko.work({ id, millis: 1 }, id % 2 === 0 ? { timeout: "20 seconds" } : undefined).pipe(
          Effect.flip,
          Effect.timeoutOrElse({ duration: "30 seconds", orElse: () => Effect.succeed("hung" as const) })
        )
        return { id: 100 + id, error, millis: (yield* Clock.currentTimeMillis) - start }
      })
    const namekoCalls = yield* Effect.forkChild(Effect.forEach([0, 1, 2, 3], namekoCall, { concurrency: "unbounded" }))
    // let every call reach the instance (it logs nothing per call until it serves one)
    yield* Effect.sleep("1 second")
    yield* fault
    const outcomes = [...yield* Fiber.join(calls), ...yield* Fiber.join(namekoCalls)]
    for (const { error, id, millis } of outcomes) {
      const what = `call ${id} (${id % 2 === 0 ? "20 s timeout" : "no timeout"}) after ${millis} ms: ${String(error)}`
      assert.instanceOf(error, ServiceError.TransportError, what)
      if (error instanceof ServiceError.TransportError) {
        assert.strictEqual(error.reason, "OutcomeUnknown", what)
        assert.match(error.message, /outcome is unknown/, what)
        // never retried by a client's retry schedule unless the caller says the call is idempotent
        assert.isFalse(ServiceError.isRetryable(error))
        assert.isTrue(ServiceError.isRetryableIfIdempotent(error))
      }
      // well before the 20 s deadline: the node closes (or drops) the connection within seconds
      assert.isBelow(millis, 10_000, what)
    }
    // the same client works again once the node is back
    const again = yield* work.work({ id: 99, millis: 1 }, { timeout: "5 seconds" }).pipe(
      Effect.retry(Schedule.max([Schedule.spaced("250 millis"), Schedule.during("60 seconds")]))
    )
    assert.strictEqual(again.id, 99)
  })

describe("rpc calls in flight when the connection to RabbitMQ drops", () => {
  it.live("the node restarts: every call in flight fails at once with TransportError OutcomeUnknown, deadline or not", () =>
    lostInFlight(node.restart).pipe(Effect.scoped, Effect.provide(clientLayer())), 180_000)

  it.live("the node is SIGKILLed: every call in flight fails at once with TransportError OutcomeUnknown, deadline or not", () =>
    lostInFlight(Effect.andThen(killNode, Effect.forkChild(node.start))).pipe(
      Effect.scoped,
      Effect.provide(clientLayer())
    ), 180_000)
})
