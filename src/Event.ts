/**
 * Typed pub/sub events, as Nameko has them, and commands (fire-and-forget calls).
 *
 * An event is a value: its source (the service that emits it), its type and its schema. Publishing
 * encodes the payload with the schema, carries the current `CallContext` one hop further, and succeeds
 * only once the broker has confirmed the event. Each source has a durable topic exchange; the routing
 * key is the event type. Subscriptions' queues outlive their instances (except plain `broadcast`
 * ones), so events wait for a subscriber that is down; an event nobody ever subscribed to is dropped.
 *
 * A service subscribes inside `Service.make`, through its `entrypoints`: `handle` runs a handler per
 * event, `subscribe` hands a `Stream` of received events to the service. Either way an event is acked
 * only after it was processed. Three deliveries, as in Nameko:
 *
 * - `pool` (the default): each subscribing service gets each event once, on one of its instances.
 * - `broadcast`: every instance gets each event (a queue per instance; `reliable` keeps it durable
 *   under a stable instance id, so events wait for an instance that restarts).
 * - `singleton`: exactly one instance across every subscriber of the event gets it.
 *
 * A handler that fails is retried on its `retry` Schedule; the broker holds the event during the
 * delay (in a queue whose time-to-live dead-letters it back), so a failing event never blocks the
 * consumer. When the schedule ends, and at once for a payload that fails the event's schema, the event
 * goes to the subscription's dead-letter queue with the reason in its headers. A delivery is never
 * acked before the republish that replaces it is confirmed.
 *
 * ```ts
 * export const OrderPlaced = Event.make("orders", "order_placed", Order)
 *
 * yield* Event.publish(OrderPlaced, { id: "o-1", total: 42 })
 *
 * export const BillingLive = Service.make(Billing, {
 *   handlers: { ... },
 *   entrypoints: [Event.handle(OrderPlaced, { delivery: "pool" }, (order) => charge(order))]
 * })
 * ```
 *
 * @since 0.1.0
 */
import {
  Cause,
  Clock,
  Context,
  Deferred,
  Duration,
  Effect,
  Exit,
  Fiber,
  FiberSet,
  Layer,
  Option,
  Pull,
  Schedule,
  Schema,
  SchemaIssue,
  Stream
} from "effect"
import type { Scope } from "effect"
import type { Rpc } from "effect/rpc"
import type { BrokerError, Consumer, Delivery, HeaderValue, PublishOptions, QueueOptions } from "./Broker.ts"
import { Broker } from "./Broker.ts"
import * as CallContext from "./CallContext.ts"
import * as DeadLetterQueue from "./internal/deadLetterQueue.ts"
import * as internal from "./internal/events.ts"
import * as topology from "./internal/topology.ts"
import * as wire from "./internal/wire.ts"
import * as Service from "./Service.ts"
import type { ServiceContract } from "./ServiceContract.ts"
import { InvalidPayload, ServiceNotFound, TransportError } from "./ServiceError.ts"

// ---- models ----

/**
 * An event: the service that emits it, its type (the routing key) and the schema of its payload.
 *
 * @since 0.1.0
 */
export interface Event<
  out Source extends string = string,
  out Type extends string = string,
  out S extends Schema.Top = Schema.Top
> {
  readonly _tag: "Event"
  readonly source: Source
  readonly type: Type
  readonly schema: S
}

/**
 * Any event, for APIs that accept all of them.
 *
 * @since 0.1.0
 */
export type Any = Event<string, string, Schema.Top>

/**
 * The decoded payload of an event, as handlers receive it.
 *
 * @since 0.1.0
 */
export type Payload<E> = E extends Event<infer _Source, infer _Type, infer S> ? S["Type"] : never

/**
 * What `publish` takes: the schema's constructor input.
 *
 * @since 0.1.0
 */
export type PayloadInput<E> = E extends Event<infer _Source, infer _Type, infer S> ? S["~type.make.in"] : never

/**
 * Why publishing an event failed: `InvalidPayload` (the payload does not satisfy the schema) or
 * `Transport` (the broker did not confirm it; it may or may not have been delivered).
 *
 * @since 0.1.0
 */
export class EventError extends Schema.TaggedError<EventError>()("EventError", {
  reason: Schema.Literals(["InvalidPayload", "Transport"]),
  source: Schema.String,
  type: Schema.String,
  message: Schema.String
}) {}

/**
 * Who gets an event: one instance per subscribing service (`pool`), every instance (`broadcast`), or
 * one instance across all subscribers (`singleton`).
 *
 * @since 0.1.0
 */
