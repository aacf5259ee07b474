/**
 * Direct calls on the embedded broker: a unary call between a client and a service instance of one
 * process goes through the service's queue as a value (`Broker.LocalBody`): nothing is serialized,
 * and the queue keeps everything it keeps for any message. Everything calls must keep is in the
 * conformance suite (run with direct calls and with `directCalls: false`); this file shows that the
 * values really travel as they are, and that they really take the queue.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Layer, Option, Schema, Stream } from "effect"
import { Rpc, RpcGroup } from "effect/rpc"
import { Broker, CallContext, MemoryBroker, Service, ServiceClient, ServiceContract } from "effect-mesh"
import * as topology from "../src/internal/topology.ts"
import * as wire from "../src/internal/wire.ts"
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
    const seen: Array<{ readonly local: boolean; readonly body: unknown; readonly context: boolean }> = []
    yield* stranger.deliveries.pipe(
      Stream.runForEach((delivery) =>
        Effect.sync(() =>
          seen.push({
            local: delivery.local !== undefined,
            body: Option.getOrUndefined(wire.decodeJson(delivery.body)),
            context: typeof delivery.properties.headers?.[CallContext.headerNames.context] === "string"
          })
        )
      ),
      Effect.forkScoped
    )
    const math = yield* ServiceClient.make(c.math)
    const exits = yield* Effect.forEach(
      Array.from({ length: 40 }, (_, i) => i),
      (i) => Effect.exit(math.add({ a: i, b: 1 }, { timeout: "1 second" })),
      { concurrency: "unbounded" }
    )
    return { answered: exits.filter(Exit.isSuccess).length, seen }
  }).pipe(Effect.scoped, Effect.provide(layer))
}

const Shape = Schema.Struct({ id: Schema.Number, tags: Schema.Array(Schema.String) })
const Identity = ServiceContract.make(
  "identity",
  RpcGroup.make(Rpc.make("keep", { payload: { shape: Shape }, success: Shape }))
)

/** what the handler got, and what the caller got back */
const roundTrip = (broker: Layer.Layer<Broker.Broker>) =>
  Effect.gen(function*() {
    let received: unknown
    const instance = Service.make(Identity, {
      handlers: { keep: ({ shape }) => Effect.sync(() => (received = shape, shape)) }
    })
    yield* Layer.build(instance)
    const client = yield* ServiceClient.make(Identity)
    const shape = { id: 1, tags: ["a"] }
    const back = yield* client.keep({ shape })
    return { sent: shape, received, back }
  }).pipe(Effect.scoped, Effect.provide(Layer.provideMerge(ServiceClient.layer, Layer.fresh(broker))))

describe("direct calls (MemoryBroker)", () => {
  it.live("a direct call takes the queue: another consumer of it gets its share, with the bytes and headers RabbitMQ would carry", () =>
    Effect.gen(function*() {
      for (const broker of [MemoryBroker.layer, MemoryBroker.layerWith({ directCalls: false })]) {
        const { answered, seen } = yield* withStranger(broker)
        // round robin over two consumers: the stranger took some, and those calls timed out
        assert.isAbove(seen.length, 0)
        assert.strictEqual(answered + seen.length, 40)
        for (const delivery of seen) {
          assert.deepStrictEqual(Object.keys(delivery.body as object).sort(), ["a", "b"])
          assert.isTrue(delivery.context)
        }
        assert.isTrue(seen.every((d) => d.local === (broker === MemoryBroker.layer)))
      }
    }))

  it.live("values travel as they are with direct calls, and are serialized without", () =>
    Effect.gen(function*() {
      const direct = yield* roundTrip(MemoryBroker.layer)
      // the handler's result is the very object it returned; the payload, the one the schema made
      assert.strictEqual(direct.back, direct.received)
      assert.deepStrictEqual(direct.received, direct.sent)

      const queued = yield* roundTrip(MemoryBroker.layerWith({ directCalls: false }))
      assert.notStrictEqual(queued.back, queued.received)
      assert.deepStrictEqual(queued.back, queued.sent)
    }))
})
