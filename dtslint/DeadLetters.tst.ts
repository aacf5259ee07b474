import { Effect, Layer, Stream } from "effect"
import type { Config } from "effect"
import type { Broker, BrokerError } from "effect-mesh/Broker"
import { DeadLetters, Service } from "effect-mesh"
import { describe, expect, it } from "tstyche"
import { Calculator } from "../examples/calculator/contract.ts"

const CalculatorLive = Service.make(Calculator, {
  handlers: {
    add: ({ a, b }) => Effect.succeed(a + b),
    divide: ({ a, b }) => Effect.succeed(a / b),
    countdown: ({ from }) => Stream.make(from),
    multiply: ({ a, b }) => Effect.succeed(a * b),
    sleep: () => Effect.succeed("ok")
  }
})

describe("DeadLetters", () => {
  it("layer provides nothing a service must name: the service Layer keeps its type", () => {
    expect(DeadLetters.layer({ maxLength: 1000 })).type.toBe<Layer.Layer<never>>()
    expect(Layer.provide(CalculatorLive, DeadLetters.layer({ ttl: "1 day" }))).type.toBe<typeof CalculatorLive>()
  })

  it("bounds take a number of messages and any Duration input", () => {
    expect(DeadLetters.layer).type.toBeCallableWith({ maxLength: 10, ttl: "3 days" })
    expect(DeadLetters.layer).type.toBeCallableWith({ ttl: 60_000 })
    expect(DeadLetters.layer).type.not.toBeCallableWith({ maxLength: "ten" })
    expect(DeadLetters.config).type.toBe<Config.Config<DeadLetters.Bounds>>()
  })

  it("list, replay and purge need the Broker and fail with BrokerError only", () => {
    expect(DeadLetters.list("mesh.rpc.orders.dead")).type.toBe<
      Effect.Effect<ReadonlyArray<DeadLetters.DeadLetter>, BrokerError, Broker>
    >()
    expect(DeadLetters.replay("q", { limit: 10 })).type.toBe<Effect.Effect<DeadLetters.Replayed, BrokerError, Broker>>()
    expect(DeadLetters.purge("q", { wait: "2 seconds" })).type.toBe<Effect.Effect<number, BrokerError, Broker>>()
  })
})
