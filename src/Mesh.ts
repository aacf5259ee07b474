/**
 * A whole mesh process as one Layer: services, the broker, the client transport and, when a port is
 * configured, the HTTP edge. It is what a program provides at its edge, and what `mesh run` runs.
 *
 * ```ts
 * const MeshLive = Mesh.layerConfig([CalculatorLive, OrdersLive])
 * NodeRuntime.runMain(program.pipe(Effect.provide(MeshLive)))
 * ```
 *
 * `layerConfig` reads the configuration (`MeshConfig`: the environment and an optional config file,
 * `MESH_CONFIG`): RabbitMQ when `AMQP_URL` is set, else the embedded broker; and with `HTTP_PORT`
 * (`http.port` in the file) one HTTP server with the services' `HttpEntrypoint` routes, the RPC
 * gateway (`HttpGateway`) and the WebSocket gateway (`WebSocketGateway`) for the services' contracts.
 * Without a port nothing listens, and services that declare HTTP routes fail the Layer with
 * `MeshError` rather than run without them. The services and the program both get the broker and
 * `ServiceClient`'s transport, so handlers and the program call services alike. The server's address
 * is logged (`mesh: HTTP on <url>`) at `Discovery.LogLevel`, as instances log their start. The HTTP
 * edge also serves `/metrics` (Prometheus), `/healthz` and `/readyz` (`Health`); `METRICS_PORT` (or
 * `metrics` / `metricsPort`) serves those three on a port of their own, up before the services and down
 * after them. With `OTEL_EXPORTER_OTLP_ENDPOINT` set, traces, metrics and logs are exported over OTLP
 * (`MeshConfig.layerOtlp`).
 *
 * @since 0.1.0
 */
import { NodeFileSystem } from "@effect/platform-node"
import { Config, Effect, Layer, Option, Schema } from "effect"
import type { ServeError } from "effect/http/HttpServerError"
import { HttpRouter } from "effect/http"
import { PrometheusMetrics } from "effect/observability"
import type { Broker, BrokerError } from "./Broker.ts"
import * as Discovery from "./Discovery.ts"
import * as Health from "./Health.ts"
import * as HttpGateway from "./HttpGateway.ts"
import * as Hub from "./Hub.ts"
import * as MemoryBroker from "./MemoryBroker.ts"
import * as MeshConfig from "./MeshConfig.ts"
import * as Service from "./Service.ts"
import * as ServiceClient from "./ServiceClient.ts"
import * as WebSocketGateway from "./WebSocketGateway.ts"

// ---- models ----

/**
 * The mesh could not be assembled as configured: `NoHttpPort` when services declare HTTP routes and
 * no port is configured (`routes` lists them).
 *
 * @since 0.1.0
 */
export class MeshError extends Schema.TaggedError<MeshError>()("MeshError", {
  reason: Schema.Literals(["NoHttpPort"]),
  routes: Schema.Array(Schema.String),
  message: Schema.String
}) {}

/**
 * One service Layer, or several (as an array, each service's contract is known to the gateways).
 *
 * @since 0.1.0
 */
export type Services = Layer.Any | ReadonlyArray<Layer.Any>

/**
 * The error of the services given.
 *
 * @since 0.1.0
 */
export type ServicesError<S extends Services> = S extends ReadonlyArray<infer L extends Layer.Any> ? Layer.Error<L>
  : S extends Layer.Any ? Layer.Error<S>
  : never

/**
 * What the services given require, less what the mesh provides them (the broker, the client
 * transport, the HTTP router).
 *
 * @since 0.1.0
 */
export type ServicesRequirements<S extends Services> = Exclude<
  S extends ReadonlyArray<infer L extends Layer.Any> ? Layer.Services<L> : S extends Layer.Any ? Layer.Services<S> : never,
  Provided | HttpRouter.HttpRouter
>

/**
 * What the mesh provides the services and the program: the broker (`Event.publish`) and the client
 * transport (`ServiceClient.make`).
 *
 * @since 0.1.0
 */
export type Provided = Broker | ServiceClient.Transport

/**
 * The HTTP edge: the server's options and the gateways'.
 *
 * @since 0.1.0
 */
export interface HttpOptions extends HttpGateway.ServerOptions, Partial<HttpGateway.RoutesOptions> {
  /** serve the WebSocket gateway (default true) */
  readonly webSocket?: boolean | undefined
}

/**
 * Options of `layer`.
 *
 * @since 0.1.0
 */
