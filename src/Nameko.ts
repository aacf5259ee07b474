/**
 * Nameko's wire, per service and per client: a polyglot mesh in which Python Nameko services and
 * effect-mesh services call each other and hear each other's events on one RabbitMQ, so that a team
 * moves from Nameko one service at a time.
 *
 * - `serve`: an entrypoint of a service (`Service.make`'s `entrypoints`) that also takes Nameko's
 *   requests for the contract's rpcs (queue `rpc-<service>` on the `nameko-rpc` exchange), beside the
 *   mesh's own wire. Nameko's positional arguments go to payload fields as `args` declares.
 * - `client`: a typed client of a Nameko service (or of an effect-mesh service that `serve`s).
 * - `dispatch` and `handle`: events on Nameko's `<source>.events` exchanges, with Nameko's queue names
 *   for `pool`, `broadcast` and `singleton` handlers.
 *
 * The call context crosses both ways: `nameko.call_id_stack`, `nameko.user_id` and every other
 * `nameko.<key>` (`auth_token`, `language`, ...) become the `CallContext`'s stack, user id and entries,
 * and back. Nameko speaks AMQP only: on any broker but `AmqpBroker` these fail with `NamekoError`
 * `UnsupportedBroker`.
 *
 * ```ts
 * const CalculatorLive = Service.make(Calculator, {
 *   handlers,
 *   entrypoints: [Nameko.serve(Calculator, handlers, { args: { add: ["a", "b"] } })]
 * })
 * ```
 *
 * @since 0.1.0
 */
import { Cause, Clock, Context, Duration, Effect, Exit, Layer, Option, Schema, SchemaIssue, Stream } from "effect"
import type { Scope } from "effect"
import { Headers } from "effect/http"
import type { RpcGroup, RpcSchema } from "effect/rpc"
import { Rpc } from "effect/rpc"
import { RequestId } from "effect/rpc/RpcMessage"
import type { BrokerError, Delivery, Message } from "./Broker.ts"
import { Broker } from "./Broker.ts"
import * as CallContext from "./CallContext.ts"
import type * as Event from "./Event.ts"
import { EventError } from "./Event.ts"
import * as Deadlines from "./internal/deadlines.ts"
import * as Metrics from "./internal/metrics.ts"
import * as wire from "./internal/namekoWire.ts"
import * as PendingCall from "./internal/pendingCall.ts"
import * as Runner from "./internal/runner.ts"
import * as meshWire from "./internal/wire.ts"
import * as MessageSize from "./internal/messageSize.ts"
import * as Sealed from "./Sealed.ts"
import * as Service from "./Service.ts"
import type { ServiceContract } from "./ServiceContract.ts"
import type { ServiceError } from "./ServiceError.ts"
import { InvalidPayload, MethodNotFound, RemoteDefect } from "./ServiceError.ts"

// ---- models ----

/**
 * Why Nameko's wire cannot be used: `UnsupportedBroker` (Nameko speaks AMQP: it needs `AmqpBroker`).
 *
 * @since 0.1.0
 */
export class NamekoError extends Schema.TaggedError<NamekoError>()("NamekoError", {
  reason: Schema.Literals(["UnsupportedBroker"]),
  message: Schema.String
}) {}

/**
 * A Nameko error, as `nameko.exceptions.serialize` makes it: Python raises `exc_path`
 * `nameko.exceptions.<Name>` as that class, anything else as a `RemoteError(exc_type, value)`.
 *
 * @since 0.1.0
 */
export interface RemoteErrorObject {
  readonly exc_type: string
  readonly exc_path: string
  readonly exc_args: ReadonlyArray<unknown>
  readonly value: string
}

/**
 * A Nameko reply: its result, or its error.
 *
 * @since 0.1.0
 */
export interface Reply {
  readonly result: unknown
  readonly error: RemoteErrorObject | undefined
}

/**
 * The rpcs Nameko's wire carries: unary ones (Nameko has no streams).
 *
 * @since 0.1.0
 */
