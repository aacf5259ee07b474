/**
 * effect/rpc's `RpcClient.Protocol` over a `Broker`: how a process calls services.
 *
 * A process opens one reply queue (`Transport`), shared by all its clients; replies find their call by
 * correlation id. Requests are published `mandatory`, so a service that has no queue fails the call at
 * once with `ServiceNotFound`; they expire in the queue when their deadline passes, so nobody runs a
 * request its caller gave up on. Interrupts go to every instance of the service over the control
 * exchange; stream acks go to the instance that sent the chunk.
 *
 * @since 0.1.0
 */
import { Clock, Context, Effect, Layer, Option, Schema, Scope, Stream } from "effect"
import type { Rpc, RpcGroup } from "effect/rpc"
import { RpcClient, RpcClientError } from "effect/rpc"
import type { FromClientEncoded, FromServerEncoded, RequestId } from "effect/rpc/RpcMessage"
import type { BrokerError, Incoming } from "./Broker.ts"
import { Broker } from "./Broker.ts"
import { headerNames } from "./CallContext.ts"
import * as topology from "./internal/topology.ts"
import * as wire from "./internal/wire.ts"
import { ServiceNotFound } from "./ServiceError.ts"

interface Route {
  readonly onReply: (message: FromServerEncoded, instance: string | undefined) => Effect.Effect<void>
  readonly onReturned: Effect.Effect<void>
}

/**
 * One process's connection to the RPC side of the mesh: its reply queue and its clients.
 *
 * @since 0.1.0
 */
export class Transport extends Context.Service<Transport, {
  /** unique per process: lets instances route interrupts back to the right call */
  readonly id: string
  /** the effect/rpc client of a contract, made once per transport */
  readonly client: <Rpcs extends Rpc.Any>(
    service: string,
    group: RpcGroup.RpcGroup<Rpcs>
  ) => Effect.Effect<RpcClient.RpcClient<Rpcs, RpcClientError.RpcClientError>>
  /**
   * the raw effect/rpc protocol to one service, made once per transport: for callers without the
   * contract (`ServiceClient.callUntyped`), each call under its own client id
   */
  readonly protocol: (service: string) => Effect.Effect<RpcClient.Protocol["Service"]>
}>()("effect-mesh/BrokerRpcClient/Transport") {}

const transportError = (message: string, cause: unknown) =>
  new RpcClientError.RpcClientError({
    reason: new RpcClientError.RpcClientDefect({ message, cause })
  })

/**
 * Opens the reply queue and starts dispatching replies.
 *
 * @since 0.1.0
 */
