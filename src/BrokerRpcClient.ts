/**
 * effect/rpc's `RpcClient.Protocol` over a `Broker`: how a process calls services.
 *
 * A process opens one reply queue (`Transport`), shared by all its clients; replies find their call by
 * correlation id. Requests are published `mandatory`, so a service that has no queue fails the call at
 * once with `ServiceNotFound`; they expire in the queue when their deadline passes, so nobody runs a
 * request its caller gave up on. Interrupts go to every instance of the service over the control
 * exchange; stream acks go to the instance that sent the chunk.
 *
 * A call in flight ends early in two cases. When the reply queue is `Lost` (RabbitMQ's connection or
 * the reply channel dropped), no reply can come: every call in flight fails at once with
 * `TransportError` `OutcomeUnknown`, deadline or not. And while calls are in flight, once a second the
 * client looks at those that have waited a second or more without a word: when the queue of their
 * service has requests and no consumer, they fail with `ServiceNotFound` `NoConsumer` (one passive
 * declaration per such service, none for a call answered within the second).
 *
 * Every call in flight is one `PendingCall` (internal/pendingCall.ts), whichever way it is made:
 * unary calls (the hot path) skip `RpcClient`: `Transport.unary` checks the payload with the rpc's own
 * schemas and publishes it as a `LocalBody`, its bytes (effect/rpc's wire format all the same) made
 * where it leaves the process; an instance of this process on the embedded broker takes the value and
 * answers a success with the value too. Streams, untyped calls and rpcs with middleware go through
 * `RpcClient`.
 *
 * A request is written in its rpc's format (WireFormat.ts: its contract's), resolved once per rpc with
 * its codecs (a protocol's call finds its rpc by tag); a reply is read in the format its `content_type`
 * names.
 *
 * A sealed rpc's request (Sealed.ts) is sealed for its service's key (found once per service,
 * internal/sealedKeys.ts) and never passed as a value; its answers are opened with the call's own key,
 * and an unsealed answer is taken only when it is a refusal. Nothing of this runs for other rpcs but
 * the codecs' `sealed` flag, and for replies a flag set by the process's first sealed call.
 *
 * @since 0.1.0
 */
import { Cause, Clock, Context, Effect, Exit, Layer, Option, Schema, Scope, Stream } from "effect"
import type { Rpc, RpcGroup } from "effect/rpc"
import { RpcClient, RpcClientError } from "effect/rpc"
import type { FromClientEncoded, FromServerEncoded, RequestId } from "effect/rpc/RpcMessage"
import type { Fiber, Tracer } from "effect"
import type { Body, BrokerError, Incoming, LocalBody, Message } from "./Broker.ts"
import { Broker } from "./Broker.ts"
import * as CallContext from "./CallContext.ts"
import * as Codecs from "./internal/codecs.ts"
import * as Deadlines from "./internal/deadlines.ts"
import * as Formats from "./internal/formats.ts"
import { LocalRequest } from "./internal/local.ts"
import * as PendingCall from "./internal/pendingCall.ts"
import * as SealedKeys from "./internal/sealedKeys.ts"
import * as Sealing from "./internal/sealing.ts"
import * as topology from "./internal/topology.ts"
import * as wire from "./internal/wire.ts"
import { CallTimeout, ServiceNotFound, TransportError } from "./ServiceError.ts"

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
  /**
   * whether the transport itself fails a call with `CallTimeout` when its deadline (the call context's)
   * passes; when it does not, `ServiceClient` times calls out on its own
   */
  readonly enforcesDeadlines: boolean
  /**
   * unary calls without effect/rpc's client, when the transport offers them: the request is encoded
   * with the rpc's schemas and published, the reply's Exit decoded with them. The effect fails with the
   * contract's error, or dies with the mesh's own (encoded, as effect/rpc's client would have it)
   */
  readonly unary?: Unary | undefined
}>()("effect-mesh/BrokerRpcClient/Transport") {}

/**
 * One unary call through the transport.
 *
 * @since 0.1.0
 */
export type Unary = (
  service: string,
  rpc: Rpc.AnyWithProps,
  payload: unknown,
  request: {
    /** the call's context, and its headers (made only where the request leaves the process) */
    readonly context: CallContext.CallContext
    readonly headers: () => Readonly<Record<string, string>>
    /** epoch millis after which the call fails with `CallTimeout` (its timeout is `timeoutMillis`) */
    readonly deadline: number | undefined
    readonly timeoutMillis: number
    /** the caller's client span, sent as `traceparent` */
    readonly span: Tracer.AnySpan | undefined
  }
) => Effect.Effect<unknown, unknown>