export type Unary<Rpcs extends Rpc.Any> = Rpcs extends Rpc.Any
  ? [Rpc.SuccessSchema<Rpcs>] extends [RpcSchema.Stream<infer _A, infer _E>] ? never : Rpcs
  : never

/**
 * The positional arguments of each method, in order: the payload field each one fills. A method not
 * listed takes keyword arguments only. Nameko's `add(1, 2)` is `{ add: ["a", "b"] }` for a payload
 * `{ a, b }`.
 *
 * @since 0.1.0
 */
export type Signatures<Rpcs extends Rpc.Any> = {
  readonly [R in Unary<Rpcs> as R["_tag"]]?: ReadonlyArray<keyof Rpc.Payload<R> & string>
}

/**
 * Options of `serve`.
 *
 * @since 0.1.0
 */
export interface ServeOptions<Rpcs extends Rpc.Any> {
  /** the positional arguments of each method */
  readonly args?: Signatures<Rpcs> | undefined
  /** Nameko requests one instance runs at once (the queue's prefetch; default 10, Nameko's max_workers) */
  readonly concurrency?: number | undefined
  /** how long a stopping instance waits for running requests before it puts them back (default 10 seconds) */
  readonly drainTimeout?: Duration.Input | undefined
  /** the largest request body taken, in bytes (default 1 MiB); a larger one is a `MalformedRequest` */
  readonly maxMessageSize?: number | undefined
}

/**
 * The client method of one rpc.
 *
 * @since 0.1.0
 */
export type Method<R extends Rpc.Any> = (
  payload: Rpc.PayloadConstructor<R>,
  options?: { readonly timeout?: Duration.Input | undefined }
) => Effect.Effect<Rpc.Success<R>, Rpc.Error<R> | ServiceError>

/**
 * A client of a Nameko service: one method per unary rpc of the contract.
 *
 * @since 0.1.0
 */
export type Client<Rpcs extends Rpc.Any> = {
  readonly [R in Unary<Rpcs> as R["_tag"]]: Method<R>
}

/**
 * Options of `client`.
 *
 * @since 0.1.0
 */
export interface ClientOptions<Rpcs extends Rpc.Any> {
  /** the positional arguments of each method; other fields go as keyword arguments */
  readonly args?: Signatures<Rpcs> | undefined
  /** the default timeout of every call (none by default, as Nameko's) */
  readonly timeout?: Duration.Input | undefined
}

/**
 * A process's connection to Nameko's rpc exchange: one reply queue, as a Nameko service has.
 *
 * @since 0.1.0
 */
export class Transport extends Context.Service<Transport, {
  /** the routing key of the reply queue, sent as `reply_to` */
  readonly replyTo: string
  /** publishes a request and waits for its reply */
  readonly call: (
    service: string,
    method: string,
    body: Uint8Array,
    context: CallContext.CallContext,
    timeoutMillis: number | undefined
  ) => Effect.Effect<Reply, ServiceError>
}>()("effect-mesh/Nameko/Transport") {}

// ---- constructors ----

/**
 * An entrypoint that serves a contract's unary rpcs to Nameko callers, with the same handlers the
 * service serves on the mesh's wire. Each request runs on the instance runner (its scope, span,
 * `CallContext` from Nameko's headers) and is acked once its reply is published; a stopping instance
 * puts back what it could not finish, for another instance (Python or TypeScript) to answer. Bad
 * requests get Nameko's own errors (`MethodNotFound`, `MalformedRequest`, `IncorrectSignature`) and
 * the service goes on.
 *
 * @since 0.1.0
 */
export const serve = <
  const Name extends string,
  Rpcs extends Rpc.Any,
  const Handlers extends RpcGroup.HandlersFrom<Rpcs>
