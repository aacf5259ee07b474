import { Context, Effect, Layer, Schema, Stream } from "effect"
import type { Config } from "effect"
import type { ServeError } from "effect/http/HttpServerError"
import { Health, HttpEntrypoint, Mesh, MeshConfig, Service, ServiceClient } from "effect-mesh"
import type { ServiceError } from "effect-mesh"
import type { HttpRouter } from "effect/http"
import type { Broker, BrokerError } from "effect-mesh/Broker"
import { describe, expect, it } from "tstyche"
import { Calculator, DivisionByZero } from "../examples/calculator/contract.ts"

class Database extends Context.Service<Database, { readonly sum: (a: number, b: number) => Effect.Effect<number> }>()(
  "dtslint/Mesh/Database"
) {}
class Storage extends Context.Service<Storage, { readonly ok: boolean }>()("dtslint/Mesh/Storage") {}
class StorageError extends Schema.TaggedError<StorageError>()("StorageError", {}) {}

const handlers = Calculator.group.of({
  add: ({ a, b }) => Effect.succeed(a + b),
  divide: ({ a, b }) => b === 0 ? Effect.fail(new DivisionByZero({ dividend: a })) : Effect.succeed(a / b),
  countdown: ({ from }) => Stream.make(from),
  multiply: ({ a, b }) => Effect.succeed(a * b),
  sleep: () => Effect.succeed("ok")
})

const CalculatorLive = Service.make(Calculator, { handlers })

const WithDatabase = Service.make(Calculator, {
  handlers: { ...handlers, add: ({ a, b }) => Effect.flatMap(Database, (db) => db.sum(a, b)) }
})

const WithRoutes = Service.make(Calculator, {
  handlers: Effect.map(Storage, () => handlers),
  entrypoints: [HttpEntrypoint.make({ method: "GET", path: "/health" }, () => Effect.void)]
})

const Failing: Layer.Layer<never, StorageError> = Layer.effectDiscard(Effect.fail(new StorageError()))

describe("Mesh.layerConfig", () => {
  it("provides the broker and the client transport; fails with config, broker, server and mesh errors", () => {
    expect(Mesh.layerConfig([CalculatorLive])).type.toBe<
      Layer.Layer<
        Broker | ServiceClient.Transport,
        BrokerError | ServeError | Mesh.MeshError | MeshConfig.MeshConfigError | Config.ConfigError,
        never
      >
    >()
    expect(Mesh.layerConfig(CalculatorLive, { config: "mesh.yaml", port: 8080 })).type.toBe<
      Layer.Layer<
        Broker | ServiceClient.Transport,
        BrokerError | ServeError | Mesh.MeshError | MeshConfig.MeshConfigError | Config.ConfigError,
        never
      >
    >()
  })

  it("keeps what a service requires beyond the mesh, and its errors", () => {
    expect(Mesh.layerConfig([CalculatorLive, WithDatabase, Failing])).type.toBe<
      Layer.Layer<
        Broker | ServiceClient.Transport,
        StorageError | BrokerError | ServeError | Mesh.MeshError | MeshConfig.MeshConfigError | Config.ConfigError,
        Database
      >
    >()
  })

  it("provides the HTTP router to services with routes", () => {
    expect(WithRoutes).type.toBe<Layer.Layer<never, BrokerError, Broker | Storage | HttpRouter.HttpRouter>>()
    expect(Mesh.layerConfig([WithRoutes])).type.toBe<
      Layer.Layer<
        Broker | ServiceClient.Transport,
        BrokerError | ServeError | Mesh.MeshError | MeshConfig.MeshConfigError | Config.ConfigError,
        Storage
      >
    >()
  })

  it("takes Layers only, and no unknown option", () => {
    expect(Mesh.layerConfig).type.not.toBeCallableWith([Calculator])
    expect(Mesh.layerConfig).type.not.toBeCallableWith([CalculatorLive], { port: "8080" })
  })

  it("runs a program that calls services, with nothing left to provide", () => {
    const program = Effect.gen(function*() {
      const calc = yield* ServiceClient.make(Calculator)
      return yield* calc.add({ a: 1, b: 2 })
    })
    const provided = program.pipe(Effect.provide(Mesh.layerConfig([CalculatorLive])))
    expect(provided).type.toBe<
      Effect.Effect<
        number,
        | ServiceError.ServiceError
        | BrokerError
        | ServeError
        | Mesh.MeshError
        | MeshConfig.MeshConfigError
        | Config.ConfigError,
        never
      >
    >()
  })
})

describe("Mesh.layer", () => {
  it("without config: the embedded broker by default, or the one given", () => {
    expect(Mesh.layer([CalculatorLive])).type.toBe<
      Layer.Layer<Broker | ServiceClient.Transport, BrokerError | ServeError | Mesh.MeshError, never>
    >()
    expect(Mesh.layer).type.not.toBeCallableWith([CalculatorLive], { http: { contracts: [Calculator] } })
  })

  it("serves /metrics, /healthz and /readyz on a port of their own, with the same type", () => {
    expect(Mesh.layer([CalculatorLive], { metrics: { port: 9464 } })).type.toBe<
      Layer.Layer<Broker | ServiceClient.Transport, BrokerError | ServeError | Mesh.MeshError, never>
    >()
    expect(Mesh.layerConfig([CalculatorLive], { metricsPort: 9464 })).type.toBe<
      Layer.Layer<
        Broker | ServiceClient.Transport,
        BrokerError | ServeError | Mesh.MeshError | MeshConfig.MeshConfigError | Config.ConfigError,
        never
      >
    >()
    expect(Mesh.layer).type.not.toBeCallableWith([CalculatorLive], { metrics: { host: "0.0.0.0" } })
  })
})

describe("Health", () => {
  it("reports readiness as a value; its routes need the router and Health", () => {
    expect(Effect.flatMap(Health.Health, (health) => health.readiness)).type.toBe<
      Effect.Effect<Health.Readiness, never, Health.Health>
    >()
    expect(Health.layer).type.toBe<Layer.Layer<Health.Health, never, Broker>>()
    expect(Health.layerRoutes).type.toBe<Layer.Layer<never, never, HttpRouter.HttpRouter | Health.Health>>()
  })
})

describe("MeshConfig.layerOtlp", () => {
  it("needs nothing; fails only with a config error", () => {
    expect(MeshConfig.layerOtlp("orders")).type.toBe<Layer.Layer<never, Config.ConfigError>>()
  })
})
