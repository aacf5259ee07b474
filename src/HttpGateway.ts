/**
 * The HTTP edge of the mesh: a server (`NodeHttpServer`) whose `HttpRouter` the rest of the edge
 * registers into (services' `HttpEntrypoint`s, `WebSocketGateway`, `Sse`), and an RPC gateway that
 * exposes contracts to the outside, calling their services over the mesh, so the service may run on
 * any instance.
 *
 * - `POST /rpc/<service>/<method>` with a JSON body: the payload is decoded with the method's schema
 *   (400 with the issue), the answer encoded as JSON. Mesh errors map to statuses
 *   (`ServiceNotFound` / `MethodNotFound` 404, but 503 when no instance consumes the service's queue
 *   (`NoConsumer`), `InvalidPayload` 400, `CallTimeout` 504,
 *   `RemoteDefect` 500, `TransportError` 502); contract errors to the status chosen in `errorStatus`
 *   (422 by default). A streaming method answers with Server-Sent Events.
 * - `POST /rpc/<service>`: effect/rpc's HTTP protocol (NDJSON), for typed TypeScript clients:
 *   `HttpGateway.layerClient({ url })` makes `ServiceClient.make(Contract)` work over HTTP, with the
 *   same types and errors as on the mesh.
 *
 * Every request runs with a `CallContext`: the correlation id from `x-correlation-id` (or a fresh one,
 * echoed in the response), the user id from `x-user-id` (unless `trustUserIdHeader: false`) or from
 * an `authenticate` hook. Bodies over `maxBodySize` get 413, bodies that are not JSON 400, defects
 * 500 without a stack. Requests with more than `maxHeaderCount` header lines, or a head (request line
 * and headers) over `maxHeaderSize`, get 431; a WebSocket message over `maxWebSocketMessageSize` closes
 * its socket with 1009 (Message Too Big).
 *
 * ```ts
 * const Edge = HttpGateway.layer({ port: 8080, contracts: [Calculator] }).pipe(
 *   Layer.provide(ServiceClient.layer), Layer.provide(AmqpBroker.layerConfig))
 * ```
 *
 * @since 0.1.0
 */
import { NodeHttpServer, NodeHttpServerRequest } from "@effect/platform-node"
import { ByteSize, Cause, Config, Context, Effect, Layer, Option, Schema, Scope, Stream } from "effect"
import type { Duration } from "effect"
import { Sse } from "effect/encoding"
import {
  Headers,
  HttpClient,
  HttpClientRequest,
  HttpIncomingMessage,
  HttpMiddleware,
  HttpRouter,
  HttpServer,
  HttpServerRequest,
  HttpServerResponse
} from "effect/http"
import type { ServeError } from "effect/http/HttpServerError"
import { isHttpServerError } from "effect/http/HttpServerError"
import { RpcClient, RpcSerialization, RpcServer } from "effect/rpc"
import { createServer } from "node:http"
import type { Server } from "node:http"
import * as CallContext from "./CallContext.ts"
import * as BrokerRpcClient from "./BrokerRpcClient.ts"
import * as edge from "./internal/edge.ts"
import { byteSizeConfig } from "./internal/messageSize.ts"
import * as ServiceClient from "./ServiceClient.ts"

// ---- models ----

/**
 * Options of the server.
 *
 * @since 0.1.0
 */
export interface ServerOptions {
  /** the port to listen on; 0 picks a free one */
  readonly port: number
  readonly host?: string | undefined
  /** larger request bodies get 413 (default 1 MiB) */
  readonly maxBodySize?: ByteSize.Input | undefined
  /** a request with more header lines gets 431 (default 100) */
  readonly maxHeaderCount?: number | undefined
  /** a request whose request line and headers are larger gets 431 (default 16 KiB, node's own) */
  readonly maxHeaderSize?: ByteSize.Input | undefined
  /** a WebSocket message (a frame, or a message's frames together) larger closes its socket with 1009 (default 1 MiB) */
  readonly maxWebSocketMessageSize?: ByteSize.Input | undefined
  /** take the user id from `x-user-id` (default true: the edge sits behind a trusted proxy) */
  readonly trustUserIdHeader?: boolean | undefined
  /** no request log lines */
  readonly disableLogger?: boolean | undefined
}

/**
 * The limits of the server, as options and settings take them.
 *
 * @since 0.1.0
 */
export type Limits = Pick<ServerOptions, "maxBodySize" | "maxHeaderCount" | "maxHeaderSize" | "maxWebSocketMessageSize">