>(
  contract: ServiceContract<Name, Rpcs>,
  handlers: Handlers,
  options?: ServeOptions<Rpcs>
): Service.Entrypoint<BrokerError | NamekoError, Broker | RpcGroup.HandlersServices<Rpcs, Handlers>> =>
  Service.entrypoint("nameko-rpc", (instance) =>
    Layer.effectDiscard(serveRpc(
      contract.name,
      contract.group as unknown as RpcGroup.RpcGroup<Rpc.Any>,
      handlers as unknown as Record<string, RawHandler>,
      (options?.args ?? {}) as wire.Signatures,
      options,
      instance
    ))) as Service.Entrypoint<BrokerError | NamekoError, Broker | RpcGroup.HandlersServices<Rpcs, Handlers>>

/**
 * Opens the reply queue (`rpc.reply-<name>-<uuid>`, bound on `nameko-rpc`) and dispatches replies.
 *
 * @since 0.1.0
 */
export const makeTransport = (name = "effect_mesh"): Effect.Effect<Transport["Service"], BrokerError | NamekoError, Broker | Scope.Scope> =>
  Effect.gen(function*() {
    const broker = yield* amqpBroker
    yield* broker.declareExchange(wire.rpcExchange, "topic", { durable: true })
    const id = crypto.randomUUID()
    const queue = yield* broker.declareQueue(wire.replyQueue(name, id), { autoDelete: true, expires: wire.replyQueueExpires })
    yield* broker.bindQueue(queue, wire.rpcExchange, id)
    const routes = new Map<string, PendingCall.PendingCall>()
    const calls: PendingCall.Calls = { routes, deadlines: yield* Deadlines.make, interrupt: () => Effect.void }
    const answer = (message: Message): boolean => {
      const route = message.properties.correlationId === undefined ? undefined : routes.get(message.properties.correlationId)
      if (!(route instanceof PendingCall.UnaryCall)) return false
      const reply = wire.readReply(message.body)
      route.answer(reply === undefined ? Exit.die(meshWire.serviceErrorDefect(new RemoteDefect({
        service: route.service,
        method: route.method,
        message: "the reply is not Nameko's"
      }))) : Exit.succeed(reply))
      return true
    }
    const consumer = yield* broker.consume(queue, {
      prefetch: 256,
      tag: `nameko-replies.${id}`,
      take: (delivery) => {
        answer(delivery)
        Effect.runFork(delivery.ack)
        return true
      }
    })
    // Nameko's replies come on a queue of its own, which says nothing when the connection goes: a reply
    // queue of the broker's does (`Lost`), and then no reply to a call in flight can come any more
    const watch = yield* broker.replyQueue()
    yield* watch.incoming.pipe(
      Stream.runForEach((incoming) => incoming._tag === "Lost" ? PendingCall.endAll(routes, "the connection to the broker was lost") : Effect.void),
      Effect.tapError((error) => PendingCall.endAll(routes, error.message)),
      Effect.forkScoped
    )
    // a broker that hands every delivery to the stream (none that speaks AMQP today) goes here
    yield* consumer.deliveries.pipe(
      Stream.runForEach((delivery) => Effect.andThen(Effect.sync(() => answer(delivery)), delivery.ack)),
      Effect.forkScoped
    )
    const prefix = id.replaceAll("-", "").slice(0, 12)
    let next = 0
    const call: Transport["Service"]["call"] = (service, method, body, context, timeoutMillis) =>
      Effect.withFiber((fiber) => {
        const correlationId = `${prefix}${(next++).toString(36)}`
        const now = fiber.getRef(Clock.Clock).currentTimeMillisUnsafe()
        // the nearer of the call's own timeout and its caller's deadline
        const deadline = timeoutMillis === undefined ? context.deadline : Math.min(now + timeoutMillis, context.deadline ?? Infinity)
        // every answer comes as an Exit made here: the call's decoder of effect/rpc's encoding is never used
        const pending = new PendingCall.UnaryCall(
          calls,
          service,
          method,
          correlationId,
          () => Exit.die("a Nameko reply is read by the transport"),
          deadline === undefined ? 0 : Math.max(0, deadline - now),
          0
        )
        pending.begin(deadline)
        const publish = broker.publish(wire.rpcExchange, wire.rpcRoutingKey(service, method), body, {
          mandatory: true,
          confirm: true,
          persistent: true,
          replyTo: id,
          correlationId,
          contentType: meshWire.contentType,
          headers: wire.headersOf(context, "effect_mesh_client", correlationId),
          expiration: deadline === undefined ? undefined : Math.max(1, deadline - now)
        }).pipe(
          // an unroutable request: no queue is bound for the service (Nameko's UnknownService)
          Effect.catchIf((error) => error.reason === "Unroutable", () => Effect.sync(() => pending.returnedNow()))
        )
        return Effect.catchDefect(
          pending.run(fiber, publish) as Effect.Effect<Reply, never>,
          (defect) =>
            Effect.fail(Option.getOrElse(
              meshWire.serviceErrorOfDefect(defect),
              () => new RemoteDefect({ service, method, message: String(defect) })
            ))
        )
      })
    return Transport.of({ replyTo: id, call })
  })

