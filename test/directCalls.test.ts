/**
 * Direct calls on the embedded broker: a client and a service instance of one process skip the queue.
 * Everything they must keep is in the conformance suite (run with direct calls and with
 * `directCalls: false`); this file shows that the queue is really skipped, and what still takes it.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Layer, Stream } from "effect"
import { Broker, MemoryBroker, ServiceClient } from "effect-mesh"
import * as topology from "../src/internal/topology.ts"
import { contracts, mathService, SleepProbe } from "./fixtures/services.ts"

/** the math service, plus a stranger consuming its queue: it takes what it is given and never answers */
const withStranger = (broker: Layer.Layer<Broker.Broker>) => {
  const c = contracts(crypto.randomUUID().slice(0, 8))
  const layer = mathService(c).pipe(
    Layer.provideMerge(SleepProbe.layer),
    Layer.provideMerge(ServiceClient.layer),
    Layer.provideMerge(Layer.fresh(broker))
  )
  return Effect.gen(function*() {
    const broker = yield* Broker.Broker
    const stranger = yield* broker.consume(topology.rpcQueue(c.math.name), { prefetch: 1_000, tag: "stranger" })
    let taken = 0
    yield* stranger.deliveries.pipe(Stream.runForEach(() => Effect.sync(() => taken++)), Effect.forkScoped)
    const math = yield* ServiceClient.make(c.math)
    const exits = yield* Effect.forEach(
      Array.from({ length: 40 }, (_, i) => i),
      (i) => Effect.exit(math.add({ a: i, b: 1 }, { timeout: "1 second" })),
      { concurrency: "unbounded" }
    )
    const streamed = yield* Stream.runCollect(math.countdown({ from: 3 }).pipe(Stream.timeout("1 second")))
    return { answered: exits.filter(Exit.isSuccess).length, taken, streamed: streamed.length }
  }).pipe(Effect.scoped, Effect.provide(layer))
}

describe("direct calls (MemoryBroker)", () => {
  it.live("unary calls go to the instance without entering the queue; with directCalls: false they take it", () =>
    Effect.gen(function*() {
      const direct = yield* withStranger(MemoryBroker.layer)
      assert.strictEqual(direct.answered, 40)
      // only the stream took the queue (where the stranger may have taken it)
      assert.isAtMost(direct.taken, 1)

      const queued = yield* withStranger(MemoryBroker.layerWith({ directCalls: false }))
      assert.isAbove(queued.taken, 0)
      assert.strictEqual(queued.answered + queued.taken, 40 + (queued.streamed === 0 ? 1 : 0))
    }))
})
