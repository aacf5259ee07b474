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
  Context,
  Duration,
  Effect,
  Exit,
  Fiber,
  Layer,
  Metric,
  Option,
  Pull,
  Schedule,
  Schema,
  SchemaIssue,
  Stream
} from "effect"
import type { Scope } from "effect"
import type { BrokerError, Consumer, Delivery, QueueOptions, QueueType } from "./Broker.ts"
import { Broker } from "./Broker.ts"
import * as CallContext from "./CallContext.ts"
import * as DeadLetterQueue from "./internal/deadLetterQueue.ts"
import * as internal from "./internal/events.ts"
import * as Metrics from "./internal/metrics.ts"
import * as QueueTypes from "./internal/queueType.ts"
import * as Runner from "./internal/runner.ts"
import * as Spans from "./internal/spans.ts"
import * as Settler from "./internal/settler.ts"
import * as Subscription from "./internal/subscription.ts"
import * as topology from "./internal/topology.ts"
import * as wire from "./internal/wire.ts"
import * as MessageSize from "./internal/messageSize.ts"
import * as Service from "./Service.ts"

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
   * the type of the subscription's durable queue (pool, singleton and reliable broadcast): `quorum`
   * (the default), replicated on a cluster and with a delivery limit, or `classic`, faster on one
   * node and without one; unset, `MESH_QUEUE_TYPE` decides. See the README's "Queues"
   */
  readonly queueType?: QueueType | undefined
  /**
   * on a quorum queue, deliveries of one event (crashes and shutdowns included) before the broker
   * dead-letters it (default 10)
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
  payload: S["~type.make.in"],
  options?: PublishOptions | undefined
): Effect.Effect<void, EventError, Broker> =>
  // no `Effect.gen` on this path: a generator function created per call costs more than the rest of
  // the client's work for an event (V8 builds a new map for the objects of every new generator function)
  Effect.contextWith((context: Context.Context<Broker>) =>
    Effect.flatMap(
      Effect.mapError(
        event.schema.makeEffect(payload),
        (issue) => eventError(event, "InvalidPayload", formatIssue(issue))
      ),
      (made) =>
        publishMade(
          Context.get(context, Broker),
          Context.get(context, CallContext.CallContext),
          event,
          made,
          options?.messageId
        )
    )
  )

/**
 * Options of `publish`.
 *
 * @since 0.1.0
 */
export interface PublishOptions {
  /**
   * the event's message id (`Metadata.messageId`), random by default: a publisher that may publish the
   * same event twice (the transactional outbox after a crash) gives its own stable id, so that
   * subscribers can tell a repeat
   */
  readonly messageId?: string | undefined
}

const publishMade = (
  broker: Broker["Service"],
  parent: CallContext.CallContext,
  event: Any,
  made: unknown,
  messageId: string | undefined
): Effect.Effect<void, EventError> => {
  const codec = codecOf(event)
  const encoded = codec.encode(made)
  if (Exit.isFailure(encoded)) return Effect.fail(eventError(event, "InvalidPayload", issueOf(encoded)))
  const exchange = codec.exchange
  const id = messageId ?? crypto.randomUUID()
  const context = internal.nextContextOf(parent, event.source, event.type, id)
  // the publish has a span of its own (a producer's), which the handlers' spans are children of
  const send = Effect.useSpan(
    `${event.source}.${event.type} publish`,
    { kind: "producer", attributes: messagingAttributes(event, id, "publish") },
    (span) =>
      broker.publish(exchange, event.type, wire.encodeJson(encoded.value), {
        confirm: true,
        persistent: true,
        contentType: wire.contentType,
        type: event.type,
        messageId: id,
        correlationId: context.correlationId,
        headers: {
          ...CallContext.toHeaders(context),
          [wire.header.traceparent]: wire.traceparent(span.traceId, span.spanId, span.sampled)
        }
      })
  )
  const ready = codec.declaredOn === broker || topology.isDeclared(broker, exchange)
  if (ready) codec.declaredOn = broker
  return Effect.mapError(
    Effect.andThen(
      ready ? send : Effect.andThen(topology.ensureExchange(broker, exchange), send),
      Metric.update(codec.sent, 1)
    ),
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
      const queueType = yield* QueueTypes.resolve(options.queueType, QueueTypes.defaults.events)
      const plan = planOf(event, options, instance, queueType, yield* MessageSize.resolve(options.maxMessageSize))
      yield* declare(broker, event, plan)
      yield* Subscription.run({
        broker,
        label: plan.label,
        queue: plan.queue,
        concurrency: plan.concurrency,
        drainTimeout: plan.drainTimeout,
        tag: `${plan.label} ${instance.instanceId}`,
        settler: Settler.make(broker, plan, codecOf(event).decode, options.retry ?? Subscription.defaultRetry),
        service: instance.service,
        runName: runName(instance, event),
        metrics: Metrics.eventProcess(instance.service, `${event.source}.${event.type}`),
        metadata: (_, metadata) => metadata,
        span: (delivery, metadata) => consumerSpan(event, delivery, metadata),
        handler: handler as (payload: unknown, metadata: Metadata) => Effect.Effect<X, E, R>
      })
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
      const queueType = yield* QueueTypes.resolve(options.queueType, QueueTypes.defaults.events)
      const plan = planOf(event, options, instance, queueType, yield* MessageSize.resolve(options.maxMessageSize))
      yield* declare(broker, event, plan)
      const settle = Settler.make(broker, plan, codecOf(event).decode, options.retry ?? Subscription.defaultRetry)
      const name = runName(instance, event)
      const metrics = Metrics.eventProcess(instance.service, `${event.source}.${event.type}`)
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
            Effect.flatMap(
              Runner.run(
                {
                  service: instance.service,
                  name,
                  context: decoded.metadata.context,
                  span: consumerSpan(event, delivery, decoded.metadata),
                  metrics
                },
                f(decoded.payload)
              ),
              (exit) => Exit.isSuccess(exit) ? ack : once(settle.failCause(delivery, exit.cause))
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

const defaultRestart: Schedule.Schedule<unknown, unknown> = Schedule.min([
  Schedule.exponential("200 millis"),
  Schedule.spaced("30 seconds")
])

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
  /** counts its publishes the broker confirmed */
  readonly sent: Metric.Metric<number, unknown>
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
      declaredOn: undefined,
      sent: Metrics.eventSent(`${event.source}.${event.type}`)
    }
    codecs.set(event, codec)
  }
  return codec
}

