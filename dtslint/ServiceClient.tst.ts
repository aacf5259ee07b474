import { Context, Effect, Layer, Schedule, Stream } from "effect"
import type { Broker, BrokerError } from "effect-mesh/Broker"
import { MemoryBroker, Service, ServiceClient, ServiceError as ServiceErrors } from "effect-mesh"
import type { ServiceContract } from "effect-mesh"
import type { ServiceError } from "effect-mesh/ServiceError"
import { describe, expect, it } from "tstyche"
import type { DivisionByZero } from "../examples/calculator/contract.ts"
import { Calculator } from "../examples/calculator/contract.ts"

declare const calc: ServiceClient.ServiceClient<ServiceContract.Rpcs<typeof Calculator>>

describe("ServiceClient", () => {
  it("derives each method's payload from the contract", () => {
    expect(calc.add).type.toBeCallableWith({ a: 1, b: 2 })
    expect(calc.add).type.not.toBeCallableWith({ a: "1", b: 2 })
    expect(calc.add).type.not.toBeCallableWith({ a: 1 })
    expect(calc.add).type.toBeCallableWith({ a: 1, b: 2 }, { timeout: "1 second" })
  })

  it("has exactly the contract's errors plus the mesh's own in the error channel", () => {
    expect(calc.divide({ a: 1, b: 2 })).type.toBe<Effect.Effect<number, DivisionByZero | ServiceError>>()
    expect(calc.add({ a: 1, b: 2 })).type.toBe<Effect.Effect<number, ServiceError>>()
  })

  it("returns a Stream for a streaming rpc", () => {
    expect(calc.countdown({ from: 3 })).type.toBe<Stream.Stream<number, ServiceError>>()
  })

  it("retries what retryOn accepts: one of the mesh's errors", () => {
    expect(ServiceClient.make).type.toBeCallableWith(Calculator, {
      retry: Schedule.recurs(2),
      retryOn: ServiceErrors.isRetryableIfIdempotent
    })
    expect(ServiceClient.make).type.toBeCallableWith(Calculator, {
      retryOn: (error: ServiceError) => error._tag === "TransportError" && error.reason === "OutcomeUnknown"
    })
    expect(ServiceClient.make).type.not.toBeCallableWith(Calculator, { retryOn: (error: DivisionByZero) => error._tag === "DivisionByZero" })
  })

  it("says why a service was not found, and when a call's outcome is unknown", () => {
    expect<ServiceErrors.ServiceNotFound["reason"]>().type.toBe<"NoQueue" | "NoConsumer" | undefined>()
    expect<ServiceErrors.TransportError["reason"]>().type.toBe<"OutcomeUnknown" | undefined>()
  })

  it("needs the transport to be made", () => {
    expect(ServiceClient.make(Calculator)).type.toBe<
      Effect.Effect<typeof calc, never, ServiceClient.Transport>
    >()
  })
})

class Database extends Context.Service<Database, { readonly lookup: (n: number) => Effect.Effect<number> }>()(
  "dtslint/Database"
) {}

/** handlers that need nothing */
const plain = Calculator.group.of({
  add: ({ a, b }) => Effect.succeed(a + b),
  divide: ({ a, b }) => Effect.succeed(a / b),
  countdown: ({ from }) => Stream.make(from),
  multiply: ({ a, b }) => Effect.succeed(a * b),
  sleep: () => Effect.succeed("ok")
})

describe("Service.make", () => {
  it("requires what the handlers require, and the broker", () => {
    const layer = Service.make(Calculator, {
      handlers: { ...plain, add: ({ a, b }) => Effect.flatMap(Database, (db) => db.lookup(a + b)) }
    })
    expect(layer).type.toBe<Layer.Layer<never, BrokerError, Broker | Database>>()
  })

  it("requires only the broker when the handlers need nothing", () => {
    const layer = Service.make(Calculator, {
      handlers: plain
    })
    expect(layer).type.toBe<Layer.Layer<never, BrokerError, Broker>>()
  })

  it("rejects a handler with the wrong success type", () => {
    expect(Service.make).type.not.toBeCallableWith(Calculator, {
      handlers: {
        add: () => Effect.succeed("not a number"),
        divide: ({ a, b }: { a: number; b: number }) => Effect.succeed(a / b),
        countdown: ({ from }: { from: number }) => Stream.make(from),
        multiply: () => Effect.succeed(1),
        sleep: () => Effect.succeed("ok")
      }
    })
  })

  it("adds what its entrypoints require and fail with", () => {
    class Clock2 extends Context.Service<Clock2, { readonly now: number }>()("dtslint/Clock2") {}
    class StartError extends Error {}
    const entrypoint = Service.entrypoint("probe", () =>
      Layer.effectDiscard(Effect.flatMap(Clock2, () => Effect.fail(new StartError()))))
    const layer = Service.make(Calculator, {
      handlers: plain,
      entrypoints: [entrypoint]
    })
    expect(layer).type.toBe<Layer.Layer<never, BrokerError | StartError, Broker | Clock2>>()
  })
})

describe("MemoryBroker", () => {
  it("takes its options in layerWith, and makes the same Layer", () => {
    expect(MemoryBroker.layerWith({ directCalls: false })).type.toBe<Layer.Layer<Broker>>()
    expect(MemoryBroker.layerWith).type.not.toBeCallableWith({ directCalls: "no" })
  })
})