export type DeliveryMode = "pool" | "broadcast" | "singleton"

/**
 * Options every subscription takes.
 *
 * @since 0.1.0
 */
export interface CommonOptions {
  /** tells apart two subscriptions of one service to one event (part of the queue's name) */
  readonly name?: string | undefined
  /** events one instance processes at once; the broker holds the rest (default 16) */
  readonly concurrency?: number | undefined
  /**
   * when to retry a failed event, replayed from its start for every failure; when it ends, the event
   * is dead-lettered (default: 4 retries, exponential from 500 ms)
   */
  readonly retry?: Schedule.Schedule<unknown, unknown> | undefined
  /**
   * deliveries of one event (crashes and shutdowns included) before the broker dead-letters it, on
   * durable queues (default 10)
   */
  readonly deliveryLimit?: number | undefined
  /** how long a stopping instance lets running handlers finish (default 10 seconds) */
  readonly drainTimeout?: Duration.Input | undefined
  /**
   * the largest event body handled, in bytes (default 1 MiB, as for requests); a larger one is
   * dead-lettered as `invalid-payload` before it is decoded
   */
  readonly maxMessageSize?: number | undefined
}

/**
 * Options of a subscription.
 *
 * @since 0.1.0
 */
export type Options =
  & CommonOptions
  & (
    | { readonly delivery?: "pool" | "singleton" | undefined; readonly reliable?: never }
    | {
      readonly delivery: "broadcast"
      /**
       * a durable queue under a stable instance id: events published while the instance is down
       * wait for it (without it, the queue lives as long as the instance)
       */
      readonly reliable?: { readonly instanceId: string } | undefined
    }
  )

/**
 * Options of a Stream subscription.
 *
 * @since 0.1.0
 */
export type SubscribeOptions = Options & {
  /** when the stream consumer fails: restart it on this schedule (default: exponential, up to 30 s) */
  readonly restart?: Schedule.Schedule<unknown, unknown> | undefined
}

/**
 * What a handler knows about the event besides its payload.
 *
 * @since 0.1.0
 */
export interface Metadata {
  /** unique per published event; the same on every delivery and retry of it */
  readonly messageId: string
  /** 1 on the first attempt, 2 on the first retry, ... */
  readonly attempt: number
  /** the broker delivered it before without an ack (a crash or a shutdown) */
  readonly redelivered: boolean
  /** the publisher's call context, one hop further (handlers also see it as `CallContext.CallContext`) */
  readonly context: CallContext.CallContext
}

/**
 * An event from a Stream subscription. Settle it exactly once: `ack` when it was processed, `fail`
 * to retry it on the subscription's schedule (or dead-letter it); `handle` does both around an
 * effect. An event left unsettled goes back to the queue when the subscription stops.
 *
 * @since 0.1.0
 */
export interface Received<A> extends Metadata {
  readonly payload: A
  readonly ack: Effect.Effect<void>
  readonly fail: (error: unknown) => Effect.Effect<void>
  /** runs `f` with the publisher's call context, then acks, or fails the event with `f`'s error */
  readonly handle: <X, E, R>(
    f: (payload: A) => Effect.Effect<X, E, R>
  ) => Effect.Effect<void, never, Exclude<R, Scope.Scope>>
}

/**
 * Why an event went to a dead-letter queue (its `x-mesh-death-reason` header).
 *
 * @since 0.1.0
 */
export type DeathReason = "handler-failed" | "invalid-payload"

/**
 * The headers events carry besides the call context: `retries` on a retried event; `deathReason`,
 * `error`, `attempts`, `queue` and `diedAt` on a dead-lettered one.
 *
 * @since 0.1.0
 */
export const headers: {
  readonly retries: string
  readonly deathReason: string
  readonly error: string
  readonly attempts: string
  readonly queue: string
  readonly diedAt: string
} = internal.header

// ---- constructors ----

const sourcePattern = /^[A-Za-z0-9_-]+$/
const typePattern = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/

/**
 * Defines an event: the emitting service's name, the event type and the payload's schema.
 *
 * @since 0.1.0
 */
export const make = <const Source extends string, const Type extends string, S extends Schema.Top>(
  source: Source,
  type: Type,
  schema: S
): Event<Source, Type, S> => {
  if (!sourcePattern.test(source)) {
    throw new globalThis.Error(`invalid event source "${source}": use letters, digits, "_" and "-"`)
  }
  if (!typePattern.test(type)) {
    throw new globalThis.Error(`invalid event type "${type}": use letters, digits, "_", "-" and inner "."`)
  }
  return { _tag: "Event", source, type, schema }
}

