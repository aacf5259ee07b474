import { assert, describe, it } from "@effect/vitest"
import { Context, Deferred, Effect, Layer, Stream } from "effect"
import { MeshTest, Service, ServiceClient } from "effect-mesh"
import { Calculator, DivisionByZero } from "../examples/calculator/contract.ts"
import { CalculatorLive } from "../examples/calculator/service.ts"
import { Orders } from "../examples/orders/contract.ts"
import { OrdersLive } from "../examples/orders/service.ts"

class Rates extends Context.Service<Rates, { readonly factor: Effect.Effect<number> }>()("test/Rates") {}

const handlers = {
  add: ({ a, b }: { a: number; b: number }) =>
    Effect.flatMap(Rates, (rates) => rates.factor).pipe(Effect.map((factor) => (a + b) * factor)),
  divide: ({ a, b }: { a: number; b: number }) =>
    b === 0 ? Effect.fail(new DivisionByZero({ dividend: a })) : Effect.succeed(a / b),
  countdown: ({ from }: { from: number }) => Stream.make(from, from - 1),
  multiply: ({ a, b }: { a: number; b: number }) => Effect.succeed(a * b),
  sleep: () => Effect.succeed("ok")
}

describe("MeshTest", () => {
  it.live("layer: services on a private embedded broker, called through the real protocols", () =>
    Effect.gen(function*() {
      const orders = yield* ServiceClient.make(Orders)
      const order = yield* orders.place({ item: "nut", quantity: 4, unitPrice: 0.5 })
      assert.strictEqual(order.total, 2)
      const error = yield* Effect.flip(orders.place({ item: "nut", quantity: 0, unitPrice: 1 }))
      assert.strictEqual(error._tag, "InvalidQuantity")
    }).pipe(Effect.provide(MeshTest.layer(Layer.mergeAll(CalculatorLive, OrdersLive)))))

  it.live("client: one contract's handlers with a fake dependency supplied as a Layer", () =>
    Effect.gen(function*() {
      const calc = yield* MeshTest.client(Calculator, { handlers })
      assert.strictEqual(yield* calc.add({ a: 1, b: 2 }), 30)
      assert.strictEqual((yield* Effect.flip(calc.divide({ a: 1, b: 0 })))._tag, "DivisionByZero")
    }).pipe(
      Effect.scoped,
      Effect.provide(Layer.succeed(Rates)({ factor: Effect.succeed(10) }))
    ))
})

describe("Service entrypoints", () => {
  it.live("run with the service's instance, next to its rpc handlers", () =>
    Effect.gen(function*() {
      const seen = yield* Deferred.make<Service.Instance>()
      const probe = Service.entrypoint("probe", (instance) => Layer.effectDiscard(Deferred.succeed(seen, instance)))
      const layer = Service.make(Calculator, { handlers, entrypoints: [probe] }).pipe(
        Layer.provide(Layer.succeed(Rates)({ factor: Effect.succeed(1) }))
      )
      yield* Effect.gen(function*() {
        const instance = yield* Deferred.await(seen)
        assert.strictEqual(instance.service, "calculator")
        assert.match(instance.instanceId, /^[0-9a-f-]{36}$/)
        const calc = yield* ServiceClient.make(Calculator)
        assert.strictEqual(yield* calc.add({ a: 2, b: 3 }), 5)
      }).pipe(Effect.provide(MeshTest.layer(layer)))
    }))
})
