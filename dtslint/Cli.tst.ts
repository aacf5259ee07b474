import { Effect, Layer, Option, Schema, Stream } from "effect"
import type { Config, ConfigProvider, FileSystem } from "effect"
import type { Broker, BrokerError } from "effect-mesh/Broker"
import { Discovery, Event, MeshConfig, Service, ServiceClient } from "effect-mesh"
import type { ServiceContract } from "effect-mesh"
import type { Rpc } from "effect/rpc"
import { describe, expect, it } from "tstyche"
import { Calculator } from "../examples/calculator/contract.ts"

const handlers = Calculator.group.of({
  add: ({ a, b }) => Effect.succeed(a + b),
  divide: ({ a, b }) => Effect.succeed(a / b),
  countdown: ({ from }) => Stream.make(from),
  multiply: ({ a, b }) => Effect.succeed(a * b),
  sleep: () => Effect.succeed("ok")
})

const Computed = Event.make("calculator", "computed", Schema.Struct({ result: Schema.Number }))

describe("Service.make: discovery options", () => {
  it("takes the events it publishes and an opt-out, without changing the Layer's type", () => {
    const layer = Service.make(Calculator, { handlers, publishes: [Computed], discovery: false })
    expect(layer).type.toBe<Layer.Layer<never, BrokerError, Broker>>()
    expect(Service.make).type.not.toBeCallableWith(Calculator, { handlers, publishes: [{ source: "x" }] })
  })

  it("takes the request queue's type, classic or quorum, without changing the Layer's type", () => {
    expect(Service.make(Calculator, { handlers, queueType: "quorum" })).type.toBe<Layer.Layer<never, BrokerError, Broker>>()
    expect(Service.make(Calculator, { handlers, queueType: "classic" })).type.toBe<Layer.Layer<never, BrokerError, Broker>>()
    expect(Service.make).type.not.toBeCallableWith(Calculator, { handlers, queueType: "stream" })
    expect(Event.handle).type.toBeCallableWith(Computed, { queueType: "classic" }, () => Effect.void)
    expect(Event.handle).type.not.toBeCallableWith(Computed, { queueType: "lazy" }, () => Effect.void)
  })

  it("contractOf and isService accept anything", () => {
    expect(Service.contractOf(42)).type.toBe<Option.Option<ServiceContract.ServiceContract<string, Rpc.Any>>>()
    const u: unknown = Layer.empty
    if (Service.isService(u)) expect(u).type.toBe<Layer.Layer<never, unknown, unknown>>()
  })
})

describe("ServiceClient.callUntyped", () => {
  it("is a Stream of JSON values with an unknown error, needing the transport", () => {
    expect(ServiceClient.callUntyped("calculator", "add", { a: 1, b: 2 }, { timeout: "1 second" })).type.toBe<
      Stream.Stream<unknown, unknown, ServiceClient.Transport>
    >()
  })
})

describe("Discovery", () => {
  it("describe needs the broker and returns descriptions", () => {
    expect(Discovery.describe({ service: "calculator", window: "1 second" })).type.toBe<
      Effect.Effect<ReadonlyArray<Discovery.Description>, BrokerError, Broker>
    >()
    expect(Discovery.describe).type.not.toBeCallableWith({ window: "soon-ish" })
  })
})

describe("MeshConfig", () => {
  it("the broker Layer reads Config; a file needs a FileSystem", () => {
    expect(MeshConfig.layerBroker).type.toBe<Layer.Layer<Broker, BrokerError | Config.ConfigError>>()
    expect(MeshConfig.layerLogger).type.toBe<Layer.Layer<never, Config.ConfigError>>()
    expect(MeshConfig.loadFile("mesh.yaml")).type.toBe<
      Effect.Effect<MeshConfig.File, MeshConfig.MeshConfigError, FileSystem.FileSystem>
    >()
    expect(MeshConfig.provider(undefined)).type.toBe<ConfigProvider.ConfigProvider>()
  })
})