/**
 * The transport as a Layer.
 *
 * @since 0.1.0
 */
export const layerClient: Layer.Layer<Transport, BrokerError | NamekoError, Broker> = Layer.effect(Transport, makeTransport())

/**
 * A typed client of a service on Nameko's wire. A Nameko `RemoteError` whose `exc_type` is the tag of
 * an error the rpc declares becomes that error (with its fields, when an effect-mesh service sent
 * them; else from Nameko's `value` as `message`); Nameko's `MethodNotFound` is the mesh's
 * `MethodNotFound`, its `IncorrectSignature` and `MalformedRequest` are `InvalidPayload`; anything
 * else is `RemoteDefect`. A service no queue is bound for fails at once with `ServiceNotFound`.
 *
 * @since 0.1.0
 */
export const client = <const Name extends string, Rpcs extends Rpc.Any>(
  contract: ServiceContract<Name, Rpcs>,
  options?: ClientOptions<Rpcs>
): Effect.Effect<Client<Rpcs>, never, Transport> =>
  Effect.map(Transport, (transport: Transport["Service"]) => {
    const service = contract.name
    const signatures = (options?.args ?? {}) as wire.Signatures
    const clientTimeout = toMillis(options?.timeout)
    const methods: Record<string, unknown> = {}
    for (const [tag, definition] of contract.group.requests) {
      const rpc = definition as unknown as Rpc.AnyWithProps
      if (!wire.servable(rpc)) continue
      const decodeSuccess = wire.jsonDecoder(rpc.successSchema)
      const decodeError = wire.jsonDecoder(rpc.errorSchema)
      methods[tag] = (payload: unknown, call?: { readonly timeout?: Duration.Input | undefined }) =>
        Effect.flatMap(CallContext.CallContext, (context: CallContext.CallContext) => {
          const body = wire.writeRequest(rpc, signatures[tag] ?? [], payload)
          if (Exit.isFailure(body)) {
            return Effect.fail(new InvalidPayload({ service, method: tag, issue: String(Cause.squash(body.cause)) }))
          }
          return Effect.flatMap(
            transport.call(service, tag, body.value, context, toMillis(call?.timeout) ?? clientTimeout),
            (reply) => outcome(service, tag, reply, decodeSuccess, decodeError)
          )
        }).pipe(Effect.withSpan(`${service}.${tag}`, { kind: "client", attributes: { "rpc.system.name": "nameko" } }))
    }
    return methods as Client<Rpcs>
  })

/**
 * Publishes an event the way Nameko's `event_dispatcher` does: to the topic exchange
 * `<source>.events`, routing key the event's type, body the payload's JSON, with the call context as
 * Nameko's headers. Every Nameko `@event_handler` of it (service pool, broadcast, singleton) gets it.
 *
 * @since 0.1.0
 */