/**
 * Publishes an event and waits for the broker's confirm. The handlers see the current call context
 * one hop further (the correlation id kept); an event has no deadline, whatever its publisher's.
 *
 * @since 0.1.0
 */
export const publish = <Source extends string, Type extends string, S extends Schema.Top>(
  event: Event<Source, Type, S>,
  payload: S["~type.make.in"]
): Effect.Effect<void, EventError, Broker> =>
  // no `Effect.gen` on this path: a generator function created per call costs more than the rest of
  // the client's work for an event (V8 builds a new map for the objects of every new generator function)
  Effect.contextWith((context: Context.Context<Broker>) =>
    Effect.flatMap(
      Effect.mapError(
        event.schema.makeEffect(payload),
        (issue) => eventError(event, "InvalidPayload", formatIssue(issue))
      ),
      (made) => publishMade(Context.get(context, Broker), Context.get(context, CallContext.CallContext), event, made)
    )
  )

const publishMade = (
  broker: Broker["Service"],
  parent: CallContext.CallContext,
  event: Any,
  made: unknown
): Effect.Effect<void, EventError> => {
  const codec = codecOf(event)
  const encoded = codec.encode(made)
  if (Exit.isFailure(encoded)) return Effect.fail(eventError(event, "InvalidPayload", issueOf(encoded)))
  const exchange = codec.exchange
  const id = crypto.randomUUID()
  const context = nextContextOf(parent, event.source, event.type, id)
  const send = broker.publish(exchange, event.type, wire.encodeJson(encoded.value), {
    confirm: true,
    persistent: true,
    contentType: wire.contentType,
    type: event.type,
    messageId: id,
    correlationId: context.correlationId,
    headers: CallContext.toHeaders(context)
  })
  const ready = codec.declaredOn === broker || isDeclared(broker, exchange)
  if (ready) codec.declaredOn = broker
  return Effect.mapError(
    ready ? send : Effect.andThen(ensureExchange(broker, exchange), send),
    (e) => eventError(event, "Transport", e.message)
  )
}

/**
 * Subscribes a service to an event with a handler run per event, as an entrypoint of `Service.make`.
 * The event is acked when the handler succeeds; a failure is retried on the `retry` schedule, then
 * dead-lettered. The handler's requirements become the service Layer's.
 *
 * @since 0.1.0
 */
export const handle = <Source extends string, Type extends string, S extends Schema.Top, X, E, R>(
  event: Event<Source, Type, S>,
  options: Options,
  handler: (payload: S["Type"], metadata: Metadata) => Effect.Effect<X, E, R>
): Service.Entrypoint<BrokerError, Broker | Exclude<R, Scope.Scope>> =>
  Service.entrypoint(entrypointName(event, options), (instance) =>
    Layer.effectDiscard(Effect.gen(function*() {
      const broker = yield* Broker
      const plan = planOf(event, options, instance)
      yield* declare(broker, event, plan)
      const settle = settlerOf(broker, event, plan, options.retry ?? defaultRetry)
      const process = (delivery: Delivery): Effect.Effect<void, never, Exclude<R, Scope.Scope>> => {
        const decoded = settle.decode(delivery)
        if (decoded._tag === "Invalid") return settle.invalid(delivery, decoded.issue)
        const { metadata, payload } = decoded
        return Effect.scoped(handler(payload, metadata)).pipe(
          Effect.provideService(CallContext.CallContext, metadata.context),
          Effect.matchCauseEffect({
            onSuccess: () => delivery.ack,
            onFailure: (cause) => settle.failCause(delivery, cause)
          })
        )
      }
      const consumer = yield* broker.consume(plan.queue, {
        prefetch: plan.concurrency,
        tag: `${plan.label} ${instance.instanceId}`
      })
      // each event in a fiber of its own, started at once, at most `concurrency` at a time; what
      // `Stream.mapEffect(process, { concurrency })` does, without its per-event cost (~5 µs: queues
      // between the fibers and the stream, a fiber per element to collect the results)
      const handlers = yield* FiberSet.make<void>()
      let running = 0
      let vacancy: Deferred.Deferred<void> | undefined
      const finished = () => {
        running--
        if (vacancy !== undefined) {
          const waiting = vacancy
          vacancy = undefined
          Deferred.doneUnsafe(waiting, Effect.void)
        }
      }
      const room: Effect.Effect<void> = Effect.suspend(() =>
        running < plan.concurrency ? Effect.void : Effect.andThen(Deferred.await(vacancy ??= Deferred.makeUnsafe<void>()), room)
      )
      const start = (delivery: Delivery) =>
        Effect.flatMap(FiberSet.run(handlers, process(delivery)), (handling) => {
          running++
          handling.addObserver(finished)
          return room
        })
      const fiber = yield* Stream.runForEach(consumer.deliveries, start).pipe(
        Effect.andThen(FiberSet.awaitEmpty(handlers)),
        Effect.catchCause((cause) =>
          Cause.hasInterruptsOnly(cause)
            ? Effect.void
            : Effect.logError(`${plan.label}: the subscription stopped`, cause)
        ),
        Effect.forkScoped
      )
      // added last, so it runs first: running handlers finish before the consumer is closed
      yield* Effect.addFinalizer(() => drain(consumer, fiber, plan.drainTimeout))
    })))

