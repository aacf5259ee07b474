/**
 * The WebSocket edge of the mesh, on the edge server's `HttpRouter`: RPC and the hub for browsers, and
 * effect/rpc's WebSocket protocol for typed clients.
 *
 * At `path` (default `/ws`), Nameko's JSON framing. On connect the server sends
 * `{"type":"event","event":"connected","data":{"socket_id":"..."}}`; the client sends
 * `{"method":"<service>.<method>","data":{...},"correlation_id":"..."}` and gets
 * `{"type":"result","success":true,"data":...,"correlation_id":"..."}` (or `"success":false` with an
 * `error` carrying the same JSON body as the HTTP gateway's). Two built-in methods join the hub:
 * `subscribe` and `unsubscribe` with `{"channel":"..."}`. Broadcasts to the socket's channels and
 * unicasts to its id arrive as `{"type":"event","event":"...","data":...,"channel":"..."}`; a streaming
 * method sends `{"type":"chunk","data":...,"correlation_id":"..."}` per element before its result.
 * Calls on one socket run concurrently and answer as they complete.
 *
 * At `rpcPath/<service>` (default `/rpc-ws`), effect/rpc's WebSocket protocol forwarding to the mesh:
 * `WebSocketGateway.layerClient({ url })` makes `ServiceClient.make(Contract)` work over one socket.
 * `rpcPath/hub` serves `Hub.contract`: `ServiceClient.make(Hub.contract)` subscribes to channels as a
 * typed `Stream`.
 *
 * @since 0.1.0
 */
import { Effect, Layer, Option, Schema, Stream } from "effect"
import type { Context, Duration } from "effect"
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import { RpcClient, RpcSerialization, RpcServer } from "effect/rpc"
import { Socket } from "effect/socket"
import { contract as HubContract, Hub } from "./Hub.ts"
import type { Connection } from "./Hub.ts"
import * as BrokerRpcClient from "./BrokerRpcClient.ts"
import * as edge from "./internal/edge.ts"
import * as ServiceClient from "./ServiceClient.ts"

// ---- models ----

/**
 * @since 0.1.0
 */
export interface Options {
  /** the contracts sockets may call */
  readonly contracts?: ReadonlyArray<edge.AnyContract> | undefined
  /** where Nameko-framed sockets connect (default `/ws`) */
  readonly path?: `/${string}` | undefined
  /** where typed clients connect, one socket per service (default `/rpc-ws`) */
  readonly rpcPath?: `/${string}` | undefined
  /** the status each contract error would have over HTTP (reported in `error.status`; default 422) */
  readonly errorStatus?: Readonly<Record<string, number>> | undefined
  /** the timeout of every call (default 30 seconds) */
  readonly timeout?: Duration.Input | undefined
}

/**
 * A frame a client sends, as Nameko's websocket hub has it.
 *
 * @since 0.1.0
 */
export const Request = Schema.Struct({
  method: Schema.String,
  data: Schema.optionalKey(Schema.Unknown),
  correlation_id: Schema.optionalKey(Schema.NullOr(Schema.Union([Schema.String, Schema.Number])))
})

/**
 * @since 0.1.0
 */
export type Request = typeof Request.Type

// ---- layers ----

/**
 * The WebSocket routes on the current router: Nameko framing with the hub, and effect/rpc's protocol.
 *
 * @since 0.1.0
 */
export const layer = (
  options?: Options
): Layer.Layer<never, never, HttpRouter.HttpRouter | ServiceClient.Transport | Hub> =>
  Layer.effectDiscard(Effect.gen(function*() {
    const router = yield* HttpRouter.HttpRouter
    const hub = yield* Hub
    const timeout = options?.timeout ?? "30 seconds"
    const entries = new Map<string, edge.ContractEntry>()
    const rpcPath = options?.rpcPath ?? "/rpc-ws"
    for (const contract of options?.contracts ?? []) {
      entries.set(contract.name, yield* edge.contractEntry(contract, { timeout, errorStatus: options?.errorStatus }))
      yield* router.add("GET", `${rpcPath}/${contract.name}`, yield* typedRpcEffect(contract, timeout))
    }
    yield* router.add("GET", `${rpcPath}/${HubContract.name}`, yield* hubRpcEffect(hub))
    yield* router.add("GET", options?.path ?? "/ws", namekoSocket(entries, hub))
  }))

/**
 * A `ServiceClient.Transport` over the gateway's WebSocket protocol: `ServiceClient.make(Contract)`
 * then calls through the gateway at `url` (its origin, `ws://host:port`), one socket per service.
 *
 * @since 0.1.0
 */
export const layerClient = (options: {
  readonly url: string
  readonly rpcPath?: `/${string}` | undefined
}): Layer.Layer<ServiceClient.Transport, never, Socket.WebSocketConstructor> =>
  Layer.effect(
    ServiceClient.Transport,
    Effect.gen(function*() {
      const base = `${options.url.replace(/\/$/, "")}${options.rpcPath ?? "/rpc-ws"}`
      return yield* BrokerRpcClient.makeTransportWith(crypto.randomUUID(), (service) =>
        Effect.flatMap(Socket.makeWebSocket(`${base}/${service}`), (socket) =>
          RpcClient.makeProtocolSocket().pipe(
            Effect.provideService(Socket.Socket, socket),
            Effect.provideService(RpcSerialization.RpcSerialization, RpcSerialization.ndjson)
          ))
      )
    })
  )

// ---- internal ----

const decodeRequest = Schema.decodeUnknownOption(Schema.fromJsonString(Request))

type CorrelationId = string | number | null