export const dispatch = <E extends Event.Any>(
  event: E,
  payload: Event.PayloadInput<E>
): Effect.Effect<void, Event.EventError | NamekoError, Broker> =>
  Effect.gen(function*() {
    const broker = yield* amqpBroker
    const made = yield* Effect.mapError(
      event.schema.makeEffect(payload),
      (issue) => new EventError({ reason: "InvalidPayload", source: event.source, type: event.type, message: formatIssue(issue) })
    )
    const encoded = Schema.encodeUnknownExit(Schema.toCodecJson(event.schema) as unknown as Schema.Codec<unknown, unknown>)(made)
    if (Exit.isFailure(encoded)) {
      return yield* new EventError({ reason: "InvalidPayload", source: event.source, type: event.type, message: String(Cause.squash(encoded.cause)) })
    }
    const context = yield* CallContext.CallContext
    const exchange = wire.eventExchange(event.source)
    yield* broker.declareExchange(exchange, "topic", { durable: true }).pipe(
      Effect.andThen(broker.publish(exchange, event.type, meshWire.encodeJson(encoded.value), {
        contentType: meshWire.contentType,
        persistent: true,
        confirm: true,
        headers: wire.headersOf(context, `${event.source}.dispatch`, crypto.randomUUID())
      })),
      Effect.mapError((error) => new EventError({ reason: "Transport", source: event.source, type: event.type, message: error.message }))
    )
  })

/**
 * Options of `handle`.
 *
 * @since 0.1.0
 */
export interface HandleOptions {
  /**
   * Nameko's handler type: `pool` (one instance per subscribing service, the default), `broadcast`
   * (every instance), `singleton` (one instance across every subscriber of the event)
   */
  readonly delivery?: "pool" | "broadcast" | "singleton" | undefined
  /**
   * the handler's name in its queue's, as a Python handler's method name: a TypeScript service taking
   * over a Nameko one keeps it, and the two share the queue while both run (default: the event type)
   */
  readonly method?: string | undefined
  /** events handled at once (the queue's prefetch; default 10) */
  readonly concurrency?: number | undefined
  /** how long a stopping instance waits for running handlers (default 10 seconds) */
  readonly drainTimeout?: Duration.Input | undefined
}

/**
 * An entrypoint that handles an event dispatched the Nameko way (by a Nameko service's
 * `EventDispatcher`, or by `dispatch`), in a queue named as Nameko names an `@event_handler`'s. The
 * handler runs on the instance runner with the dispatcher's context; the event is acked when it
 * succeeds. A handler's failure, or a payload its schema refuses, is logged and the event dropped,
 * as Nameko does by default (`requeue_on_error=False`); a stopping instance puts back what it could
 * not finish.
 *
 * @since 0.1.0
 */
export const handle = <E extends Event.Any, Err, R>(
  event: E,
  options: HandleOptions,
  handler: (payload: Event.Payload<E>) => Effect.Effect<void, Err, R>
): Service.Entrypoint<BrokerError | NamekoError, Broker | Exclude<R, Scope.Scope>> =>
  Service.entrypoint(`nameko-event:${event.source}.${event.type}`, (instance) =>
    Layer.effectDiscard(Effect.gen(function*() {
      const broker = yield* amqpBroker
      const delivery = options.delivery ?? "pool"
      const method = options.method ?? event.type
      const exchange = wire.eventExchange(event.source)
      yield* broker.declareExchange(exchange, "topic", { durable: true })
      const queue = wire.eventQueue(event.source, event.type, delivery, instance.service, method, instance.instanceId)
      yield* broker.declareQueue(
        queue,
        delivery === "broadcast" ? { durable: true, exclusive: true, autoDelete: true } : { durable: true }
      )
      yield* broker.bindQueue(queue, exchange, event.type)
      const decode = wire.jsonDecoder(event.schema)
      const lane = Runner.lane(yield* Effect.context<never>())
      const name = `${instance.service}.${method}`
      // the same series as the mesh's own subscriptions: duration by outcome
      const metrics = Metrics.eventProcess(instance.service, `${event.source}.${event.type}`)
      const onDelivery = (message: Delivery): Effect.Effect<void> => {
        const json = meshWire.decodeJson(message.body)
        const payload = Option.isNone(json) ? undefined : decode(json.value)
        if (payload === undefined || Exit.isFailure(payload)) {
          return Effect.andThen(
            Effect.logWarning(`${name}: a ${event.source}.${event.type} event its schema refuses was dropped`),
            message.nack(false)
          )
        }
        const context = wire.contextOf(message.properties.headers, { service: instance.service, method, id: crypto.randomUUID() })
        lane.start(
          {
            service: instance.service,
            name,
            context,
            metrics,
            span: { kind: "consumer", attributes: { "messaging.system": "rabbitmq", "messaging.destination.name": exchange } }
          },
          handler(payload.value as Event.Payload<E>) as Effect.Effect<void, Err>,
          (exit) => {
            if (Exit.isSuccess(exit)) return message.ack
            if (Cause.hasInterruptsOnly(exit.cause)) return message.nack(true)
            return Effect.andThen(Effect.logError(`${name}: the handler failed; the event is dropped`, exit.cause), message.nack(false))
          }
        )
        return Effect.void
      }
      yield* consumeWith(broker, queue, options.concurrency ?? 10, `${name}.${instance.instanceId}`, onDelivery, lane, options.drainTimeout)
    }))) as Service.Entrypoint<BrokerError | NamekoError, Broker | Exclude<R, Scope.Scope>>

