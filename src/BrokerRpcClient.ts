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
 * Unary calls (the hot path) skip `RpcClient`: `Transport.unary` encodes the payload and decodes the
 * reply's Exit with the rpc's own schemas, in effect/rpc's wire format all the same. Streams, untyped
 * calls and rpcs with middleware go through `RpcClient`.
 *
 * @since 0.1.0
 */
import { Cause, Clock, Context, Effect, Exit, Layer, Option, Schema, Scope, Stream } from "effect"
import type { Rpc, RpcGroup } from "effect/rpc"
import { RpcClient, RpcClientError } from "effect/rpc"
import type { FromClientEncoded, FromServerEncoded, RequestId } from "effect/rpc/RpcMessage"
import type { Tracer } from "effect"
import type { BrokerError, Incoming } from "./Broker.ts"
import { Broker } from "./Broker.ts"
import * as CallContext from "./CallContext.ts"
import * as Codecs from "./internal/codecs.ts"
import * as Deadlines from "./internal/deadlines.ts"
import * as topology from "./internal/topology.ts"
import * as wire from "./internal/wire.ts"
import type { ServiceError } from "./ServiceError.ts"
import { CallTimeout, RemoteDefect, ServiceNotFound, TransportError } from "./ServiceError.ts"


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
    /** the call's headers (its context) */
    readonly headers: Readonly<Record<string, string>>
    /** epoch millis after which the call fails with `CallTimeout` (its timeout is `timeoutMillis`) */
    readonly deadline: number | undefined
    readonly timeoutMillis: number
    /** the caller's client span, sent as `traceparent` */
    readonly span: Tracer.AnySpan | undefined
  }
) => Effect.Effect<unknown, unknown>

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
  const routes = new Map<string, Route>()
  // correlation ids are unique beyond this process (a random prefix): instances know a call by it
  // alone, and the request needs no header naming its client
  const correlationPrefix = id.replaceAll("-", "").slice(0, 12)
  let nextCorrelation = 0
  // a call past its deadline is answered here, with CallTimeout, as a returned one is with
  // ServiceNotFound: one watcher for every call rather than a timer and a race of fibers per call
  const deadlines = yield* Deadlines.make

  // No reply to a call in flight can come any more: each fails, deadline or not. The routes are read
  // when the reply queue's `Lost` is dispatched: a call made after the loss cannot be among them, as
  // its publish waits for the reconnection, and that takes round trips the dispatch does not
  const endAll = (reason: string): Effect.Effect<void> =>
    Effect.suspend(() =>
      Effect.forEach(
        Array.from(routes.values()),
        (route) =>
          route.end(
            new TransportError({
              service: route.service,
              method: route.method,
              reason: "OutcomeUnknown",
              message: `${reason} while ${route.service}.${route.method} was in flight: its outcome is unknown (the request may or may not have run)`
            })
          ),
        { discard: true }
      )
    )

  // calls that waited a whole sweep interval without a word, by service, are checked against their
  // service's queue: requests waiting there and no consumer end them with ServiceNotFound NoConsumer.
  // The sweep runs on the deadline watcher, armed by the first call after it stopped; a call only
  // notes the sweep count: nothing per call on the happy path but a number and a flag
  let sweeps = 0
  let sweepArmed = false
  const checkService = (service: string, calls: ReadonlyArray<Route>): Effect.Effect<void> =>
    Effect.matchEffect(broker.checkQueue(topology.rpcQueue(service)), {
      // a queue gone makes its requests return; a connection gone makes the reply queue `Lost`
      onFailure: () => Effect.void,
      // no ready request: ours were taken (an instance draining still runs them), or expired
      onSuccess: (queue) =>
        queue.consumers > 0 || queue.messages === 0 ? Effect.void : Effect.forEach(
          calls,
          (call) => call.waiting() ? call.end(new ServiceNotFound({ service, reason: "NoConsumer" })) : Effect.void,
          { discard: true }
        )
    })
  const sweep: Effect.Effect<void> = Effect.clockWith((clock) =>
    Effect.suspend(() => {
      sweeps++
      sweepArmed = false
      let waiting: Map<string, Array<Route>> | undefined
      for (const route of routes.values()) {
        if (route.sweep > sweeps - 2 || !route.waiting()) continue
        waiting ??= new Map()
        const calls = waiting.get(route.service)
        if (calls === undefined) waiting.set(route.service, [route])
        else calls.push(route)
      }
      if (routes.size > 0) armSweep(clock.currentTimeMillisUnsafe())
      if (waiting === undefined) return Effect.void
      const services = waiting
      return Effect.asVoid(Effect.forkIn(
        Effect.forEach(services, ([service, calls]) => checkService(service, calls), { discard: true }),
        scope
      ))
    })
  )
  const armSweep = (now: number): void => {
    sweepArmed = true
    deadlines.add(now + noConsumerCheckMillis, sweep)
  }

  const onIncoming = (incoming: Incoming): Effect.Effect<void> => {
    if (incoming._tag === "Lost") return endAll("the connection to the broker was lost")
    const correlationId = incoming.message.properties.correlationId
    if (correlationId === undefined) return Effect.void
    const route = routes.get(correlationId)
    if (route === undefined) return Effect.void
    if (incoming._tag === "Returned") {
      routes.delete(correlationId)
      return route.onReturned()
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
  // a unary call's answer settles it right where it arrives, in the transport's callback: no hop
  // through the reply stream, whose fiber has the other routes (streams, untyped calls)
  const take = (incoming: Incoming): boolean => {
    // the loss of the reply queue takes the long way: it ends stream calls as well
    if (incoming._tag === "Lost") return false
    const correlationId = incoming.message.properties.correlationId
    const route = correlationId === undefined ? undefined : routes.get(correlationId)
    if (!(route instanceof UnaryCall)) return false
    if (incoming._tag === "Returned") {
      route.returned()
      return true
    }
    const body = wire.decodeJson(incoming.message.body)
    // a reply that is not JSON goes the long way, to be logged
    if (Option.isNone(body) || typeof body.value !== "object" || body.value === null) return false
    route.replied(body.value as FromServerEncoded)
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

  const publishControl = (tag: "Interrupt" | "Ack", key: string, correlationId: string) => {
    const control: wire.Control = { _tag: tag, client: id, requestId: correlationId }
    return Effect.ignore(broker.publish(topology.controlExchange, key, wire.encodeJson(control)))
  }

  const newCorrelationId = () => `${correlationPrefix}${(nextCorrelation++).toString(36)}`

  const unary: Unary = (service, rpc, payload, request) =>
    Effect.withFiber((fiber) => {
      const { encodePayload, decodeExit } = Codecs.codecsOf(rpc)
      // as effect/rpc's client: the payload is made by its schema (a bad one is a defect here); the
      // encode checks it, so making it needs not check it first
      const encoded = encodePayload(rpc.payloadSchema.make(payload, { disableChecks: true }))
      if (Exit.isFailure(encoded)) return Effect.die(Cause.squash(encoded.cause))
      const headers: Record<string, string> = { ...request.headers }
      const span = request.span
      if (span !== undefined) headers[wire.header.traceparent] = wire.traceparent(span.traceId, span.spanId, span.sampled)
      const now = fiber.getRef(Clock.Clock).currentTimeMillisUnsafe()
      const deadline = request.deadline
      const call = new UnaryCall(service, rpc._tag, newCorrelationId(), decodeExit, routes, deadlines, request.timeoutMillis, sweeps)
      routes.set(call.correlationId, call)
      if (!sweepArmed) armSweep(now)
      if (deadline !== undefined) {
        call.timer = deadlines.add(deadline, Effect.suspend(() => call.expire(publishControl)))
      }
      const publish = replies.publish(topology.rpcRequestExchange, topology.rpcRequestKey(service), wire.encodeJson(encoded.value), {
        mandatory: true,
        type: rpc._tag,
        correlationId: call.correlationId,
        contentType: wire.contentType,
        headers,
        expiration: deadline === undefined ? undefined : Math.max(1, deadline - now)
      })
      return Effect.flatMap(
        Effect.catch(publish, (error) => {
          call.forget()
          return Effect.die(wire.serviceErrorDefect(new TransportError({ service, method: rpc._tag, message: error.message })))
        }),
        () => call.await(publishControl)
      )
    })

  const makeProtocol = (service: string) =>
    RpcClient.Protocol.make(Effect.fnUntraced(function*(write) {
      const pending = new Map<RequestId, Call>()
      const owner: Owner = {
        service,
        write,
        pending,
        routes,
        scope,
        deadlines,
        interrupt: (call) => publishControl("Interrupt", topology.controlServiceKey(service), call.correlationId)
      }

      const sendRequest = (clientId: number, request: Extract<FromClientEncoded, { _tag: "Request" }>) =>
        Effect.withFiber((fiber) => {
          const correlationId = newCorrelationId()
          const requestId = request.id as RequestId
          const call = new Call(owner, correlationId, requestId, clientId, request.tag, sweeps)
          pending.set(requestId, call)
          routes.set(correlationId, call)
          if (!sweepArmed) armSweep(fiber.getRef(Clock.Clock).currentTimeMillisUnsafe())
          const headers: Record<string, string> = {}
          for (const [key, value] of request.headers) headers[key] = value
          if (request.traceId !== undefined && request.spanId !== undefined) {
            headers[wire.header.traceparent] = wire.traceparent(request.traceId, request.spanId, request.sampled ?? true)
          }
          const deadline = CallContext.deadlineOf(headers[CallContext.headerNames.context]) ?? Number.NaN
          let expiration: number | undefined
          if (Number.isFinite(deadline)) {
            const now = fiber.getRef(Clock.Clock).currentTimeMillisUnsafe()
            expiration = Math.max(1, deadline - now)
            call.timer = deadlines.add(deadline, call.timeout(Math.max(0, deadline - now)))
          }
          return Effect.catch(
            replies.publish(topology.rpcRequestExchange, topology.rpcRequestKey(service), wire.encodeJson(request.payload), {
              mandatory: true,
              type: request.tag,
              correlationId,
              contentType: wire.contentType,
              headers,
              expiration
            }),
            (error) => {
              call.forget()
              return Effect.fail(transportError(error.message, error))
            }
          )
        })

      const sendControl = (requestId: RequestId, tag: "Interrupt" | "Ack") => {
        const entry = pending.get(requestId)
        if (entry === undefined) return Effect.void
        if (tag === "Interrupt") entry.forget()
        const key = tag === "Ack" && entry.instance !== undefined
          ? topology.controlInstanceKey(entry.instance)
          : topology.controlServiceKey(service)
        return publishControl(tag, key, entry.correlationId)
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
 * two clients), each made once, in the current scope. The gateways' remote transports use it too.
 *
 * @since 0.1.0
 */
export const makeTransportWith = <E, R>(
  id: string,
  protocolFor: (service: string) => Effect.Effect<RpcClient.Protocol["Service"], E, R | Scope.Scope>,
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
          Effect.flatMap(protocolFor(service), (protocol) =>
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

// ---- internal ----

/** what the calls to one service share */
interface Owner {
  readonly service: string
  readonly write: (clientId: number, message: FromServerEncoded) => Effect.Effect<void>
  /** calls by effect/rpc's request id */
  readonly pending: Map<RequestId, Call>
  /** every call of the transport, by correlation id */
  readonly routes: Map<string, Route>
  readonly scope: Scope.Scope
  readonly deadlines: Deadlines.Deadlines
  /** asks the instance running a call to stop it */
  readonly interrupt: (call: Call) => Effect.Effect<void>
}

/** a call that has waited this long without a word may be one nobody serves */
const noConsumerCheckMillis = 1000

/** what the reply dispatcher knows of a call in flight */
interface Route {
  readonly service: string
  readonly method: string
  /** the client's sweep count when the call was made: how long it has waited, without a clock */
  readonly sweep: number
  /** nothing has come for the call yet */
  waiting(): boolean
  onReply(message: FromServerEncoded, instance: string | undefined): Effect.Effect<void>
  onReturned(): Effect.Effect<void>
  /** ends the call with one of the mesh's errors, if it has not ended */
  end(error: ServiceError): Effect.Effect<void>
}

type Control = (tag: "Interrupt" | "Ack", key: string, correlationId: string) => Effect.Effect<void>

/**
 * One unary call without effect/rpc's client: its reply (or its return, or its deadline) resumes the
 * caller, whichever comes first; a caller that goes away interrupts the instance running it.
 */
class UnaryCall implements Route {
  timer: Deadlines.Entry | undefined = undefined
  /** set when the call ended before its caller waited for it */
  private result: Effect.Effect<unknown, unknown> | undefined = undefined
  private resume: ((result: Effect.Effect<unknown, unknown>) => void) | undefined = undefined
  private done = false
  readonly service: string
  readonly method: string
  readonly correlationId: string
  private readonly decode: Codecs.Codecs["decodeExit"]
  private readonly routes: Map<string, Route>
  private readonly deadlines: Deadlines.Deadlines
  private readonly timeoutMillis: number
  readonly sweep: number
  constructor(
    service: string,
    method: string,
    correlationId: string,
    decode: Codecs.Codecs["decodeExit"],
    routes: Map<string, Route>,
    deadlines: Deadlines.Deadlines,
    timeoutMillis: number,
    sweep: number
  ) {
    this.service = service
    this.method = method
    this.correlationId = correlationId
    this.decode = decode
    this.routes = routes
    this.deadlines = deadlines
    this.timeoutMillis = timeoutMillis
    this.sweep = sweep
  }

  waiting(): boolean {
    return !this.done
  }

  forget(): void {
    this.done = true
    this.routes.delete(this.correlationId)
    if (this.timer !== undefined) this.deadlines.remove(this.timer)
  }

  private settle(result: Effect.Effect<unknown, unknown>): void {
    if (this.done) return
    this.forget()
    if (this.resume === undefined) this.result = result
    else this.resume(result)
  }

  replied(message: FromServerEncoded): void {
    if (message._tag !== "Exit") return
    const exit = this.decode(message.exit)
    this.settle(
      Exit.isSuccess(exit)
        ? exit.value
        : Effect.die(wire.serviceErrorDefect(
          new RemoteDefect({ service: this.service, method: this.method, message: "the reply could not be decoded" })
        ))
    )
  }

  /** the broker returned the request: no instance of the service is there */
  returned(): void {
    this.settle(Effect.die(wire.serviceErrorDefect(new ServiceNotFound({ service: this.service }))))
  }

  end(error: ServiceError): Effect.Effect<void> {
    return Effect.sync(() => this.settle(Effect.die(wire.serviceErrorDefect(error))))
  }

  onReply(message: FromServerEncoded): Effect.Effect<void> {
    return Effect.sync(() => this.replied(message))
  }

  onReturned(): Effect.Effect<void> {
    return Effect.sync(() => this.returned())
  }

  /** the deadline passed first: the caller gets CallTimeout, the instance an interrupt */
  expire(control: Control): Effect.Effect<void> {
    if (this.done) return Effect.void
    this.settle(Effect.die(wire.serviceErrorDefect(
      new CallTimeout({ service: this.service, method: this.method, timeoutMillis: this.timeoutMillis })
    )))
    return control("Interrupt", topology.controlServiceKey(this.service), this.correlationId)
  }

  await(control: Control): Effect.Effect<unknown, unknown> {
    return Effect.suspend(() => {
      if (this.result !== undefined) return this.result
      // the reply resumes the caller right where it is settled (effect's callback resumes its fiber
      // synchronously), in the transport's callback
      return Effect.callback<unknown, unknown>((resume) => {
        this.resume = resume
        return Effect.suspend(() => {
          if (this.done) return Effect.void
          this.forget()
          return control("Interrupt", topology.controlServiceKey(this.service), this.correlationId)
        })
      })
    })
  }
}

/** one call in flight: found by correlation id when replies come, by request id for interrupts and acks */
class Call implements Route {
  /** the instance running the call, once a reply said so: stream acks go to it */
  instance: string | undefined = undefined
  /** the call's deadline, while it is watched */
  timer: Deadlines.Entry | undefined = undefined
  readonly owner: Owner
  readonly correlationId: string
  readonly requestId: RequestId
  readonly clientId: number
  readonly method: string
  readonly sweep: number
  /** a reply (a chunk or the Exit) came */
  private replied = false
  constructor(owner: Owner, correlationId: string, requestId: RequestId, clientId: number, method: string, sweep: number) {
    this.owner = owner
    this.correlationId = correlationId
    this.requestId = requestId
    this.clientId = clientId
    this.method = method
    this.sweep = sweep
  }

  get service(): string {
    return this.owner.service
  }

  waiting(): boolean {
    return !this.replied && this.owner.pending.get(this.requestId) === this
  }

  /** the call is over: no reply is routed to it now, its deadline is not watched */
  forget(): void {
    this.owner.pending.delete(this.requestId)
    this.owner.routes.delete(this.correlationId)
    if (this.timer !== undefined) this.owner.deadlines.remove(this.timer)
  }

  finish(message: FromServerEncoded): Effect.Effect<void> {
    if (message._tag === "Exit") this.forget()
    // effect/rpc's write picks its target (the client's reader, or a buffer until the reader runs) when
    // it is called: it must be called when the write runs, not when it is built (a forked chunk write
    // built before the reader started would go to a buffer already replayed, and be lost)
    return Effect.suspend(() => this.owner.write(this.clientId, { ...message, requestId: this.requestId } as FromServerEncoded))
  }

  onReply(message: FromServerEncoded, instance: string | undefined): Effect.Effect<void> {
    this.replied = true
    if (instance !== undefined) this.instance = instance
    // a chunk waits for its consumer to pull; it must not hold up other calls' replies.
    // Order is kept: the next chunk is only sent after this one is written and acked
    return message._tag === "Chunk" ? Effect.asVoid(Effect.forkIn(this.finish(message), this.owner.scope)) : this.finish(message)
  }

  onReturned(): Effect.Effect<void> {
    return this.fail(new ServiceNotFound({ service: this.owner.service }))
  }

  /** what happens when the deadline passes first: the caller gets CallTimeout, the instance an interrupt */
  timeout(timeoutMillis: number): Effect.Effect<void> {
    return Effect.suspend(() => {
      if (this.owner.pending.get(this.requestId) !== this) return Effect.void
      return Effect.andThen(
        this.fail(new CallTimeout({ service: this.owner.service, method: this.method, timeoutMillis })),
        this.owner.interrupt(this)
      )
    })
  }

  end(error: ServiceError): Effect.Effect<void> {
    return Effect.suspend(() => this.owner.pending.get(this.requestId) === this ? this.fail(error) : Effect.void)
  }

  private fail(error: ServiceError): Effect.Effect<void> {
    return this.finish({ _tag: "Exit", requestId: String(this.requestId), exit: wire.serviceErrorExit(error) })
  }
}

/**
 * The transport as a Layer.
 *
 * @since 0.1.0
 */
export const layer: Layer.Layer<Transport, BrokerError, Broker> = Layer.effect(Transport, make)
