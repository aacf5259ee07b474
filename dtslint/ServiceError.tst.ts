import { Context, Effect, Layer } from "effect"
import { Service, ServiceError } from "effect-mesh"
import type { ServiceClient, ServiceContract } from "effect-mesh"
import type { Broker, BrokerError } from "effect-mesh/Broker"
import { describe, expect, it } from "tstyche"
import type { Calculator, DivisionByZero } from "../examples/calculator/contract.ts"
import { InvalidQuantity, Order, Orders } from "../examples/orders/contract.ts"

class Database extends Context.Service<Database, { readonly save: (order: Order) => Effect.Effect<void> }>()(
  "dtslint/Database"
) {}

declare const calc: ServiceClient.ServiceClient<ServiceContract.Rpcs<typeof Calculator>>
declare const divide: Effect.Effect<number, DivisionByZero | ServiceError.ServiceError, Database>
declare const some: Effect.Effect<string, ServiceError.CallTimeout | ServiceError.RemoteDefect | Error>
declare const none: Effect.Effect<string, InvalidQuantity>

describe("ServiceError.orDie", () => {
  it("removes exactly the mesh's errors, keeping the contract's, the success and the requirements", () => {
    expect(ServiceError.orDie(divide)).type.toBe<Effect.Effect<number, DivisionByZero, Database>>()
    expect(divide.pipe(ServiceError.orDie)).type.toBe<Effect.Effect<number, DivisionByZero, Database>>()
    expect(calc.add({ a: 1, b: 2 }).pipe(ServiceError.orDie)).type.toBe<Effect.Effect<number>>()
  })

  it("removes only the mesh's errors there are, and leaves other errors alone", () => {
    expect(ServiceError.orDie(some)).type.toBe<Effect.Effect<string, Error>>()
    expect(ServiceError.orDie(none)).type.toBe<Effect.Effect<string, InvalidQuantity>>()
  })

  it("takes only an Effect", () => {
    expect(ServiceError.orDie).type.not.toBeCallableWith(1)
    expect(ServiceError.orDie).type.not.toBeCallableWith(divide, "extra")
  })
})

describe("ServiceError.mapError", () => {
  it("replaces the mesh's errors by what the function returns, as pipe and data-first", () => {
    const unavailable = (_: ServiceError.ServiceError) => new InvalidQuantity({ quantity: 0 })
    expect(divide.pipe(ServiceError.mapError(unavailable))).type.toBe<
      Effect.Effect<number, DivisionByZero | InvalidQuantity, Database>
    >()
    expect(ServiceError.mapError(divide, unavailable)).type.toBe<
      Effect.Effect<number, DivisionByZero | InvalidQuantity, Database>
    >()
  })

  it("gives the function the mesh's errors", () => {
    ServiceError.mapError(divide, (error) => {
      expect(error).type.toBe<ServiceError.ServiceError>()
      return error._tag
    })
  })
})

describe("a handler calling another service", () => {
  it("type-checks against its contract with orDie, and its Layer requires what it requires", () => {
    const layer = Service.make(Orders, {
      handlers: {
        place: ({ item, quantity, unitPrice }) =>
          Effect.gen(function*() {
            if (quantity <= 0) return yield* new InvalidQuantity({ quantity })
            const total = yield* calc.multiply({ a: quantity, b: unitPrice }).pipe(ServiceError.orDie)
            const order = new Order({ id: "o-1", item, quantity, total })
            yield* Effect.flatMap(Database, (db) => db.save(order))
            return order
          })
      }
    })
    expect(layer).type.toBe<Layer.Layer<never, BrokerError, Broker | Database>>()
  })

  it("does not type-check without it: the contract does not declare the mesh's errors", () => {
    const place = ({ quantity, unitPrice }: { readonly quantity: number; readonly unitPrice: number }) =>
      Effect.gen(function*() {
        if (quantity <= 0) return yield* new InvalidQuantity({ quantity })
        const total = yield* calc.multiply({ a: quantity, b: unitPrice })
        return new Order({ id: "o-1", item: "tea", quantity, total })
      })
    expect(Service.make).type.not.toBeCallableWith(Orders, { handlers: { place } })
    expect(Orders.group.of).type.not.toBeCallableWith({ place })
    expect(Service.make).type.toBeCallableWith(Orders, {
      handlers: { place: (payload: { readonly quantity: number; readonly unitPrice: number }) => ServiceError.orDie(place(payload)) }
    })
  })

  it("fails at the handler, naming the errors, and leaks no `any` into the Layer", () => {
    const forgot = Service.make(Orders, {
      handlers: {
        place: ({ quantity, unitPrice }) =>
          // @ts-expect-error Type 'Effect<Order, ServiceError, never>' is not assignable to type
          calc.multiply({ a: quantity, b: unitPrice }).pipe(Effect.map((total) => new Order({ id: "o-1", item: "tea", quantity, total })))
      }
    })
    // not Layer<never, BrokerError, any>, which would fail far away, wherever the Layer is provided
    expect(forgot).type.toBe<Layer.Layer<never, BrokerError, Broker>>()
  })
})