// ---- internal ----

const formatIssue = SchemaIssue.makeFormatterDefault()

type RawHandler = (payload: unknown, options: Parameters<Rpc.ToHandlerFn<Rpc.Any>>[1]) => Rpc.WrapperOr<Effect.Effect<unknown, unknown, unknown>>

const toMillis = (timeout: Duration.Input | undefined): number | undefined =>
  timeout === undefined ? undefined : Duration.toMillis(Duration.fromInputUnsafe(timeout))

/** the current broker, when it speaks AMQP */
const amqpBroker: Effect.Effect<Broker["Service"], NamekoError, Broker> = Effect.flatMap(
  Broker,
  (broker: Broker["Service"]) =>
    broker.kind === "amqp" ? Effect.succeed(broker) : Effect.fail(
      new NamekoError({
        reason: "UnsupportedBroker",
        message: `Nameko speaks AMQP: its wire needs AmqpBroker (the current broker is "${broker.kind}")`
      })
    )
)

/**
 * Consumes a queue in the current scope: each delivery to `onDelivery`, guarded (whatever dies is
 * logged and the delivery dropped); at release, stops taking deliveries, then drains the lane.
 */
const consumeWith = (
  broker: Broker["Service"],
  queue: string,
  prefetch: number,
  tag: string,
  onDelivery: (delivery: Delivery) => Effect.Effect<void>,
  lane: Runner.Lane,
  drainTimeout: Duration.Input | undefined
): Effect.Effect<void, BrokerError, Scope.Scope> =>
  Effect.gen(function*() {
    const consumer = yield* broker.consume(queue, { prefetch, tag })
    yield* consumer.deliveries.pipe(
      Stream.runForEach((delivery) =>
        Effect.catchCause(
          Effect.suspend(() => onDelivery(delivery)),
          (cause) => Effect.andThen(Effect.logError(`${tag}: a delivery could not be handled`, cause), delivery.nack(false))
        )
      ),
      Effect.forkScoped
    )
    // added last, so it runs first: the runs drain before the consumer's scope closes
    yield* Effect.addFinalizer(() =>
      Effect.andThen(consumer.cancel, Effect.asVoid(lane.drain(drainTimeout ?? Duration.seconds(10))))
    )
  })