/**
 * Subscribes a service to an event as a Stream, as an entrypoint of `Service.make`: `consume` gets
 * the decoded events and settles each (`ack`, `fail` or `handle`). Invalid payloads are dead-lettered
 * before they reach the stream; at most `concurrency` events are unsettled at once. If `consume`
 * fails, the events it had not settled go back to the queue and it is restarted on `restart`.
 *
 * ```ts
 * Event.subscribe(OrderPlaced, { delivery: "pool" }, (events) =>
 *   events.pipe(
 *     Stream.grouped(100),
 *     Stream.runForEach((batch) =>
 *       Effect.andThen(saveAll(batch.map((e) => e.payload)), Effect.forEach(batch, (e) => e.ack))
 *     )
 *   ))
 * ```
 *
 * @since 0.1.0
 */
export const subscribe = <Source extends string, Type extends string, S extends Schema.Top, X, E, R>(
  event: Event<Source, Type, S>,
  options: SubscribeOptions,
  consume: (events: Stream.Stream<Received<S["Type"]>, BrokerError>) => Effect.Effect<X, E, R>
): Service.Entrypoint<BrokerError, Broker | Exclude<R, Scope.Scope>> =>
  Service.entrypoint(entrypointName(event, options), (instance) =>
    Layer.effectDiscard(Effect.gen(function*() {
      const broker = yield* Broker
      const plan = planOf(event, options, instance)
      yield* declare(broker, event, plan)
      const settle = settlerOf(broker, event, plan, options.retry ?? defaultRetry)
      let current: Consumer | undefined

      const toReceived = (delivery: Delivery): Effect.Effect<Received<S["Type"]> | undefined> => {
        const decoded = settle.decode(delivery)
        if (decoded._tag === "Invalid") return Effect.as(settle.invalid(delivery, decoded.issue), undefined)
        let settled = false
        const once = (effect: Effect.Effect<void>) =>
          Effect.suspend(() => {
            if (settled) return Effect.void
            settled = true
            return effect
          })
        const fail = (error: unknown) => once(settle.failCause(delivery, Cause.fail(error)))
        const ack = once(delivery.ack)
        return Effect.succeed({
          ...decoded.metadata,
          payload: decoded.payload,
          ack,
          fail,
          handle: <X2, E2, R2>(f: (payload: S["Type"]) => Effect.Effect<X2, E2, R2>) =>
            Effect.scoped(f(decoded.payload)).pipe(
              Effect.provideService(CallContext.CallContext, decoded.metadata.context),
              Effect.exit,
              Effect.flatMap((exit) =>
                Exit.isSuccess(exit) ? ack : once(settle.failCause(delivery, exit.cause))
              )
            )
        })
      }

      const run = Effect.scoped(Effect.gen(function*() {
        const consumer = yield* broker.consume(plan.queue, {
          prefetch: plan.concurrency,
          tag: `${plan.label} ${instance.instanceId}`
        })
        current = consumer
        const events = consumer.deliveries.pipe(
          Stream.mapEffect(toReceived),
          Stream.filter((r): r is Received<S["Type"]> => r !== undefined)
        )
        yield* consume(events)
      }))

      const supervise = Effect.gen(function*() {
        const step = yield* Schedule.toStepWithSleep(options.restart ?? defaultRestart)
        while (true) {
          const exit = yield* Effect.exit(run)
          if (Exit.isSuccess(exit)) {
            return yield* Effect.logDebug(`${plan.label}: the stream consumer completed`)
          }
          if (Cause.hasInterruptsOnly(exit.cause)) return
          yield* Effect.logError(`${plan.label}: the stream consumer failed; restarting it`, exit.cause)
          yield* step(exit.cause)
        }
      }).pipe(
        Pull.catchDone(() => Effect.logError(`${plan.label}: the stream consumer failed too often; it stays stopped`))
      )
      const fiber = yield* Effect.forkScoped(supervise)
      yield* Effect.addFinalizer(() =>
        Effect.suspend(() => current === undefined ? Fiber.interrupt(fiber) : drain(current, fiber, plan.drainTimeout))
      )
    })))