/**
 * Options of the RPC gateway routes.
 *
 * @since 0.1.0
 */
export interface RoutesOptions {
  /** the contracts the gateway exposes */
  readonly contracts: ReadonlyArray<edge.AnyContract>
  /** where the routes live (default `/rpc`) */
  readonly path?: `/${string}` | undefined
  /** the status of each contract error, by its `_tag` (others: 422) */
  readonly errorStatus?: Readonly<Record<string, number>> | undefined
  /** the timeout of every call the gateway makes (default 30 seconds) */
  readonly timeout?: Duration.Input | undefined
}

/**
 * @since 0.1.0
 */
export interface Options extends ServerOptions, Partial<RoutesOptions> {}

/**
 * What an `authenticate` hook says about a request: who makes it, and entries for its call context.
 *
 * @since 0.1.0
 */
export interface Identity {
  readonly userId: string
  readonly entries?: Readonly<Record<string, string>> | undefined
}

/**
 * An `authenticate` hook's refusal: 401.
 *
 * @since 0.1.0
 */
export class Unauthorized extends Schema.TaggedError<Unauthorized>()("Unauthorized", {
  message: Schema.String
}) {}

/**
 * An `authenticate` hook's refusal: 403.
 *
 * @since 0.1.0
 */
export class Forbidden extends Schema.TaggedError<Forbidden>()("Forbidden", {
  message: Schema.String
}) {}

/**
 * The configuration keys of the edge's limits (`http.maxBodySize` in a config file is `HTTP_MAX_BODY_SIZE`).
 *
 * @since 0.1.0
 */
export const configKeys = {
  maxBodySize: "HTTP_MAX_BODY_SIZE",
  maxHeaderCount: "HTTP_MAX_HEADER_COUNT",
  maxHeaderSize: "HTTP_MAX_HEADER_SIZE",
  maxWebSocketMessageSize: "WS_MAX_MESSAGE_SIZE"
} as const

/**
 * The edge's limits when nothing sets them: bodies and WebSocket messages 1 MiB (as a service's
 * `maxMessageSize`), 100 header lines (Apache's `LimitRequestFields`), 16 KiB of request line and
 * headers (node's own `maxHeaderSize`).
 *
 * @since 0.1.0
 */
export const limits: {
  readonly maxBodySize: ByteSize.ByteSize
  readonly maxHeaderCount: number
  readonly maxHeaderSize: ByteSize.ByteSize
  readonly maxWebSocketMessageSize: ByteSize.ByteSize
} = {
  maxBodySize: ByteSize.mebibytes(1),
  maxHeaderCount: 100,
  maxHeaderSize: ByteSize.kibibytes(16),
  maxWebSocketMessageSize: ByteSize.mebibytes(1)
}

// ---- layers ----

/**
 * The edge server: serves the `HttpRouter` it provides, so routes registered later (a service's
 * entrypoints, a WebSocket gateway) are served as soon as their Layer is up.
 *
 * @since 0.1.0
 */
export const layerServer = (
  options: ServerOptions
): Layer.Layer<HttpRouter.HttpRouter | HttpServer.HttpServer, ServeError> =>
  serveRouter(options).pipe(
    Layer.provideMerge(NodeHttpServer.layer(() => nodeServer(options), {
      port: options.port,
      ...(options.host === undefined ? {} : { host: options.host }),
      websocket: { maxPayload: bytes(options.maxWebSocketMessageSize, limits.maxWebSocketMessageSize) }
    }))
  )

/**
 * The RPC gateway's routes, on the current router; calls go over the mesh with the current
 * `ServiceClient.Transport`.
 *
 * @since 0.1.0
 */
export const layerRoutes = (
  options: RoutesOptions
): Layer.Layer<never, never, HttpRouter.HttpRouter | ServiceClient.Transport> =>
  Layer.effectDiscard(Effect.gen(function*() {
    const router = yield* HttpRouter.HttpRouter
    const path = options.path ?? "/rpc"
    const timeout = options.timeout ?? "30 seconds"
    const entries = new Map<string, edge.ContractEntry>()
    for (const contract of options.contracts) {
      entries.set(contract.name, yield* edge.contractEntry(contract, { timeout, errorStatus: options.errorStatus }))
      const typed = yield* typedRpcEffect(contract, timeout)
      yield* router.add("POST", `${path}/${contract.name}`, typed)
    }
    yield* router.add("POST", `${path}/:service/:method`, jsonCall(entries))
  }))