export interface Options {
  /** the broker (default: the embedded `MemoryBroker`) */
  readonly broker?: Layer.Layer<Broker, BrokerError> | undefined
  /** serve HTTP; without it nothing listens. `contracts` defaults to the services' own */
  readonly http?: HttpOptions | undefined
  /** serve `/metrics`, `/healthz` and `/readyz` on a port of their own (the HTTP edge serves them too) */
  readonly metrics?: HttpGateway.ServerOptions | undefined
}

/**
 * Options of `layerConfig`; what they set wins over the configuration.
 *
 * @since 0.1.0
 */
export interface ConfigOptions {
  /** a YAML or JSON config file (default: `MESH_CONFIG`; without either, the current `ConfigProvider`) */
  readonly config?: string | undefined
  /** the HTTP port (default: `HTTP_PORT`; without either, no server); 0 picks a free one */
  readonly port?: number | undefined
  /** the rest of the HTTP edge's options; the host defaults to `HTTP_HOST` */
  readonly http?: Omit<HttpOptions, "port"> | undefined
  /** the metrics port (default: `METRICS_PORT`; without either, none); on `HTTP_HOST` too */
  readonly metricsPort?: number | undefined
}

// ---- layers ----

/**
 * The services on a broker, with the client transport provided to them and to the program, and the
 * HTTP edge when `http` is given.
 *
 * @since 0.1.0
 */
export const layer = <const S extends Services>(
  services: S,
  options?: Options
): Layer.Layer<Provided, ServicesError<S> | BrokerError | ServeError | MeshError, ServicesRequirements<S>> =>
  make(services, options?.broker ?? MemoryBroker.layer, options?.http, options?.metrics)

/**
 * `layer` as the configuration says: the config file (`config`, or `MESH_CONFIG`) over the
 * environment; RabbitMQ when `AMQP_URL` is set, else the embedded broker; HTTP when `port` or
 * `HTTP_PORT` is set; logs as `LOG_FORMAT` and `LOG_LEVEL` say (`MeshConfig.layerLogger`). The file's settings also reach the services and the program.
 *
 * @since 0.1.0
 */
export const layerConfig = <const S extends Services>(
  services: S,
  options?: ConfigOptions
): Layer.Layer<
  Provided,
  ServicesError<S> | BrokerError | ServeError | MeshError | MeshConfig.MeshConfigError | Config.ConfigError,
  ServicesRequirements<S>
> =>
  Layer.unwrap(Effect.gen(function*() {
    const port = options?.port === undefined
      ? yield* Config.option(Config.Port("HTTP_PORT"))
      : Option.some(options.port)
    const metricsPort = options?.metricsPort === undefined
      ? yield* Config.option(Config.Port("METRICS_PORT"))
      : Option.some(options.metricsPort)
    const host = Option.getOrUndefined(yield* Config.option(Config.String("HTTP_HOST")))
    const limits = yield* HttpGateway.limitsConfig
    const http = Option.map(port, (port): HttpOptions => ({ host, ...limits, ...options?.http, port }))
    const metrics = Option.map(metricsPort, (port): HttpGateway.ServerOptions => ({ host, port }))
    // the loggers and exporters first: the services' runs log and trace as the configuration says
    return make(services, MeshConfig.layerBroker, Option.getOrUndefined(http), Option.getOrUndefined(metrics)).pipe(
      Layer.provideMerge(MeshConfig.layerLogger),
      Layer.provideMerge(MeshConfig.layerOtlp(serviceNames(services)))
    )
  })).pipe(Layer.provideMerge(configFile(options?.config)))

// ---- internal ----

type AnyServices = Layer.Layer<never, unknown, unknown>

/** the config file's provider, when a file is named; else the current provider stays */
const configFile = (path: string | undefined): Layer.Layer<never, MeshConfig.MeshConfigError | Config.ConfigError> =>
  Layer.unwrap(Effect.map(
    path === undefined ? Config.option(Config.String("MESH_CONFIG")) : Effect.succeed(Option.some(path)),
    (file) => Option.isNone(file) ? Layer.empty : MeshConfig.layer(file)
  )).pipe(Layer.provide(NodeFileSystem.layer))

const layersOf = (services: Services): ReadonlyArray<AnyServices> =>
  (Array.isArray(services) ? services : [services]) as ReadonlyArray<AnyServices>