/**
 * The rpcs of a contract, as a protocol looks them up by tag.
 *
 * @since 0.1.0
 */
export interface Requests {
  readonly requests: ReadonlyMap<string, Rpc.Any>
}

const clockOf = (fiber: Fiber.Fiber<unknown, unknown>): number => fiber.getRef(Clock.Clock).currentTimeMillisUnsafe()

/**
 * a reply's answer: a success as a value (from this process), or effect/rpc's message; undefined when
 * it is not a message in a format this process reads
 */
const answerOf = (message: Message, sealed?: Formats.BodyFormat): PendingCall.Answer | undefined => {
  if (Exit.isExit(message.local)) return message.local
  if (sealed !== undefined) return sealedAnswerOf(message, sealed)
  const format = Formats.ofContentType(message.properties.contentType)
  if (format === undefined) return undefined
  const body = format.decode(message.body)
  return Option.isNone(body) || typeof body.value !== "object" || body.value === null
    ? undefined
    : body.value as FromServerEncoded
}

/**
 * the answer to a sealed call: opened with the call's key. An answer that is not sealed can only be
 * the instance's refusal (a failure: a request it could not open, a method it does not have), never a
 * value; one that does not open is not an answer
 */
const sealedAnswerOf = (message: Message, sealed: Formats.BodyFormat): PendingCall.Answer | undefined => {
  if (message.properties.contentType === sealed.contentType) {
    const body = sealed.decode(message.body)
    return Option.isNone(body) || typeof body.value !== "object" || body.value === null ? undefined : body.value as FromServerEncoded
  }
  const plain = answerOf(message)
  return plain !== undefined && !Exit.isExit(plain) && plain._tag === "Exit" && plain.exit._tag === "Failure" ? plain : undefined
}

/**
 * a sealed call's refusal because its request did not open: the key this process found for the service
 * may be an old one (the service's key was rotated), so the next call asks discovery again
 */