/**
 * Sends a command: a call of a service's rpc whose result nobody waits for. It succeeds once the
 * broker has the request in the service's queue (it waits there when no instance runs); an instance
 * runs it and acks it when it completes, at least once. A command that fails goes to the service's
 * dead-letter queue.
 *
 * @since 0.1.0
 */
export const command = <
  const Name extends string,
  Rpcs extends Rpc.Any,
  const Tag extends Rpcs["_tag"]
>(
  contract: ServiceContract<Name, Rpcs>,
  method: Tag,
  payload: Rpc.PayloadConstructor<Extract<Rpcs, { readonly _tag: Tag }>>
): Effect.Effect<void, ServiceNotFound | InvalidPayload | TransportError, Broker> =>
  Effect.gen(function*() {
    const broker = yield* Broker
    const service = contract.name
    const rpc = contract.group.requests.get(method) as Rpc.AnyWithProps | undefined
    if (rpc === undefined) return yield* Effect.die(new globalThis.Error(`${service} has no method "${method}"`))
    const schema = rpc.payloadSchema
    const made = yield* Effect.mapError(
      schema.makeEffect(payload),
      (issue) => new InvalidPayload({ service, method, issue: formatIssue(issue) })
    )
    const encoded = commandEncoder(rpc)(made)
    if (Exit.isFailure(encoded)) {
      return yield* new InvalidPayload({ service, method, issue: issueOf(encoded) })
    }
    yield* ensureCommon(broker).pipe(
      Effect.mapError((e) => new TransportError({ service, method, message: e.message }))
    )
    const id = crypto.randomUUID()
    const context = yield* nextContext(service, method, id)
    yield* broker.publish(topology.rpcExchange, topology.rpcRoutingKey(service), wire.encodeJson(encoded.value), {
      mandatory: true,
      confirm: true,
      persistent: true,
      contentType: wire.contentType,
      type: method,
      correlationId: id,
      messageId: id,
      headers: { ...CallContext.toHeaders(context), [internal.header.command]: "true" }
    }).pipe(
      Effect.mapError((e) =>
        e.reason === "Unroutable"
          ? new ServiceNotFound({ service })
          : new TransportError({ service, method, message: e.message })
      )
    )
  })

/**
 * The dead-letter queue of a subscription, to inspect or replay what it could not handle.
 *
 * @since 0.1.0
 */
export const deadLetterQueue = (
  event: Any,
  subscriber: {
    readonly service: string
    readonly delivery?: DeliveryMode | undefined
    readonly name?: string | undefined
  }
): string =>
  topology.eventDeadLetterQueue(
    topology.eventSubscription(
      event.source,
      event.type,
      subscriber.delivery ?? "pool",
      subscriber.service,
      subscriber.name
    )
  )

// ---- internal ----

const defaultRetry: Schedule.Schedule<unknown, unknown> = Schedule.max([
  Schedule.exponential("500 millis"),
  Schedule.recurs(4)
])

const defaultRestart: Schedule.Schedule<unknown, unknown> = Schedule.min([
  Schedule.exponential("200 millis"),
  Schedule.spaced("30 seconds")
])

const defaultDrainTimeout = Duration.seconds(10)

const formatIssue = SchemaIssue.makeFormatterDefault()

const issueOf = (exit: Exit.Exit<unknown, Schema.SchemaError>): string =>
  Option.match(Exit.findErrorOption(exit), {
    onNone: () => "the payload could not be encoded",
    onSome: (error) => formatIssue(error.issue)
  })

const eventError = (event: Any, reason: EventError["reason"], message: string) =>
  new EventError({ reason, source: event.source, type: event.type, message })

interface Codec {
  readonly encode: (value: unknown) => Exit.Exit<unknown, Schema.SchemaError>
  readonly decode: (json: unknown) => Exit.Exit<unknown, Schema.SchemaError>
  /** the event's exchange, built once */
  readonly exchange: string
  /** the broker this event was last published on with its exchange declared: the check of every publish */
  declaredOn: object | undefined
}

const codecs = new WeakMap<Any, Codec>()