/** one Nameko-framed socket: its hub connection, its calls, its pushes */
const namekoSocket = (entries: ReadonlyMap<string, edge.ContractEntry>, hub: Hub["Service"]) =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const socket = yield* request.upgrade
    // the handshake completes when the reader is acquired: before that, a write waits forever
    const pull = yield* Socket.readerString(socket)
    const writer = yield* socket.writer
    const connection = yield* hub.connect
    const send = (frame: object) => Effect.ignore(writer.write(JSON.stringify(frame)))
    yield* send({ type: "event", event: "connected", data: { socket_id: connection.socketId } })
    yield* connection.messages.pipe(
      Stream.runForEach((message) =>
        send({
          type: "event",
          event: message.event,
          data: message.data,
          ...(message.channel === undefined ? {} : { channel: message.channel })
        })
      ),
      Effect.forkScoped
    )
    const onFrame = (frame: string) =>
      Option.match(decodeRequest(frame), {
        onNone: () =>
          send(failure(null, {
            _tag: "BadRequest",
            message: "a frame must be JSON: {\"method\", \"data\", \"correlation_id\"}"
          })),
        onSome: (req) => handle(entries, connection, req, send)
      })
    return yield* pull.pipe(
      Effect.flatMap((frames) => Effect.forEach(frames, (frame) => Effect.forkScoped(onFrame(frame)), { discard: true })),
      Effect.forever
    )
  }).pipe(
    Effect.scoped,
    Effect.catchReason("SocketError", "SocketCloseError", () => Effect.void),
    Effect.catchTag("SocketError", (error) => Effect.logDebug("a WebSocket failed", error)),
    Effect.as(HttpServerResponse.empty()),
    Effect.catchTag("HttpServerError", (error) => Effect.succeed(edge.requestErrorResponse(error)))
  )

const failure = (correlationId: CorrelationId, error: unknown) => ({
  type: "result",
  success: false,
  error,
  correlation_id: correlationId
})

const ChannelData = Schema.Struct({ channel: Schema.String })
const decodeChannel = Schema.decodeUnknownOption(ChannelData)

/** answers one frame */
const handle = (
  entries: ReadonlyMap<string, edge.ContractEntry>,
  connection: Connection,
  req: Request,
  send: (frame: object) => Effect.Effect<void>
): Effect.Effect<void> => {
  const correlationId: CorrelationId = req.correlation_id ?? null
  const success = (data: unknown) => send({ type: "result", success: true, data, correlation_id: correlationId })
  const failed = (body: unknown) => send(failure(correlationId, body))
  if (req.method === "subscribe" || req.method === "unsubscribe") {
    return Option.match(decodeChannel(req.data), {
      onNone: () => failed({ _tag: "BadRequest", message: `${req.method} takes {"channel": "..."}` }),
      onSome: ({ channel }) =>
        (req.method === "subscribe" ? connection.subscribe(channel) : connection.unsubscribe(channel)).pipe(
          Effect.matchEffect({
            onFailure: (error) => failed({ _tag: error._tag, message: error.message }),
            onSuccess: () => success(null)
          })
        )
    })
  }
  const dot = req.method.lastIndexOf(".")
  const service = dot === -1 ? "" : req.method.slice(0, dot)
  const method = dot === -1 ? req.method : req.method.slice(dot + 1)
  return Effect.flatMap(edge.callJson(entries, service, method, req.data), (outcome) => {
    if (outcome._tag === "Done") {
      return outcome.status === 200 ? success(outcome.body) : failed(withStatus(outcome))
    }
    return outcome.values.pipe(
      Stream.runForEach((data) => send({ type: "chunk", data, correlation_id: correlationId })),
      Effect.matchEffect({
        onFailure: (error) => failed(withStatus(error)),
        onSuccess: () => success(null)
      })
    )
  })
}

const withStatus = (outcome: edge.ErrorBody): unknown =>
  typeof outcome.body === "object" && outcome.body !== null ? { ...outcome.body, status: outcome.status } : outcome.body

/** effect/rpc's WebSocket protocol for one contract, forwarding to the mesh */
const typedRpcEffect = (given: edge.AnyContract, timeout: Duration.Input) =>
  Effect.gen(function*() {
    const contract = edge.erase(given)
    const handlers = yield* edge.forwardingHandlers(contract, { timeout })
    const { httpEffect, protocol } = yield* RpcServer.makeProtocolWithHttpEffectWebsocket.pipe(
      Effect.provideService(RpcSerialization.RpcSerialization, RpcSerialization.ndjson)
    )
    yield* RpcServer.make(contract.group, { disableFatalDefects: true, spanPrefix: `gateway.${contract.name}` }).pipe(
      Effect.provideService(RpcServer.Protocol, edge.firstHeaderWins(protocol)),
      Effect.provideContext(handlers as Context.Context<never>),
      Effect.forkScoped
    )
    return httpEffect
  })

/** the hub's own contract for typed clients, served here (the hub is part of the gateway) */
const hubRpcEffect = (hub: Hub["Service"]) =>
  Effect.gen(function*() {
    const handlers = yield* HubContract.group.toHandlers({
      subscribe: ({ channel }) =>
        hub.channel(channel).pipe(
          Stream.catchTag("BrokerError", (error) => Stream.die(error))
        )
    })
    const { httpEffect, protocol } = yield* RpcServer.makeProtocolWithHttpEffectWebsocket.pipe(
      Effect.provideService(RpcSerialization.RpcSerialization, RpcSerialization.ndjson)
    )
    yield* RpcServer.make(HubContract.group, { disableFatalDefects: true, spanPrefix: "gateway.hub" }).pipe(
      Effect.provideService(RpcServer.Protocol, protocol),
      Effect.provideContext(handlers),
      Effect.forkScoped
    )
    return httpEffect
  })