/**
 * The server and the RPC gateway's routes.
 *
 * @since 0.1.0
 */
export const layer = (
  options: Options
): Layer.Layer<HttpRouter.HttpRouter | HttpServer.HttpServer, ServeError, ServiceClient.Transport> =>
  options.contracts === undefined || options.contracts.length === 0
    ? layerServer(options)
    : layerRoutes({ ...options, contracts: options.contracts }).pipe(Layer.provideMerge(layerServer(options)))

/**
 * The edge's limits as the configuration sets them: `HTTP_MAX_BODY_SIZE`, `HTTP_MAX_HEADER_COUNT`,
 * `HTTP_MAX_HEADER_SIZE` and `WS_MAX_MESSAGE_SIZE` (sizes as `512 KiB`, `1 MiB` or bytes); what is not
 * set keeps its default.
 *
 * @since 0.1.0
 */
export const limitsConfig: Config.Config<Limits> = Config.all({
  maxBodySize: Config.option(byteSizeConfig(configKeys.maxBodySize)),
  maxHeaderCount: Config.option(Config.Int(configKeys.maxHeaderCount)),
  maxHeaderSize: Config.option(byteSizeConfig(configKeys.maxHeaderSize)),
  maxWebSocketMessageSize: Config.option(byteSizeConfig(configKeys.maxWebSocketMessageSize))
}).pipe(Config.map((set): Limits => {
  // only the keys that are set, so that spreading options over them keeps the options' own
  const found: Record<string, ByteSize.ByteSize | number> = {}
  for (const [key, value] of Object.entries(set) as Array<[string, Option.Option<ByteSize.ByteSize | number>]>) {
    if (Option.isSome(value)) found[key] = value.value
  }
  return found
}))

/**
 * `layer` with the port and host read from `HTTP_PORT` (default 8080) and `HTTP_HOST`, and the limits
 * the options leave unset from `limitsConfig`.
 *
 * @since 0.1.0
 */
export const layerConfig = (
  options: Omit<Options, "port" | "host">
): Layer.Layer<HttpRouter.HttpRouter | HttpServer.HttpServer, ServeError | Config.ConfigError, ServiceClient.Transport> =>
  Layer.unwrap(Effect.gen(function*() {
    const port = yield* Config.Port("HTTP_PORT").pipe(Config.withDefault(8080))
    const host = yield* Config.option(Config.String("HTTP_HOST"))
    const configured = yield* limitsConfig
    return layer({ ...configured, ...options, port, host: Option.getOrUndefined(host) })
  }))

/**
 * `layer` on a free port, with an `HttpClient` whose relative URLs go to it.
 *
 * @since 0.1.0
 */
export const layerTest = (
  options?: Omit<Options, "port">
): Layer.Layer<
  HttpRouter.HttpRouter | HttpServer.HttpServer | HttpClient.HttpClient,
  ServeError,
  ServiceClient.Transport | HttpClient.HttpClient
> =>
  HttpServer.layerTestClient.pipe(
    Layer.provideMerge(layer({ disableLogger: true, ...options, port: 0 }))
  )

/**
 * The URL of the running server, for clients in the same process (tests, examples); a wildcard
 * listening address becomes the loopback address.
 *
 * @since 0.1.0
 */
export const url: Effect.Effect<string, never, HttpServer.HttpServer> = HttpServer.addressFormattedWith((address) =>
  Effect.succeed(address.replace("://0.0.0.0", "://127.0.0.1").replace("://[::]", "://localhost"))
)

/**
 * A `ServiceClient.Transport` over the gateway's HTTP protocol: `ServiceClient.make(Contract)` then
 * calls through the gateway at `url` (its origin, e.g. `http://localhost:8080`), with the same types
 * and errors as on the mesh.
 *
 * @since 0.1.0
 */
export const layerClient = (options: {
  readonly url: string
  readonly path?: `/${string}` | undefined
}): Layer.Layer<ServiceClient.Transport, never, HttpClient.HttpClient> =>
  Layer.effect(
    ServiceClient.Transport,
    Effect.gen(function*() {
      const http = yield* HttpClient.HttpClient
      const base = `${options.url.replace(/\/$/, "")}${options.path ?? "/rpc"}`
      return yield* BrokerRpcClient.makeTransportWith(crypto.randomUUID(), (service) =>
        RpcClient.makeProtocolHttp(
          http.pipe(HttpClient.mapRequest(HttpClientRequest.prependUrl(`${base}/${service}`)))
        ).pipe(Effect.provideService(RpcSerialization.RpcSerialization, RpcSerialization.ndjson))
      )
    })
  )