const codecOf = (event: Any): Codec => {
  let codec = codecs.get(event)
  if (codec === undefined) {
    const json = Schema.toCodecJson(event.schema) as unknown as Schema.Codec<unknown, unknown>
    codec = {
      encode: Schema.encodeUnknownExit(json),
      decode: Schema.decodeUnknownExit(json),
      exchange: topology.eventExchange(event.source),
      declaredOn: undefined
    }
    codecs.set(event, codec)
  }
  return codec
}

const commandEncoders = new WeakMap<Rpc.AnyWithProps, (value: unknown) => Exit.Exit<unknown, Schema.SchemaError>>()

const commandEncoder = (rpc: Rpc.AnyWithProps) => {
  let encode = commandEncoders.get(rpc)
  if (encode === undefined) {
    const json = Schema.toCodecJson(rpc.payloadSchema) as unknown as Schema.Codec<unknown, unknown>
    encode = Schema.encodeUnknownExit(json)
    commandEncoders.set(rpc, encode)
  }
  return encode
}

/** exchanges this process declared on a broker: declaring once per broker is enough */
const declared = new WeakMap<object, Set<string>>()

const isDeclared = (broker: Broker["Service"], exchange: string): boolean =>
  declared.get(broker)?.has(exchange) === true

const ensureExchange = (broker: Broker["Service"], exchange: string): Effect.Effect<void, BrokerError> =>
  Effect.suspend(() => {
    let names = declared.get(broker)
    if (names === undefined) {
      names = new Set()
      declared.set(broker, names)
    }
    if (names.has(exchange)) return Effect.void
    const known = names
    return Effect.tap(
      broker.declareExchange(exchange, "topic", { durable: true }),
      () => Effect.sync(() => known.add(exchange))
    )
  })

const commonMarker = "\u0000common"

const ensureCommon = (broker: Broker["Service"]): Effect.Effect<void, BrokerError> =>
  Effect.suspend(() => {
    const names = declared.get(broker)
    if (names !== undefined && names.has(commonMarker)) return Effect.void
    return Effect.tap(topology.declareCommon(broker), () =>
      Effect.sync(() => {
        const known = declared.get(broker) ?? new Set<string>()
        known.add(commonMarker)
        declared.set(broker, known)
      }))
  })

/** the call context a message carries: one hop further, without the publisher's deadline */
const nextContextOf = (
  parent: CallContext.CallContext,
  service: string,
  method: string,
  id: string
): CallContext.CallContext => ({
  ...CallContext.child(parent, { service, method, id, deadline: undefined }),
  deadline: undefined
})

const nextContext = (service: string, method: string, id: string) =>
  Effect.map(CallContext.CallContext, (parent) => nextContextOf(parent, service, method, id))

const entrypointName = (event: Any, options: Options): string => {
  const name = options.name === undefined ? "" : ` ${options.name}`
  return `event ${event.source}.${event.type} (${options.delivery ?? "pool"}${name})`
}

interface Plan {
  readonly label: string
  readonly queue: string
  readonly queueOptions: QueueOptions
  readonly deadQueue: string
  readonly durable: boolean
  readonly concurrency: number
  readonly drainTimeout: Duration.Input
  readonly maxMessageSize: number
}

const planOf = (event: Any, options: Options, instance: Service.Instance): Plan => {
  const delivery = options.delivery ?? "pool"
  const subscription = topology.eventSubscription(event.source, event.type, delivery, instance.service, options.name)
  const deadQueue = topology.eventDeadLetterQueue(subscription)
  const deadLettering = { deadLetterExchange: topology.deadLetterExchange, deadLetterRoutingKey: deadQueue }
  const durable: QueueOptions = { durable: true, deliveryLimit: options.deliveryLimit ?? 10, ...deadLettering }
  const reliable = options.delivery === "broadcast" ? options.reliable : undefined
  const queue = delivery !== "broadcast"
    ? subscription
    : topology.eventInstanceQueue(subscription, reliable?.instanceId ?? instance.instanceId)
  return {
    label: `${instance.service}: ${entrypointName(event, options)}`,
    queue,
    queueOptions: delivery === "broadcast" && reliable === undefined
      ? { exclusive: true, autoDelete: true, ...deadLettering }
      : durable,
    deadQueue,
    durable: delivery !== "broadcast" || reliable !== undefined,
    concurrency: Math.max(1, options.concurrency ?? 16),
    drainTimeout: options.drainTimeout ?? defaultDrainTimeout,
    maxMessageSize: options.maxMessageSize ?? wire.defaultMaxMessageSize
  }
}