const serveRpc = (
  service: string,
  group: RpcGroup.RpcGroup<Rpc.Any>,
  handlers: Record<string, RawHandler>,
  signatures: wire.Signatures,
  options: { readonly concurrency?: number | undefined; readonly drainTimeout?: Duration.Input | undefined; readonly maxMessageSize?: number | undefined } | undefined,
  instance: Service.Instance
): Effect.Effect<void, BrokerError | NamekoError, Broker | Scope.Scope> =>
  Effect.gen(function*() {
    const broker = yield* amqpBroker
    yield* broker.declareExchange(wire.rpcExchange, "topic", { durable: true })
    const queue = wire.rpcQueue(service)
    yield* broker.declareQueue(queue, { durable: true })
    yield* broker.bindQueue(queue, wire.rpcExchange, wire.rpcBinding(service))
    const lane = Runner.lane(yield* Effect.context<never>())
    const maxMessageSize = yield* MessageSize.resolve(options?.maxMessageSize)
    const prefix = `${service}.`
    let nextRequest = 0
    const errorEncoders = new Map<string, (error: unknown) => Exit.Exit<unknown, Schema.SchemaError>>()
    const encodeError = (rpc: Rpc.AnyWithProps) => {
      let encode = errorEncoders.get(rpc._tag)
      if (encode === undefined) {
        encode = Schema.encodeUnknownExit(Schema.toCodecJson(rpc.errorSchema) as unknown as Schema.Codec<unknown, unknown>)
        errorEncoders.set(rpc._tag, encode)
      }
      return encode
    }

    // the reply is published to `nameko-rpc` with `reply_to` as its routing key; only then is the
    // request acked. A publish that fails leaves it to redelivery
    const answer = (delivery: Delivery, replyTo: string, body: Uint8Array): Effect.Effect<void> =>
      broker.publish(wire.rpcExchange, replyTo, body, {
        correlationId: delivery.properties.correlationId,
        contentType: meshWire.contentType,
        persistent: true
      }).pipe(Effect.matchCauseEffect({
        onSuccess: () => delivery.ack,
        onFailure: (cause) =>
          Effect.andThen(
            Effect.logWarning(`${service}: could not reply to a Nameko request; leaving it to redelivery`, cause),
            delivery.nack(true)
          )
      }))

    const replyOf = (rpc: Rpc.AnyWithProps, exit: Exit.Exit<unknown, unknown>): Uint8Array => {
      if (Exit.isSuccess(exit)) {
        const encoded = Schema.encodeUnknownExit(Schema.toCodecJson(rpc.successSchema) as unknown as Schema.Codec<unknown, unknown>)(exit.value)
        return Exit.isSuccess(encoded)
          ? wire.reply(encoded.value, undefined)
          : wire.reply(null, wire.namekoError("UnserializableValueError", `Unserializable value: \`${String(exit.value)}\``))
      }
      for (const reason of exit.cause.reasons) {
        if (Cause.isFailReason(reason)) {
          const encoded = encodeError(rpc)(reason.error)
          return wire.reply(null, Exit.isSuccess(encoded)
            ? wire.contractError(service, encoded.value)
            : wire.defect(`an error the contract does not declare: ${messageOf(reason.error)}`))
        }
        if (Cause.isDieReason(reason)) {
          // the mesh's own errors (a policy's Forbidden) keep their tag: `exc_type`
          const meshError = meshWire.serviceErrorOfDefect(reason.defect)
          return wire.reply(null, Option.isSome(meshError)
            ? wire.contractError(service, { _tag: meshError.value._tag, message: meshError.value.message })
            : wire.defect(messageOf(reason.defect)))
        }
      }
      return wire.reply(null, wire.defect("the call was interrupted"))
    }

    const onDelivery = (delivery: Delivery): Effect.Effect<void> => {
      const replyTo = delivery.properties.replyTo
      if (replyTo === undefined || replyTo === "") {
        // nobody to answer: Nameko's own consumer would fail on it again and again
        return Effect.andThen(Effect.logWarning(`${service}: a Nameko request without reply_to was dropped`), delivery.nack(false))
      }
      const key = delivery.routingKey
      const method = key.startsWith(prefix) ? key.slice(prefix.length) : key
      const rpc = group.requests.get(method) as Rpc.AnyWithProps | undefined
      const handler = handlers[method]
      // a sealed rpc is not on Nameko's wire: its requests would cross the broker in plain text
      if (rpc === undefined || handler === undefined || !wire.servable(rpc) || Sealed.isSealed(rpc)) {
        return answer(delivery, replyTo, wire.reply(null, wire.namekoError("MethodNotFound", method)))
      }
      if (delivery.body.length > maxMessageSize) {
        return answer(delivery, replyTo, wire.reply(null, wire.namekoError("MalformedRequest", meshWire.tooLarge(delivery.body.length, maxMessageSize))))
      }
      const request = wire.readRequest(rpc, signatures[method] ?? [], delivery.body)
      if (request._tag === "Refused") return answer(delivery, replyTo, wire.reply(null, request.error))
      const id = nextRequest++
      const headers = delivery.properties.headers
      const context = wire.contextOf(headers, { service, method, id: crypto.randomUUID() })
      const handle = Effect.suspend(() => {
        const made = handler(request.payload, {
          client: new Rpc.ServerClient(id),
          requestId: RequestId(id),
          headers: Headers.fromRecordUnsafe(meshWire.stringHeaders(headers)),
          rpc
        })
        if (!Rpc.isWrapper(made)) return made as Effect.Effect<unknown, unknown>
        const inner = made.value as Effect.Effect<unknown, unknown>
        return made.uninterruptible ? Effect.uninterruptible(inner) : inner
      })
      const policy = instance.authorize
      const run = policy === undefined
        ? handle
        : Effect.andThen(Service.authorized(policy, { service, method, payload: request.payload, context }), handle)
      lane.start(
        {
          service,
          name: `${service}.${method}`,
          context,
          span: { kind: "server", attributes: { "rpc.system.name": "nameko", "rpc.method": method, "mesh.instance": instance.instanceId } }
        },
        run,
        (exit) =>
          // stopped (the instance drains): back to the queue, for another instance to answer
          Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause)
            ? delivery.nack(true)
            : answer(delivery, replyTo, replyOf(rpc, exit))
      )
      return Effect.void
    }
    yield* consumeWith(
      broker,
      queue,
      options?.concurrency ?? 10,
      `${service}.nameko.${instance.instanceId}`,
      onDelivery,
      lane,
      options?.drainTimeout
    )
  })