/**
 * An auth hook for every route of the edge (optionally all but those `exclude` says): the hook reads
 * the request and names the user, who becomes the call context's user id; it fails with
 * `Unauthorized` (401) or `Forbidden` (403).
 *
 * @since 0.1.0
 */
export const authenticate = <R = never>(
  check: (request: HttpServerRequest.HttpServerRequest) => Effect.Effect<Identity, Unauthorized | Forbidden, R>,
  options?: { readonly exclude?: ((path: string) => boolean) | undefined }
): Layer.Layer<never, never, HttpRouter.HttpRouter | Exclude<R, HttpServerRequest.HttpServerRequest | Scope.Scope>> =>
  Layer.effectDiscard(Effect.gen(function*() {
    const router = yield* HttpRouter.HttpRouter
    const context = yield* Effect.context<Exclude<R, HttpServerRequest.HttpServerRequest | Scope.Scope>>()
    yield* router.addGlobalMiddleware((effect) =>
      Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) => {
        if (options?.exclude?.(pathOf(request.url)) === true) return effect
        return check(request).pipe(
          Effect.provideContext(context as Context.Context<R>),
          Effect.matchEffect({
            onFailure: (error) =>
              Effect.succeed(edge.jsonResponse(error._tag === "Forbidden" ? 403 : 401, {
                _tag: error._tag,
                message: error.message
              })),
            onSuccess: (identity) =>
              effect.pipe(
                Effect.provideService(
                  HttpServerRequest.HttpServerRequest,
                  request.modify({ headers: Headers.set(request.headers, edge.requestHeaders.userId, identity.userId) })
                ),
                CallContext.withUserId(identity.userId),
                CallContext.withEntries(identity.entries ?? {})
              )
          })
        )
      })
    )
  }))

// ---- internal ----

const pathOf = (url: string): string => {
  const q = url.indexOf("?")
  return q === -1 ? url : url.slice(0, q)
}

const byteSize = (given: ByteSize.Input | undefined, fallback: ByteSize.ByteSize): ByteSize.ByteSize =>
  given === undefined ? fallback : ByteSize.fromInputUnsafe(given)

const bytes = (given: ByteSize.Input | undefined, fallback: ByteSize.ByteSize): number =>
  ByteSize.toNumberUnsafe(byteSize(given, fallback))


/**
 * node's server with the header limits: node refuses a head over `maxHeaderSize` itself (431); it
 * drops the header lines past `maxHeadersCount` silently, so it keeps one more than the limit and
 * `refuseManyHeaders` answers the request that has it
 */
const nodeServer = (options: ServerOptions): Server => {
  const server = createServer({ maxHeaderSize: bytes(options.maxHeaderSize, limits.maxHeaderSize) })
  server.maxHeadersCount = (options.maxHeaderCount ?? limits.maxHeaderCount) + 1
  return server
}

/** 431 for a request with more header lines than the limit */
const refuseManyHeaders = (maxHeaderCount: number) =>
<E, R>(
  effect: Effect.Effect<HttpServerResponse.HttpServerResponse, E, R | HttpServerRequest.HttpServerRequest>
): Effect.Effect<HttpServerResponse.HttpServerResponse, E, R | HttpServerRequest.HttpServerRequest> =>
  Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) =>
    NodeHttpServerRequest.toIncomingMessage(request).rawHeaders.length / 2 > maxHeaderCount
      ? Effect.succeed(edge.headersTooLarge(`more than ${maxHeaderCount} header lines`))
      : effect)

/** serves the router it provides; every request gets the edge's call context and error bodies */
const serveRouter = (options: ServerOptions) =>
  Layer.effect(
    HttpRouter.HttpRouter,
    Effect.gen(function*() {
      const router = yield* HttpRouter.make
      const server = yield* HttpServer.HttpServer
      const maxBodySize = byteSize(options.maxBodySize, limits.maxBodySize)
      // looked up per request: routes and global middleware may be added after the server starts
      const app = Effect.suspend(() => router.asHttpEffect()).pipe(
        withEdgeContext(options.trustUserIdHeader !== false),
        refuseManyHeaders(options.maxHeaderCount ?? limits.maxHeaderCount),
        Effect.catchCause(onUnhandled),
        Effect.provideService(HttpIncomingMessage.MaxBodySize, maxBodySize)
      )
      if (options.disableLogger === true) yield* server.serve(app)
      else yield* server.serve(app, HttpMiddleware.logger)
      return router
    })
  )