/** OpenTelemetry's messaging attributes of an event's spans */
const messagingAttributes = (event: Any, id: string, operation: "publish" | "process") => ({
  "messaging.system": "rabbitmq",
  "messaging.operation.type": operation,
  "messaging.destination.name": `${event.source}.${event.type}`,
  "messaging.message.id": id
})

/** a handler's span: a consumer's, the child of its publish's span when the event names it */
const consumerSpan = (event: Any, delivery: Delivery, metadata: Metadata): Spans.SpanOptions =>
  Spans.consumer(delivery.properties.headers, {
    ...messagingAttributes(event, metadata.messageId, "process"),
    "mesh.event.attempt": metadata.attempt
  })

/** the name of a handler's run, as a span's: `<service>.event:<source>.<type>` */
const runName = (instance: Service.Instance, event: Any): string => `${instance.service}.event:${event.source}.${event.type}`

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
  readonly metrics: Metrics.EventSettling
}

const planOf = (
  event: Any,
  options: Options,
  instance: Service.Instance,
  queueType: QueueType,
  maxMessageSize: number
): Plan => {
  const delivery = options.delivery ?? "pool"
  const subscription = topology.eventSubscription(event.source, event.type, delivery, instance.service, options.name)
  const deadQueue = topology.eventDeadLetterQueue(subscription)
  const deadLettering = { deadLetterExchange: topology.deadLetterExchange, deadLetterRoutingKey: deadQueue }
  const durable: QueueOptions = {
    durable: true,
    ...QueueTypes.options(queueType, options.deliveryLimit ?? 10),
    ...deadLettering
  }
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
    drainTimeout: options.drainTimeout ?? Subscription.defaultDrainTimeout,
    maxMessageSize,
    metrics: Metrics.eventSettling(instance.service, `${event.source}.${event.type}`)
  }
}

const declare = (broker: Broker["Service"], event: Any, plan: Plan): Effect.Effect<void, BrokerError> =>
  Effect.gen(function*() {
    const exchange = topology.eventExchange(event.source)
    yield* topology.declareCommon(broker)
    yield* topology.ensureExchange(broker, exchange)
    yield* DeadLetterQueue.declare(broker, plan.deadQueue)
    const type = plan.queueOptions.type
    yield* broker.declareQueue(plan.queue, plan.queueOptions).pipe(
      Effect.catch((error) => type === undefined ? Effect.fail(error) : QueueTypes.refused(plan.queue, type)(error))
    )
    yield* broker.bindQueue(plan.queue, exchange, event.type)
  })

/** a Stream subscription stops taking events; its stream may settle what it holds within the deadline */
const drain = <A, E>(consumer: Consumer, fiber: Fiber.Fiber<A, E>, timeout: Duration.Input): Effect.Effect<void> =>
  Effect.andThen(consumer.cancel, Effect.asVoid(Effect.timeoutOption(Fiber.await(fiber), timeout)))