const declare = (broker: Broker["Service"], event: Any, plan: Plan): Effect.Effect<void, BrokerError> =>
  Effect.gen(function*() {
    const exchange = topology.eventExchange(event.source)
    yield* topology.declareCommon(broker)
    yield* ensureExchange(broker, exchange)
    yield* DeadLetterQueue.declare(broker, plan.deadQueue)
    yield* broker.declareQueue(plan.queue, plan.queueOptions)
    yield* broker.bindQueue(plan.queue, exchange, event.type)
  })

/** stop taking events, let the running ones finish within the deadline; the rest go back to the queue */
const drain = <A, E>(consumer: Consumer, fiber: Fiber.Fiber<A, E>, timeout: Duration.Input): Effect.Effect<void> =>
  Effect.andThen(consumer.cancel, Effect.asVoid(Effect.timeoutOption(Fiber.await(fiber), timeout)))

type Decoded =
  | { readonly _tag: "Valid"; readonly payload: unknown; readonly metadata: Metadata }
  | { readonly _tag: "Invalid"; readonly issue: string }

interface Settler {
  readonly decode: (delivery: Delivery) => Decoded
  /** dead-letters an event whose payload failed the schema, then acks it */
  readonly invalid: (delivery: Delivery, issue: string) => Effect.Effect<void>
  /** schedules a retry (or dead-letters the event), then acks it; an interruption requeues it */
  readonly failCause: (delivery: Delivery, cause: Cause.Cause<unknown>) => Effect.Effect<void>
}

/** the id the event was published with, the same on every delivery and retry of it */
const eventIdOf = (delivery: Delivery): string => {
  const fromHeader = delivery.properties.headers?.[internal.header.eventId]
  return typeof fromHeader === "string" ? fromHeader : delivery.properties.messageId ?? ""
}

const numberHeader = (value: HeaderValue | undefined): number | undefined => {
  const n = typeof value === "number" ? value : typeof value === "string" ? Number(value) : NaN
  return Number.isFinite(n) ? n : undefined
}

const maxErrorLength = 2000

const describe = (error: unknown): string => {
  const text = error instanceof globalThis.Error
    ? (error.message === "" ? error.name : `${error.name}: ${error.message}`)
    : typeof error === "string"
    ? error
    : typeof error === "object" && error !== null && "_tag" in error && typeof error._tag === "string"
    ? error._tag
    : String(error)
  return text.length > maxErrorLength ? `${text.slice(0, maxErrorLength)}…` : text
}

/** the retry schedule's delay after the `failures`-th failure, or none when it is done */
const delayAfter = (
  schedule: Schedule.Schedule<unknown, unknown>,
  failures: number,
  error: unknown,
  firstFailure: number,
  now: number
): Effect.Effect<Option.Option<Duration.Duration>> =>
  Effect.gen(function*() {
    const step = yield* Schedule.toStep(schedule)
    let delay = Duration.zero
    for (let i = 1; i <= failures; i++) {
      const [, next] = yield* step(i === failures ? now : firstFailure, error)
      delay = next
    }
    return Option.some(delay)
  }).pipe(Pull.catchDone(() => Effect.succeed(Option.none<Duration.Duration>())))

