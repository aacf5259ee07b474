/**
 * `ServiceError.orDie` and `ServiceError.mapError` in a handler that calls another service through the
 * mesh, on the embedded broker (direct and queued) and on RabbitMQ: the inner call's mesh errors leave
 * the outer handler as a `RemoteDefect` (or as the contract error `mapError` chose), while the outer
 * contract's own errors, and the inner contract's, stay typed.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Schema } from "effect"
import { Rpc, RpcGroup } from "effect/rpc"
import { AmqpBroker, Broker, MemoryBroker, Service, ServiceClient, ServiceContract, ServiceError } from "effect-mesh"
import { amqpUrl } from "./fixtures/amqpUrl.ts"

class OutOfStock extends Schema.TaggedError<OutOfStock>()("OutOfStock", { item: Schema.String }) {}
class SoldOut extends Schema.TaggedError<SoldOut>()("SoldOut", { item: Schema.String }) {}
class Unavailable extends Schema.TaggedError<Unavailable>()("Unavailable", { reason: Schema.String }) {}

class StockRpcs extends RpcGroup.make(
  Rpc.make("reserve", { payload: { item: Schema.String }, success: Schema.Number, error: OutOfStock })
) {}

class ShopRpcs extends RpcGroup.make(
  Rpc.make("buy", { payload: { item: Schema.String }, success: Schema.Number, error: SoldOut }),
  Rpc.make("check", { payload: { item: Schema.String }, success: Schema.Number, error: Unavailable })
) {}

/** fresh names per test, so runs over a shared RabbitMQ never meet */
const contracts = () => {
  const suffix = crypto.randomUUID().slice(0, 8)
  return {
    stock: ServiceContract.make(`stock-${suffix}`, StockRpcs),
    shop: ServiceContract.make(`shop-${suffix}`, ShopRpcs)
  }
}

const services = (c: ReturnType<typeof contracts>, options: { readonly stockRunning: boolean }) => {
  const stock = Service.make(c.stock, {
    handlers: {
      reserve: ({ item }) => item === "caviar" ? Effect.fail(new OutOfStock({ item })) : Effect.succeed(1)
    }
  })
  const shop = Service.make(c.shop, {
    handlers: Effect.gen(function*() {
      const stock = yield* ServiceClient.make(c.stock, { timeout: "5 seconds" })
      return c.shop.group.of({
        buy: ({ item }) =>
          item === ""
            ? Effect.fail(new SoldOut({ item }))
            : stock.reserve({ item }).pipe(
              ServiceError.orDie,
              // the stock's own error is still there, typed, after orDie
              Effect.catchTag("OutOfStock", (e) => Effect.fail(new SoldOut({ item: e.item })))
            ),
        check: ({ item }) =>
          ServiceError.mapError(
            stock.reserve({ item }).pipe(Effect.catchTag("OutOfStock", () => Effect.succeed(0))),
            (e) => new Unavailable({ reason: e._tag })
          )
      })
    })
  })
  return (options.stockRunning ? Layer.mergeAll(shop, stock) : shop).pipe(Layer.provideMerge(ServiceClient.layer))
}

const brokers: ReadonlyArray<readonly [string, () => Layer.Layer<Broker.Broker, Broker.BrokerError>]> = [
  ["MemoryBroker (direct calls)", () => MemoryBroker.layer],
  ["MemoryBroker (through the queue)", () => MemoryBroker.layerWith({ directCalls: false })],
  ["AmqpBroker", () => AmqpBroker.layer({ url: amqpUrl() })]
]

describe.each(brokers)("ServiceError in a handler calling another service, %s", (_, broker) => {
  const run = <A, E>(
    options: { readonly stockRunning: boolean },
    body: (shop: ServiceClient.ServiceClient<RpcGroup.Rpcs<typeof ShopRpcs>>) => Effect.Effect<A, E>
  ) => {
    const c = contracts()
    return Effect.flatMap(ServiceClient.make(c.shop), body).pipe(
      Effect.provide(services(c, options).pipe(Layer.provideMerge(Layer.fresh(broker()))))
    )
  }

  it.live("orDie: a ServiceNotFound in the inner call reaches the outer caller as a RemoteDefect", () =>
    run({ stockRunning: false }, (shop) =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(shop.buy({ item: "tea" }))
        assert.strictEqual(error._tag, "RemoteDefect")
        assert.match(error.message, /no service named "stock-/)
      })))

  it.live("orDie: the outer contract's error and the inner contract's stay typed errors", () =>
    run({ stockRunning: true }, (shop) =>
      Effect.gen(function*() {
        assert.strictEqual(yield* shop.buy({ item: "tea" }), 1)
        const empty = yield* shop.buy({ item: "" }).pipe(
          Effect.catchTag("SoldOut", (e) => Effect.succeed(`sold out: "${e.item}"`))
        )
        assert.strictEqual(empty, `sold out: ""`)
        const caviar = yield* Effect.flip(shop.buy({ item: "caviar" }))
        assert.instanceOf(caviar, SoldOut)
        assert.deepStrictEqual(caviar, new SoldOut({ item: "caviar" }))
      })))

  it.live("mapError: a ServiceNotFound in the inner call reaches the outer caller as the contract's error", () =>
    run({ stockRunning: false }, (shop) =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(shop.check({ item: "tea" }))
        assert.instanceOf(error, Unavailable)
        assert.deepStrictEqual(error, new Unavailable({ reason: "ServiceNotFound" }))
      })))
})