/** the OpenTelemetry service name of a process: its services' names (`effect-mesh` without any) */
const serviceNames = (services: Services): string => {
  const names = layersOf(services).flatMap((l) => Option.toArray(Service.contractOf(l))).map((c) => c.name)
  return names.length === 0 ? "effect-mesh" : names.join(",")
}

const make = <S extends Services, EB>(
  services: S,
  broker: Layer.Layer<Broker, EB>,
  http: HttpOptions | undefined,
  metrics: HttpGateway.ServerOptions | undefined
) => {
  const layers = layersOf(services)
  // readiness: `serving` once every service is up, `draining` before they stop
  const all = Health.layerServing(Layer.mergeAll(Layer.empty as AnyServices, ...layers))
  const served = http === undefined ? withoutHttp(all) : withHttp(all, layers, http)
  // the metrics port is up before the services and down after them: it answers while they drain
  const observed = metrics === undefined ? served : served.pipe(Layer.provideMerge(observability(metrics)))
  return observed.pipe(
    Layer.provide(Health.layer),
    Layer.provideMerge(ServiceClient.layer),
    Layer.provideMerge(broker)
  ) as unknown as Layer.Layer<
    Provided,
    ServicesError<S> | BrokerError | ServeError | MeshError | EB,
    ServicesRequirements<S>
  >
}

/** the services' routes, the RPC gateway and the WebSocket gateway on one server */
const withHttp = (all: AnyServices, layers: ReadonlyArray<AnyServices>, options: HttpOptions) => {
  const { webSocket, ...http } = options
  const contracts = http.contracts ?? layers.flatMap((l) => Option.toArray(Service.contractOf(l)))
  const gateways = webSocket === false ? Layer.empty : WebSocketGateway.layer({
    contracts,
    errorStatus: http.errorStatus,
    timeout: http.timeout
  }).pipe(Layer.provide(Hub.layer))
  const announce = Layer.effectDiscard(Effect.gen(function*() {
    const url = yield* HttpGateway.url
    yield* Effect.logWithLevel(yield* Discovery.LogLevel)(`mesh: HTTP on ${url}`)
  }))
  return Layer.mergeAll(all, gateways, announce, observabilityRoutes()).pipe(
    Layer.provide(HttpGateway.layer({ ...http, contracts }))
  )
}

/**
 * The process's metrics (internal/metrics.ts, and any of the program's own) for Prometheus to scrape,
 * `/healthz` and `/readyz`
 */
const observabilityRoutes = () =>
  // fresh: the HTTP edge and the metrics port each have a router of their own
  Layer.fresh(Layer.merge(PrometheusMetrics.layerHttp({ path: "/metrics" }), Health.layerRoutes))

/** the observability routes on a server of their own, for a process without an HTTP edge */
const observability = (options: HttpGateway.ServerOptions) =>
  Layer.merge(
    observabilityRoutes(),
    Layer.effectDiscard(Effect.gen(function*() {
      const url = yield* HttpGateway.url
      yield* Effect.logWithLevel(yield* Discovery.LogLevel)(`mesh: metrics and health on ${url}`)
    }))
  ).pipe(Layer.provide(HttpGateway.layerServer({ disableLogger: true, ...options })))

/** nothing listens: a service that registers routes fails the Layer instead of running without them */
const withoutHttp = (all: AnyServices) =>
  Layer.unwrap(Effect.sync(() => {
    const routes: Array<string> = []
    const router = Layer.effect(HttpRouter.HttpRouter, Effect.map(HttpRouter.make, (r) => recording(r, routes)))
    const check = Layer.effectDiscard(Effect.suspend(() =>
      routes.length === 0 ? Effect.void : Effect.fail(
        new MeshError({
          reason: "NoHttpPort",
          routes,
          message: `services serve HTTP routes (${routes.join(", ")}) but no HTTP port is configured: ` +
            `set HTTP_PORT (http.port in the config file)`
        })
      )
    ))
    return check.pipe(Layer.provide(all), Layer.provide(router))
  }))

/** a router that notes what is added to it */
const recording = (router: HttpRouter.HttpRouter, routes: Array<string>): HttpRouter.HttpRouter => ({
  ...router,
  prefixed: (prefix) => recording(router.prefixed(prefix), routes),
  add: (method, path, handler, options) =>
    Effect.andThen(Effect.sync(() => routes.push(`${method} ${path}`)), router.add(method, path, handler, options)),
  addAll: (all) =>
    Effect.andThen(Effect.sync(() => routes.push(...all.map((r) => `${r.method} ${r.path}`))), router.addAll(all))
})