const messageOf = (u: unknown): string =>
  u instanceof Error ? u.message : typeof u === "object" && u !== null && "message" in u && typeof u.message === "string"
    ? u.message
    : String(u)

/** a Nameko reply as the call's outcome, typed by the rpc's schemas */
const outcome = (
  service: string,
  method: string,
  reply: Reply,
  decodeSuccess: (u: unknown) => Exit.Exit<unknown, Schema.SchemaError>,
  decodeError: (u: unknown) => Exit.Exit<unknown, Schema.SchemaError>
): Effect.Effect<unknown, unknown> => {
  const error = reply.error
  if (error === undefined) {
    const value = decodeSuccess(reply.result)
    return Exit.isSuccess(value)
      ? Effect.succeed(value.value)
      : Effect.fail(new RemoteDefect({ service, method, message: `the result does not match the contract: ${messageOf(Cause.squash(value.cause))}` }))
  }
  switch (error.exc_path) {
    case "nameko.exceptions.MethodNotFound":
      return Effect.fail(new MethodNotFound({ service, method }))
    case "nameko.exceptions.IncorrectSignature":
    case "nameko.exceptions.MalformedRequest":
      return Effect.fail(new InvalidPayload({ service, method, issue: `${error.exc_type}: ${error.value}` }))
  }
  const first = error.exc_args[0]
  const candidates: Array<unknown> = [
    { _tag: error.exc_type, message: error.value },
    { _tag: error.exc_type }
  ]
  if (typeof first === "object" && first !== null && "_tag" in first && first._tag === error.exc_type) {
    candidates.unshift(first)
  }
  for (const candidate of candidates) {
    const decoded = decodeError(candidate)
    if (Exit.isSuccess(decoded)) return Effect.fail(decoded.value)
  }
  return Effect.fail(new RemoteDefect({ service, method, message: `${error.exc_type}: ${error.value}` }))
}