export const make: Effect.Effect<Transport["Service"], BrokerError, Broker | Scope.Scope> = Effect.gen(function*() {
  const broker = yield* Broker
  const scope = yield* Effect.scope
  yield* topology.declareCommon(broker)
  const replies = yield* broker.replyQueue
  const id = crypto.randomUUID()
  const routes = new Map<string, Route>()
  let nextCorrelation = 0

  const onIncoming = (incoming: Incoming): Effect.Effect<void> => {
    const correlationId = incoming.message.properties.correlationId
    if (correlationId === undefined) return Effect.void
    const route = routes.get(correlationId)
    if (route === undefined) return Effect.void
    if (incoming._tag === "Returned") {
      routes.delete(correlationId)
      return route.onReturned
    }
    const body = wire.decodeJson(incoming.message.body)
    if (Option.isNone(body) || typeof body.value !== "object" || body.value === null) {
      return Effect.logWarning(`a reply for ${correlationId} was not JSON; dropped`)
    }
    const message = body.value as FromServerEncoded
    if (message._tag === "Exit") routes.delete(correlationId)
    const instance = incoming.message.properties.headers?.[wire.header.instance]
    return route.onReply(message, typeof instance === "string" ? instance : undefined)
  }
  yield* replies.incoming.pipe(
    Stream.runForEach((incoming) =>
      Effect.catchCause(onIncoming(incoming), (cause) => Effect.logError("a reply could not be dispatched", cause))
    ),
    Effect.forkScoped
  )

  const makeProtocol = (service: string) =>
    RpcClient.Protocol.make(Effect.fnUntraced(function*(write) {
      interface Pending {
        readonly correlationId: string
        instance: string | undefined
      }
      const pending = new Map<RequestId, Pending>()

      const sendRequest = (clientId: number, request: Extract<FromClientEncoded, { _tag: "Request" }>) =>
        Effect.flatMap(Clock.currentTimeMillis, (now) => {
          const correlationId = `${nextCorrelation++}`
          const requestId = request.id as RequestId
          const entry: Pending = { correlationId, instance: undefined }
          pending.set(requestId, entry)
          const finish = (message: FromServerEncoded) => {
            if (message._tag === "Exit") pending.delete(requestId)
            return write(clientId, { ...message, requestId } as FromServerEncoded)
          }
          routes.set(correlationId, {
            onReply: (message, instance) => {
              if (instance !== undefined) entry.instance = instance
              // a chunk waits for its consumer to pull; it must not hold up other calls' replies.
              // Order is kept: the next chunk is only sent after this one is written and acked
              return message._tag === "Chunk" ? Effect.asVoid(Effect.forkIn(finish(message), scope)) : finish(message)
            },
            onReturned: Effect.suspend(() =>
              finish({
                _tag: "Exit",
                requestId: String(requestId),
                exit: wire.serviceErrorExit(new ServiceNotFound({ service }))
              })
            )
          })
          const headers: Record<string, string> = {}
          for (const [key, value] of request.headers) headers[key] = value
          headers[wire.header.client] = id
          if (request.traceId !== undefined && request.spanId !== undefined) {
            headers[wire.header.traceId] = request.traceId
            headers[wire.header.spanId] = request.spanId
            headers[wire.header.sampled] = String(request.sampled ?? true)
          }
          const deadline = Number(headers[headerNames.deadline])
          return replies.publish(topology.rpcExchange, topology.rpcRoutingKey(service), wire.encodeJson(request.payload), {
            mandatory: true,
            type: request.tag,
            correlationId,
            contentType: wire.contentType,
            headers,
            expiration: Number.isFinite(deadline) ? Math.max(1, deadline - now) : undefined
          }).pipe(
            Effect.mapError((error) => transportError(error.message, error)),
            Effect.tapError(() =>
              Effect.sync(() => {
                routes.delete(correlationId)
                pending.delete(requestId)
              })
            )
          )
        })

      const sendControl = (requestId: RequestId, tag: "Interrupt" | "Ack") => {
        const entry = pending.get(requestId)
        if (entry === undefined) return Effect.void
        if (tag === "Interrupt") {
          pending.delete(requestId)
          routes.delete(entry.correlationId)
        }
        const key = tag === "Ack" && entry.instance !== undefined
          ? topology.controlInstanceKey(entry.instance)
          : topology.controlServiceKey(service)
        const control: wire.Control = { _tag: tag, client: id, requestId: entry.correlationId }
        return Effect.ignore(broker.publish(topology.controlExchange, key, wire.encodeJson(control)))
      }

      return {
        send: (clientId: number, message: FromClientEncoded): Effect.Effect<void, RpcClientError.RpcClientError> => {
          switch (message._tag) {
            case "Request":
              return sendRequest(clientId, message)
            case "Interrupt":
              return sendControl(message.requestId as RequestId, "Interrupt")
            case "Ack":
              return sendControl(message.requestId as RequestId, "Ack")
            default:
              return Effect.void
          }
        },
        supportsAck: true,
        supportsTransferables: false,
        codecFor: Schema.toCodecJson
      }
    }))

  // keyed by name and group: two versions of one contract get two clients
  const clients = new Map<string, WeakMap<object, unknown>>()
  const client = <Rpcs extends Rpc.Any>(service: string, group: RpcGroup.RpcGroup<Rpcs>) =>
    Effect.suspend(() => {
      let byGroup = clients.get(service)
      if (byGroup === undefined) {
        byGroup = new WeakMap()
        clients.set(service, byGroup)
      }
      const cached = byGroup.get(group)
      if (cached !== undefined) return Effect.succeed(cached as RpcClient.RpcClient<Rpcs, RpcClientError.RpcClientError>)
      return makeProtocol(service).pipe(
        Effect.flatMap((protocol) =>
          RpcClient.make(group, { spanPrefix: service }).pipe(
            Effect.provideService(RpcClient.Protocol, protocol)
          )
        ),
        Effect.tap((made) => Effect.sync(() => byGroup.set(group, made))),
        Scope.provide(scope)
      ) as Effect.Effect<RpcClient.RpcClient<Rpcs, RpcClientError.RpcClientError>>
    })

  const protocols = new Map<string, RpcClient.Protocol["Service"]>()
  const protocol = (service: string) =>
    Effect.suspend(() => {
      const cached = protocols.get(service)
      if (cached !== undefined) return Effect.succeed(cached)
      return makeProtocol(service).pipe(
        Effect.tap((made) => Effect.sync(() => protocols.set(service, made))),
        Scope.provide(scope)
      )
    })

  return Transport.of({ id, client, protocol })
})

/**
 * The transport as a Layer.
 *
 * @since 0.1.0
 */
export const layer: Layer.Layer<Transport, BrokerError, Broker> = Layer.effect(Transport, make)