/** the call context of a request, set on the fiber and, for handlers running elsewhere, in its headers */
const withEdgeContext = (trustUserId: boolean) =>
<E>(
  effect: Effect.Effect<HttpServerResponse.HttpServerResponse, E, HttpServerRequest.HttpServerRequest | Scope.Scope>
) =>
  Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) => {
    const given = request.headers[edge.requestHeaders.correlationId]
    const correlationId = given === undefined || given === "" ? crypto.randomUUID() : given
    const user = trustUserId ? request.headers[edge.requestHeaders.userId] : undefined
    const userId = user === undefined || user === "" ? undefined : user
    // the edge decides these two: a handler reading headers takes the first occurrence, this one
    const headers = Headers.set(
      Headers.set(request.headers, edge.requestHeaders.correlationId, correlationId),
      edge.requestHeaders.userId,
      userId ?? ""
    )
    return effect.pipe(
      Effect.provideService(HttpServerRequest.HttpServerRequest, request.modify({ headers })),
      Effect.updateService(CallContext.CallContext, (c) => ({ ...c, correlationId, userId })),
      Effect.map(HttpServerResponse.setHeader(edge.requestHeaders.correlationId, correlationId))
    )
  })

const onUnhandled = (cause: Cause.Cause<unknown>): Effect.Effect<HttpServerResponse.HttpServerResponse, unknown> => {
  if (Cause.hasInterruptsOnly(cause)) return Effect.failCause(cause)
  const failure = edge.failureOf(cause)
  // effect/rpc's HTTP protocol dies of a body it could not read (over maxBodySize): still the request's fault
  const error = failure._tag === "Fail" ? failure.error : failure._tag === "Die" ? failure.defect : undefined
  if (isHttpServerError(error)) return Effect.succeed(edge.requestErrorResponse(error))
  return Effect.as(Effect.logError("an HTTP request failed", cause), edge.internalError)
}

/** `POST <path>/:service/:method` */
const jsonCall = (entries: ReadonlyMap<string, edge.ContractEntry>) =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const params = yield* HttpRouter.params
    const body = yield* edge.readJsonBody(request)
    const outcome = yield* edge.callJson(entries, params["service"] ?? "", params["method"] ?? "", body)
    switch (outcome._tag) {
      case "Done":
        return edge.jsonResponse(outcome.status, outcome.body)
      case "Stream":
        return sseResponse(outcome.values)
    }
  }).pipe(Effect.catch((response) => Effect.succeed(response)))

const encoder = new TextEncoder()

/** a streaming method's answer: one `message` event per element, then `end` (or `error`) */
const sseResponse = (values: Stream.Stream<unknown, edge.ErrorBody>): HttpServerResponse.HttpServerResponse => {
  const event = (name: string, data: unknown, id?: string) =>
    encoder.encode(Sse.encoder.write({ _tag: "Event", event: name, id, data: JSON.stringify(data) }))
  let n = 0
  const events = values.pipe(
    Stream.map((value) => event("message", value, String(n++))),
    Stream.concat(Stream.sync(() => event("end", null))),
    Stream.catch((error) => Stream.succeed(event("error", error.body)))
  )
  return HttpServerResponse.stream(events, {
    contentType: "text/event-stream",
    headers: { "cache-control": "no-cache" }
  })
}

/** effect/rpc's HTTP protocol for one contract, forwarding to the mesh */
const typedRpcEffect = (given: edge.AnyContract, timeout: Duration.Input) =>
  Effect.gen(function*() {
    const contract = edge.erase(given)
    const handlers = yield* edge.forwardingHandlers(contract, { timeout })
    const { httpEffect, protocol } = yield* RpcServer.makeProtocolWithHttpEffect().pipe(
      Effect.provideService(RpcSerialization.RpcSerialization, RpcSerialization.ndjson)
    )
    yield* RpcServer.make(contract.group, { disableFatalDefects: true, spanPrefix: `gateway.${contract.name}` }).pipe(
      Effect.provideService(RpcServer.Protocol, edge.firstHeaderWins(protocol)),
      Effect.provideContext(handlers as Context.Context<never>),
      Effect.forkScoped
    )
    return httpEffect
  })