const settlerOf = (
  broker: Broker["Service"],
  event: Any,
  plan: Plan,
  retry: Schedule.Schedule<unknown, unknown>
): Settler => {
  const codec = codecOf(event)

  const decode = (delivery: Delivery): Decoded => {
    const props = delivery.properties
    if (delivery.body.length > plan.maxMessageSize) {
      return { _tag: "Invalid", issue: wire.tooLarge(delivery.body.length, plan.maxMessageSize) }
    }
    if (props.contentType !== undefined && props.contentType !== wire.contentType) {
      return { _tag: "Invalid", issue: `content-type "${props.contentType}" is not ${wire.contentType}` }
    }
    const body = wire.decodeJson(delivery.body)
    if (Option.isNone(body)) return { _tag: "Invalid", issue: "the body is not JSON" }
    const decoded = codec.decode(body.value)
    if (Exit.isFailure(decoded)) {
      return {
        _tag: "Invalid",
        issue: Option.match(Exit.findErrorOption(decoded), {
          onNone: () => "the payload could not be decoded",
          onSome: (error) => formatIssue(error.issue)
        })
      }
    }
    const headers = props.headers
    return {
      _tag: "Valid",
      payload: decoded.value,
      metadata: {
        messageId: eventIdOf(delivery),
        attempt: (numberHeader(headers?.[internal.header.retries]) ?? 0) + 1,
        redelivered: delivery.redelivered,
        context: CallContext.fromHeaders(wire.stringHeaders(headers))
      }
    }
  }

  /** the delivery's properties for a republish, with our headers on top of its own */
  const republished = (delivery: Delivery, extra: Record<string, HeaderValue>): PublishOptions => {
    const props = delivery.properties
    const headers: Record<string, HeaderValue> = {}
    const original = props.headers ?? {}
    for (const key in original) if (!internal.isTransient(key)) headers[key] = original[key]
    return {
      contentType: props.contentType,
      correlationId: props.correlationId,
      // a fresh message id per publish (the broker matches returns to publishes by it); the event's
      // own id travels on in a header
      messageId: crypto.randomUUID(),
      type: props.type,
      headers: { ...headers, [internal.header.eventId]: eventIdOf(delivery), ...extra },
      persistent: true,
      mandatory: true,
      confirm: true
    }
  }

  const deadLetter = (delivery: Delivery, reason: DeathReason, error: string, attempts: number) =>
    Effect.flatMap(Clock.currentTimeMillis, (now) =>
      broker.publish(
        "",
        plan.deadQueue,
        delivery.body,
        republished(delivery, {
          [internal.header.deathReason]: reason,
          [internal.header.error]: error,
          [internal.header.attempts]: attempts,
          [internal.header.queue]: plan.queue,
          [internal.header.diedAt]: now
        })
      ))

  // the ack comes only after the broker confirmed the republish; if that failed, the event goes back
  const replaceWith = (delivery: Delivery, republish: Effect.Effect<void, BrokerError>, what: string) =>
    Effect.uninterruptible(republish.pipe(
      Effect.matchCauseEffect({
        onSuccess: () => delivery.ack,
        onFailure: (cause) =>
          Effect.andThen(
            Effect.logWarning(`${plan.label}: could not ${what}; the event goes back to the queue`, cause),
            delivery.nack(true)
          )
      })
    ))

  const invalid = (delivery: Delivery, issue: string) =>
    Effect.andThen(
      Effect.logWarning(`${plan.label}: an event with an invalid payload was dead-lettered: ${issue}`),
      replaceWith(delivery, deadLetter(delivery, "invalid-payload", issue, 0), "dead-letter an invalid event")
    )

  const failCause = (delivery: Delivery, cause: Cause.Cause<unknown>): Effect.Effect<void> => {
    // interrupted (a shutdown): not a failure of the event; another instance takes it
    if (Cause.hasInterruptsOnly(cause)) return delivery.nack(true)
    const error = Cause.squash(cause)
    const message = describe(error)
    return Effect.gen(function*() {
      const headers = delivery.properties.headers
      const failures = (numberHeader(headers?.[internal.header.retries]) ?? 0) + 1
      const now = yield* Clock.currentTimeMillis
      const firstFailure = numberHeader(headers?.[internal.header.firstFailure]) ?? now
      const delay = yield* delayAfter(retry, failures, error, firstFailure, now)
      if (Option.isNone(delay)) {
        yield* Effect.logWarning(`${plan.label}: an event failed ${failures} time(s) and was dead-lettered: ${message}`)
        return yield* replaceWith(
          delivery,
          deadLetter(delivery, "handler-failed", message, failures),
          "dead-letter a failed event"
        )
      }
      const millis = Math.max(0, Math.ceil(Duration.toMillis(delay.value)))
      const extra = {
        [internal.header.retries]: failures,
        [internal.header.firstFailure]: firstFailure,
        [internal.header.error]: message
      }
      yield* Effect.logDebug(`${plan.label}: an event failed (${message}); retrying in ${millis} ms`)
      if (millis === 0) {
        const again = broker.publish("", plan.queue, delivery.body, republished(delivery, extra))
        return yield* replaceWith(delivery, again, "retry an event")
      }
      const retryQueue = topology.eventRetryQueue(plan.queue, millis)
      // declared on every retry: the declaration renews the queue's lease (`expires`)
      const publish = Effect.andThen(
        broker.declareQueue(retryQueue, {
          durable: plan.durable,
          messageTtl: millis,
          deadLetterExchange: "",
          deadLetterRoutingKey: plan.queue,
          expires: millis + retryQueueLease
        }),
        broker.publish("", retryQueue, delivery.body, republished(delivery, extra))
      )
      return yield* replaceWith(delivery, publish, "schedule a retry")
    })
  }

  return { decode, invalid, failCause }
}

/** how long an unused retry queue outlives its delay */
const retryQueueLease = 60_000