const forgetKeyOn = (broker: Broker["Service"], route: PendingCall.PendingCall, answer: PendingCall.Answer): void => {
  if (Exit.isExit(answer) || answer._tag !== "Exit" || answer.exit._tag !== "Failure") return
  for (const reason of answer.exit.cause) {
    const error = reason._tag === "Die" ? wire.serviceErrorOfDefect(reason.defect) : Option.none()
    if (Option.isSome(error) && error.value._tag === "InvalidPayload" && error.value.issue === Sealing.notOpened) {
      SealedKeys.forget(broker, route.service)
    }
  }
}

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
  const id = crypto.randomUUID()
  const routes = new Map<string, PendingCall.PendingCall>()
  // correlation ids are unique beyond this process (a random prefix): instances know a call by it
  // alone, and the request needs no header naming its client
  const correlationPrefix = id.replaceAll("-", "").slice(0, 12)
  let nextCorrelation = 0
  // a call past its deadline is answered here, with CallTimeout, as a returned one is with
  // ServiceNotFound: one watcher for every call rather than a timer and a race of fibers per call
  const deadlines = yield* Deadlines.make
  const publishControl = (tag: "Interrupt" | "Ack", key: string, correlationId: string) => {
    const control: wire.Control = { _tag: tag, client: id, requestId: correlationId }
    return Effect.ignore(broker.publish(topology.controlExchange, key, wire.encodeJson(control)))
  }
  const calls: PendingCall.Calls = {
    routes,
    deadlines,
    interrupt: (call) => publishControl("Interrupt", topology.controlServiceKey(call.service), call.correlationId)
  }

  // no reply to a call in flight can come any more: each fails, deadline or not
  const endAll = (reason: string): Effect.Effect<void> => PendingCall.endAll(routes, reason)

  // calls that waited a whole sweep interval without a word, by service, are checked against their
  // service's queue: requests waiting there and no consumer end them with ServiceNotFound NoConsumer.
  // The sweep runs on the deadline watcher, armed by the first call after it stopped; a call only
  // notes the sweep count: nothing per call on the happy path but a number and a flag
  let sweeps = 0
  let sweepArmed = false
  const checkService = (service: string, waiting: ReadonlyArray<PendingCall.PendingCall>): Effect.Effect<void> =>
    Effect.matchEffect(broker.checkQueue(topology.rpcQueue(service)), {
      // a queue gone makes its requests return; a connection gone makes the reply queue `Lost`
      onFailure: () => Effect.void,
      // no ready request: ours were taken (an instance draining still runs them), or expired
      onSuccess: (queue) =>
        queue.consumers > 0 || queue.messages === 0 ? Effect.void : Effect.forEach(
          waiting,
          (call) => call.waiting() ? call.end(new ServiceNotFound({ service, reason: "NoConsumer" })) : Effect.void,
          { discard: true }
        )
    })
  const sweep: Effect.Effect<void> = Effect.clockWith((clock) =>
    Effect.suspend(() => {
      sweeps++
      sweepArmed = false
      let waiting: Map<string, Array<PendingCall.PendingCall>> | undefined
      for (const route of routes.values()) {
        if (route.sweep > sweeps - 2 || !route.waiting()) continue
        waiting ??= new Map()
        const byService = waiting.get(route.service)
        if (byService === undefined) waiting.set(route.service, [route])
        else byService.push(route)
      }
      if (routes.size > 0) armSweep(clock.currentTimeMillisUnsafe())
      if (waiting === undefined) return Effect.void
      const services = waiting
      return Effect.asVoid(Effect.forkIn(
        Effect.forEach(services, ([service, waiting]) => checkService(service, waiting), { discard: true }),
        scope
      ))
    })
  )
  const armSweep = (now: number): void => {
    sweepArmed = true
    deadlines.add(now + noConsumerCheckMillis, sweep)
  }

  // what opens the answers of each sealed call in flight; looked up only once this process has made one
  const sealedCalls = new WeakMap<PendingCall.PendingCall, Formats.BodyFormat>()
  let sealing = false
  /**
   * seals a call's request for its service's key; its answers will be opened with the call's own key.
   * Finding the key (the process's first sealed call to the service) waits no longer than the deadline
   */
  const seal = (
    call: PendingCall.PendingCall,
    format: Formats.BodyFormat,
    plaintext: Uint8Array,
    deadline: number | undefined,
    fiber: Fiber.Fiber<unknown, unknown>
  ) => {
    const key = SealedKeys.keyFor(broker, call.service, call.method)
    const bounded = deadline === undefined ? key : Effect.timeoutOrElse(key, {
      duration: Math.max(0, deadline - clockOf(fiber)),
      orElse: () => Effect.fail(new CallTimeout({ service: call.service, method: call.method, timeoutMillis: call.timeoutMillis }))
    })
    return Effect.map(bounded, (key) => {
      const sealed = Sealing.sealRequest(key, call, plaintext)
      const answers = Sealing.sealedFormat(format, sealed.answers)
      sealing = true
      sealedCalls.set(call, answers)
      return { body: sealed.body, format: answers }
    })
  }

  const onIncoming = (incoming: Incoming): Effect.Effect<void> => {
    if (incoming._tag === "Lost") return endAll("the connection to the broker was lost")
    const correlationId = incoming.message.properties.correlationId
    const route = correlationId === undefined ? undefined : routes.get(correlationId)
    if (route === undefined) return Effect.void
    if (incoming._tag === "Returned") return route.returned()
    const sealed = sealing ? sealedCalls.get(route) : undefined
    const answer = answerOf(incoming.message, sealed)
    if (answer === undefined) {
      // no answer will come that this process can read: the call fails now, not at its deadline
      const contentType = incoming.message.properties.contentType ?? Formats.json.contentType
      const message = Formats.ofContentType(contentType) === undefined && !Sealing.isSealedContentType(contentType)
        ? `the reply's content-type "${contentType}" is not a format this process reads`
        : `the reply could not be read as ${contentType}`
      return Effect.andThen(
        Effect.logWarning(`a reply for ${correlationId} (${route.service}.${route.method}): ${message}`),
        route.end(new TransportError({ service: route.service, method: route.method, message }))
      )
    }
    if (sealed !== undefined) forgetKeyOn(broker, route, answer)
    const instance = incoming.message.properties.headers?.[wire.header.instance]
    return route.reply(answer, typeof instance === "string" ? instance : undefined)
  }
  // a unary call's answer settles it right where it arrives, in the transport's callback: no hop
  // through the reply stream, whose fiber has the other calls (streams, untyped calls)
  const take = (incoming: Incoming): boolean => {
    // the loss of the reply queue takes the long way: it ends stream calls as well
    if (incoming._tag === "Lost") return false
    const correlationId = incoming.message.properties.correlationId
    const route = correlationId === undefined ? undefined : routes.get(correlationId)
    if (!(route instanceof PendingCall.UnaryCall)) return false
    if (incoming._tag === "Returned") {
      route.returnedNow()
      return true
    }
    const sealed = sealing ? sealedCalls.get(route) : undefined
    const answer = answerOf(incoming.message, sealed)
    // a reply that cannot be read goes the long way, to be logged and fail its call
    if (answer === undefined) return false
    if (sealed !== undefined) forgetKeyOn(broker, route, answer)
    route.answer(answer)
    return true
  }
  const replies = yield* broker.replyQueue({ take })
  yield* replies.incoming.pipe(
    Stream.runForEach((incoming) =>
      Effect.catchCause(onIncoming(incoming), (cause) => Effect.logError("a reply could not be dispatched", cause))
    ),
    // the broker gave up reconnecting: no reply will ever come
    Effect.tapError((error) => endAll(error.message)),
    Effect.forkScoped
  )

  const newCorrelationId = () => `${correlationPrefix}${(nextCorrelation++).toString(36)}`

  /** a call is in flight: its deadline watched, the sweep armed, its request published */
  const send = (
    call: PendingCall.PendingCall,
    body: Body,
    headers: Readonly<Record<string, string>> | undefined,
    deadline: number | undefined,
    fiber: Fiber.Fiber<unknown, unknown>,
    format: Formats.BodyFormat
  ) => {
    call.begin(deadline)
    // the clock is read only when needed: most calls find the sweep armed, and many have no deadline
    if (!sweepArmed) armSweep(clockOf(fiber))
    return replies.publish(topology.rpcRequestExchange, topology.rpcRequestKey(call.service), body, {
      mandatory: true,
      type: call.method,
      correlationId: call.correlationId,
      contentType: format.contentType,
      headers,
      expiration: deadline === undefined ? undefined : Math.max(1, deadline - clockOf(fiber))
    })
  }

  const unary: Unary = (service, rpc, payload, request) =>
    Effect.withFiber((fiber) => {
      const codecs = Codecs.codecsOf(rpc)
      // as effect/rpc's client, the payload is made by its schema, its checks run; one it refuses is the
      // caller's InvalidPayload. Its bytes are made where it leaves the process, as effect/rpc encodes
      // (a value of the type that its encoding cannot take is a defect there, as in effect/rpc)
      const made = rpc.payloadSchema.makeOption(payload)
      if (Option.isNone(made)) return Codecs.refusedPayload(service, rpc, payload)
      const span = request.span
      const call = new PendingCall.UnaryCall(calls, service, rpc._tag, newCorrelationId(), codecs.decodeExit, request.timeoutMillis, sweeps)
      if (codecs.sealed) return sealedUnary(call, codecs, made.value, request, fiber)
      // the request as a value too, for an instance of this process on a broker that hands values over;
      // its bytes and headers are made where it leaves the process
      const body: LocalBody = {
        _tag: "LocalBody",
        value: new LocalRequest(rpc, made.value, request.context, span),
        bytes: () => codecs.format.encode(codecs.encodePayloadSync(made.value)),
        headers: () =>
          span === undefined
            ? request.headers()
            : { ...request.headers(), [wire.header.traceparent]: wire.traceparent(span.traceId, span.spanId, span.sampled) }
      }
      const deadline = request.deadline
      return call.run(fiber, send(call, body, undefined, deadline, fiber, codecs.format))
    })

  /**
   * a unary call to a sealed rpc: its bytes sealed for the service, never its value (even to an
   * instance of this process: the broker holds ciphertext only)
   */
  const sealedUnary = (
    call: PendingCall.UnaryCall,
    codecs: Codecs.Codecs,
    payload: unknown,
    request: Parameters<Unary>[3],
    fiber: Fiber.Fiber<unknown, unknown>
  ): Effect.Effect<unknown, unknown> => {
    const encoded = codecs.encodePayload(payload)
    // a value of the type that its encoding cannot take: a defect, as in effect/rpc
    if (Exit.isFailure(encoded)) return Effect.die(Cause.squash(encoded.cause))
    const span = request.span
    const headers = span === undefined
      ? request.headers()
      : { ...request.headers(), [wire.header.traceparent]: wire.traceparent(span.traceId, span.spanId, span.sampled) }
    return Effect.matchEffect(seal(call, codecs.format, codecs.format.encode(encoded.value), request.deadline, fiber), {
      onFailure: (error) => Effect.die(wire.serviceErrorDefect(error)),
      onSuccess: ({ body, format }) => call.run(fiber, send(call, body, headers, request.deadline, fiber, format))
    })
  }

  /** a protocol to one service; its requests in their rpcs' formats (a contract's), JSON without one */
  const makeProtocol = (service: string, group?: Requests) =>
    RpcClient.Protocol.make(Effect.fnUntraced(function*(write) {
      const protocol: PendingCall.Protocol = { write, pending: new Map(), scope }

      const sendRequest = (clientId: number, request: Extract<FromClientEncoded, { _tag: "Request" }>) =>
        Effect.withFiber((fiber) => {
          const headers: Record<string, string> = {}
          for (const [key, value] of request.headers) headers[key] = value
          if (request.traceId !== undefined && request.spanId !== undefined) {
            headers[wire.header.traceparent] = wire.traceparent(request.traceId, request.spanId, request.sampled ?? true)
          }
          const deadline = CallContext.deadlineOf(headers[CallContext.headerNames.context])
          const rpc = group?.requests.get(request.tag) as Rpc.AnyWithProps | undefined
          const codecs = rpc === undefined ? undefined : Codecs.codecsOf(rpc)
          const format = codecs === undefined ? Formats.json : codecs.format
          const call = new PendingCall.ProtocolCall(
            calls,
            protocol,
            service,
            request.tag,
            newCorrelationId(),
            request.id as RequestId,
            clientId,
            deadline === undefined ? 0 : Math.max(0, deadline - clockOf(fiber)),
            sweeps
          )
          const unsent = (error: BrokerError) => Effect.fail(transportError(call.unsent(error).message, error))
          if (codecs?.sealed === true) {
            return Effect.matchEffect(seal(call, format, format.encode(request.payload), deadline, fiber), {
              onFailure: (error) => call.end(error),
              onSuccess: (sealed) => Effect.catch(send(call, sealed.body, headers, deadline, fiber, sealed.format), unsent)
            })
          }
          return Effect.catch(send(call, format.encode(request.payload), headers, deadline, fiber, format), unsent)
        })

      const sendControl = (requestId: RequestId, tag: "Interrupt" | "Ack") => {
        const call = protocol.pending.get(requestId)
        if (call === undefined) return Effect.void
        if (tag === "Interrupt") return call.cancel()
        const key = call.instance !== undefined
          ? topology.controlInstanceKey(call.instance)
          : topology.controlServiceKey(service)
        return publishControl("Ack", key, call.correlationId)
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

  return yield* makeTransportWith(id, makeProtocol, { enforcesDeadlines: true, unary })
})

/**
 * A `Transport` whose clients speak effect/rpc over the given protocols: for each service one
 * protocol for untyped calls and one client per contract version (two versions of one contract get
 * two clients), each made once, in the current scope; a contract's protocol is given its group (whose
 * rpcs say their wire format), the untyped one none. The gateways' remote transports use it too.
 *
 * @since 0.1.0
 */
export const makeTransportWith = <E, R>(
  id: string,
  protocolFor: (
    service: string,
    group?: Requests
  ) => Effect.Effect<RpcClient.Protocol["Service"], E, R | Scope.Scope>,
  options?: {
    /** the protocols fail calls past their deadline themselves (default false) */
    readonly enforcesDeadlines?: boolean | undefined
    /** unary calls without effect/rpc's client (none by default) */
    readonly unary?: Unary | undefined
  }
): Effect.Effect<Transport["Service"], never, Exclude<R, Scope.Scope> | Scope.Scope> =>
  Effect.gen(function*() {
    const scope = yield* Effect.scope
    const context = yield* Effect.context<Exclude<R, Scope.Scope>>()
    const made = <A>(effect: Effect.Effect<A, E, R | Scope.Scope>): Effect.Effect<A> =>
      effect.pipe(Effect.provideContext(context as Context.Context<R>), Scope.provide(scope), Effect.orDie)
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
        const versions = byGroup
        return made(
          Effect.flatMap(protocolFor(service, group), (protocol) =>
            RpcClient.make(group, { spanPrefix: service }).pipe(Effect.provideService(RpcClient.Protocol, protocol)))
        ).pipe(
          Effect.tap((rpc) => Effect.sync(() => versions.set(group, rpc)))
        ) as Effect.Effect<RpcClient.RpcClient<Rpcs, RpcClientError.RpcClientError>>
      })
    const protocols = new Map<string, RpcClient.Protocol["Service"]>()
    const protocol = (service: string) =>
      Effect.suspend(() => {
        const cached = protocols.get(service)
        if (cached !== undefined) return Effect.succeed(cached)
        return made(protocolFor(service)).pipe(Effect.tap((p) => Effect.sync(() => protocols.set(service, p))))
      })
    return Transport.of({
      id,
      client,
      protocol,
      enforcesDeadlines: options?.enforcesDeadlines === true,
      unary: options?.unary
    })
  })

/** a call that has waited this long without a word may be one nobody serves */
const noConsumerCheckMillis = 1000

/**
 * The transport as a Layer.
 *
 * @since 0.1.0
 */
export const layer: Layer.Layer<Transport, BrokerError, Broker> = Layer.effect(Transport, make)
