/**
 * RPC against a real RabbitMQ when processes die, stop or lose the broker: service instances run as
 * separate processes (test/fixtures/programs/workService.ts); the test process is the client.
 */
import { assert, describe, it } from "@effect/vitest"
import { Clock, Effect, Exit, Fiber, Layer } from "effect"
import { AmqpBroker, ServiceClient } from "effect-mesh"
import { fileURLToPath } from "node:url"
import { spawnProgram } from "./fixtures/processes.ts"
import { workContract } from "./fixtures/programs/workContract.ts"
import { useRabbitNode } from "./fixtures/rabbit.ts"
import { checkoutPort } from "./fixtures/ports.ts"

const program = fileURLToPath(new URL("./fixtures/programs/workService.ts", import.meta.url))
const node = useRabbitNode(checkoutPort("rpcFaults", process.env["MESH_RABBITMQ_RPC_FAULT_PORT"]))

const clientLayer = () =>
  ServiceClient.layer.pipe(Layer.provideMerge(AmqpBroker.layer({ url: node.url(), reconnect: undefined })), Layer.fresh)

const suffix = () => crypto.randomUUID().slice(0, 8)

const twoInstances = (service: string) =>
  Effect.gen(function*() {
    const a = yield* spawnProgram(program, { AMQP_URL: node.url(), SERVICE: service })
    const b = yield* spawnProgram(program, { AMQP_URL: node.url(), SERVICE: service })
    yield* a.waitFor(/^ready/)
    yield* b.waitFor(/^ready/)
    return [a, b] as const
  })

/** 200 calls of 300 ms each, all in flight at once, in a background fiber */
const callsInFlight = (service: string) =>
  Effect.gen(function*() {
    const work = yield* ServiceClient.make(workContract(service), { timeout: "60 seconds" })
    return yield* Effect.forEach(
      Array.from({ length: 200 }, (_, id) => id),
      (id) => work.work({ id, millis: 300 }),
      { concurrency: "unbounded" }
    ).pipe(Effect.forkChild)
  })

describe("rpc faults on RabbitMQ", () => {
  it.live("200 calls in flight, one of two instances SIGKILLed mid-way: all 200 complete", () =>
    Effect.gen(function*() {
      const service = `work-${suffix()}`
      const [a, b] = yield* twoInstances(service)
      const calls = yield* callsInFlight(service)
      yield* a.waitFor(/^served/)
      yield* a.kill("SIGKILL")
      const results = yield* Fiber.join(calls)
      assert.strictEqual(results.length, 200)
      assert.deepStrictEqual(results.map((r) => r.id), Array.from({ length: 200 }, (_, id) => id))
      assert.isTrue(results.some((r) => r.pid === b.pid))
      assert.strictEqual((yield* a.exited).signal, "SIGKILL")
    }).pipe(Effect.scoped, Effect.provide(clientLayer())), 120_000)

  it.live("SIGTERM with calls in flight: the instance drains, exits 0, and no call is lost", () =>
    Effect.gen(function*() {
      const service = `work-${suffix()}`
      const [a, b] = yield* twoInstances(service)
      const calls = yield* callsInFlight(service)
      yield* a.waitFor(/^served/)
      yield* a.kill("SIGTERM")
      const results = yield* Fiber.join(calls)
      assert.deepStrictEqual(results.map((r) => r.id), Array.from({ length: 200 }, (_, id) => id))
      const exit = yield* a.exited
      assert.strictEqual(exit.code, 0)
      yield* a.waitFor(/^stopped/)
      // the stopping instance answered what it had started; the other took the rest
      assert.isTrue(results.some((r) => r.pid === a.pid))
      assert.isTrue(results.some((r) => r.pid === b.pid))
    }).pipe(Effect.scoped, Effect.provide(clientLayer())), 120_000)

  it.live("the broker restarts while a client keeps calling: calls recover, none hangs past its timeout", () =>
    Effect.gen(function*() {
      const service = `work-${suffix()}`
      const instance = yield* spawnProgram(program, { AMQP_URL: node.url(), SERVICE: service })
      yield* instance.waitFor(/^ready/)
      const work = yield* ServiceClient.make(workContract(service), { timeout: "2 seconds" })
      const outcomes: Array<{ readonly ok: boolean; readonly tag: string; readonly millis: number }> = []
      let stop = false
      const caller = yield* Effect.gen(function*() {
        let id = 0
        while (!stop) {
          const start = yield* Clock.currentTimeMillis
          const exit = yield* Effect.exit(work.work({ id: id++, millis: 5 }))
          const millis = (yield* Clock.currentTimeMillis) - start
          outcomes.push({
            ok: Exit.isSuccess(exit),
            tag: Exit.isFailure(exit) ? String(Exit.findErrorOption(exit).pipe((o) => o._tag === "Some" ? o.value._tag : "defect")) : "",
            millis
          })
          yield* Effect.sleep("50 millis")
        }
      }).pipe(Effect.forkChild)
      yield* Effect.sleep("1 second")
      yield* node.restart
      // after the restart: calls succeed again, with the same service and client processes
      const recovered = yield* Effect.gen(function*() {
        while (true) {
          const last = outcomes.slice(-5)
          if (last.length === 5 && last.every((o) => o.ok)) return true
          yield* Effect.sleep("100 millis")
        }
      }).pipe(Effect.timeoutOrElse({ duration: "60 seconds", orElse: () => Effect.succeed(false) }))
      stop = true
      yield* Fiber.join(caller)
      assert.isTrue(recovered, `calls did not recover: ${JSON.stringify(outcomes.slice(-10))}`)
      const failures = outcomes.filter((o) => !o.ok)
      for (const failure of failures) {
        assert.include(["TransportError", "CallTimeout", "ServiceNotFound"], failure.tag)
      }
      // none hung: every call ended within its 2 s timeout, with some slack for a busy machine
      assert.isBelow(Math.max(...outcomes.map((o) => o.millis)), 3000)
      assert.isAbove(outcomes.filter((o) => o.ok).length, 10)
      assert.isTrue(instance.output().some((l) => l.startsWith("served")))
    }).pipe(Effect.scoped, Effect.provide(clientLayer())), 180_000)
})
