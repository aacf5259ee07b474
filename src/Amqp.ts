/**
 * Raw AMQP, as farine has it: messages from and to systems outside the mesh, on any exchange (topic,
 * direct, fanout or headers), with a schema of your own.
 *
 * `consume` binds a queue of the service's own to an exchange with a pattern (or a headers exchange's
 * arguments) and runs a handler per message, as an entrypoint of `Service.make`, by the rules of
 * events: acked after the handler succeeded, retried on the `retry` Schedule, dead-lettered (with the
 * reason in its headers) when the schedule ends, and at once when the body is not JSON or fails the
 * schema (`invalid-payload`). A message that carries the mesh's call context and `traceparent` headers
 * continues that context and trace; one that does not starts a context of its own.
 *
 * `publish` sends a payload, encoded by its schema, to any exchange, confirmed by the broker, with the
 * current call context and trace in its headers for consumers that read them.
 *
 * ```ts
 * const Invoice = Schema.Struct({ id: Schema.String, total: Schema.Number })
 * const invoices = { exchange: "billing", type: "topic" } as const
 *
 * export const LedgerLive = Service.make(Ledger, {
 *   handlers,
 *   entrypoints: [Amqp.consume(Invoice, { ...invoices, pattern: "invoice.*", name: "invoices" }, (invoice) => book(invoice))]
 * })
 *
 * yield* Amqp.publish(invoices, "invoice.created", Invoice, { id: "i-1", total: 12 })
 * ```
 *
 * @since 0.1.0
 */
import { Effect, Exit, Layer, Option, Schema, SchemaIssue } from "effect"
import type { Scope } from "effect"
import type { BindingArguments, BrokerError, ExchangeType, HeaderValue } from "./Broker.ts"
import { Broker } from "./Broker.ts"
import * as CallContext from "./CallContext.ts"
import type { CommonOptions, Metadata as EventMetadata } from "./Event.ts"
import * as DeadLetterQueue from "./internal/deadLetterQueue.ts"
import * as internal from "./internal/events.ts"
import * as Metrics from "./internal/metrics.ts"
import * as QueueTypes from "./internal/queueType.ts"
import * as Settler from "./internal/settler.ts"
import * as Spans from "./internal/spans.ts"
import * as Subscription from "./internal/subscription.ts"
import * as topology from "./internal/topology.ts"
import * as wire from "./internal/wire.ts"
import * as MessageSize from "./internal/messageSize.ts"
import * as Service from "./Service.ts"

/**
 * An exchange of another system: its name and type. It is declared as given (durable unless
 * `durable: false`), which succeeds when it exists with the same settings and fails with a
 * `BrokerError` `Precondition` when it exists with others.
 *
 * @since 0.1.0
 */
export interface Exchange {
  readonly exchange: string
  readonly type: ExchangeType
  readonly durable?: boolean | undefined
}

/**
 * Options of `consume`: the exchange, what to bind, and the options every subscription takes.
 *
 * @since 0.1.0
 */
export interface ConsumeOptions extends Exchange, Omit<CommonOptions, "name"> {
  /** names the subscription: its queue is `mesh.amqp.<service>.<name>` */
  readonly name: string
  /** the binding's routing key or topic pattern (default `#` on topic, `""` elsewhere; fanout and headers ignore it) */
  readonly pattern?: string | undefined
  /** a headers exchange's binding: the headers to match, and `x-match` (`all`, the default, or `any`) */
  readonly arguments?: BindingArguments | undefined
}

/**
 * What a handler knows about a message besides its payload: the metadata of an event, and where it
 * came from.
 *
 * @since 0.1.0
 */
export interface Metadata extends EventMetadata {
  readonly exchange: string
  readonly routingKey: string
  /** its headers, as they arrived */
  readonly headers: Readonly<Record<string, HeaderValue>>
}

/**
 * Why a publish failed: `InvalidPayload` (the schema refused the payload) or `Transport`.
 *
 * @since 0.1.0
 */
export class AmqpError extends Schema.TaggedError<AmqpError>()("AmqpError", {
  reason: Schema.Literals(["InvalidPayload", "Transport"]),
  exchange: Schema.String,
  routingKey: Schema.String,
  message: Schema.String
}) {}

/**
 * Options of `publish`.
 *
 * @since 0.1.0
 */
export interface PublishOptions {
  /** headers besides the call context and `traceparent` (which win over these) */
  readonly headers?: Readonly<Record<string, HeaderValue>> | undefined
  /** the message id (default: random) */
  readonly messageId?: string | undefined
  /** the AMQP `type` property */
  readonly type?: string | undefined
}

/**
 * Consumes messages of another system from an exchange, as an entrypoint of `Service.make`: a handler
 * run per message, decoded by `schema` from JSON; acked when it succeeds, retried on `retry`, then
 * dead-lettered. The handler's requirements become the service Layer's.
 *
 * @since 0.1.0
 */
export const consume = <S extends Schema.Top, X, E, R>(
  schema: S,
  options: ConsumeOptions,
  handler: (payload: S["Type"], metadata: Metadata) => Effect.Effect<X, E, R>
): Service.Entrypoint<BrokerError, Broker | Exclude<R, Scope.Scope>> =>
  Service.entrypoint(`amqp ${options.exchange} (${options.name})`, (instance) =>
    Layer.effectDiscard(Effect.gen(function*() {
      const broker = yield* Broker
      const queue = queueOf(instance.service, options.name)
      const deadQueue = topology.eventDeadLetterQueue(queue)
      const queueType = yield* QueueTypes.resolve(options.queueType, QueueTypes.defaults.events)
      const destination = `${options.exchange}:${options.name}`
      const maxMessageSize = yield* MessageSize.resolve(options.maxMessageSize)
      const plan = {
        label: `${instance.service}: amqp ${options.exchange} (${options.name})`,
        queue,
        deadQueue,
        durable: true,
        maxMessageSize,
        metrics: Metrics.eventSettling(instance.service, destination)
      }
      yield* topology.ensureCommon(broker)
      yield* broker.declareExchange(options.exchange, options.type, { durable: options.durable !== false })
      yield* DeadLetterQueue.declare(broker, deadQueue)
      yield* broker.declareQueue(queue, {
        durable: true,
        ...QueueTypes.options(queueType, options.deliveryLimit ?? 10),
        deadLetterExchange: topology.deadLetterExchange,
        deadLetterRoutingKey: deadQueue
      }).pipe(Effect.catch(QueueTypes.refused(queue, queueType)))
      yield* broker.bindQueue(queue, options.exchange, options.pattern ?? (options.type === "topic" ? "#" : ""), options.arguments)
      yield* Subscription.run<Metadata>({
        broker,
        label: plan.label,
        queue,
        concurrency: Math.max(1, options.concurrency ?? 16),
        drainTimeout: options.drainTimeout ?? Subscription.defaultDrainTimeout,
        tag: `${plan.label} ${instance.instanceId}`,
        settler: Settler.make(broker, plan, codecOf(schema).decode, options.retry ?? Subscription.defaultRetry),
        service: instance.service,
        runName: `${instance.service}.amqp:${options.exchange}`,
        metrics: Metrics.eventProcess(instance.service, destination),
        metadata: (delivery, metadata) => ({
          ...metadata,
          exchange: delivery.exchange,
          routingKey: delivery.routingKey,
          headers: delivery.properties.headers ?? {}
        }),
        span: (delivery, metadata) =>
          Spans.consumer(delivery.properties.headers, {
            "messaging.system": "rabbitmq",
            "messaging.operation.type": "process",
            "messaging.destination.name": delivery.exchange,
            "messaging.rabbitmq.destination.routing_key": delivery.routingKey,
            "messaging.message.id": metadata.messageId,
            "mesh.event.attempt": metadata.attempt
          }),
        handler: handler as (payload: unknown, metadata: Metadata) => Effect.Effect<X, E, R>
      })
    })))

/**
 * Publishes a payload, encoded by `schema` as JSON, to an exchange of another system (declared as
 * `exchange` says, once per broker), persistent and confirmed by the broker. The current call context
 * and trace travel in its headers.
 *
 * @since 0.1.0
 */
export const publish = <S extends Schema.Top>(
  exchange: Exchange,
  routingKey: string,
  schema: S,
  payload: S["~type.make.in"],
  options?: PublishOptions
): Effect.Effect<void, AmqpError, Broker> =>
  Effect.gen(function*() {
    const broker = yield* Broker
    const fail = (reason: AmqpError["reason"], message: string) =>
      new AmqpError({ reason, exchange: exchange.exchange, routingKey, message })
    const made = yield* Effect.mapError(schema.makeEffect(payload), (issue) => fail("InvalidPayload", formatIssue(issue)))
    const encoded = codecOf(schema).encode(made)
    if (Exit.isFailure(encoded)) {
      return yield* fail("InvalidPayload", Option.match(Exit.findErrorOption(encoded), {
        onNone: () => "the payload could not be encoded",
        onSome: (error) => formatIssue(error.issue)
      }))
    }
    const id = options?.messageId ?? crypto.randomUUID()
    const context = yield* internal.nextContext(exchange.exchange, routingKey, id)
    yield* Effect.useSpan(
      `${exchange.exchange} publish`,
      {
        kind: "producer",
        attributes: {
          "messaging.system": "rabbitmq",
          "messaging.operation.type": "publish",
          "messaging.destination.name": exchange.exchange,
          "messaging.rabbitmq.destination.routing_key": routingKey,
          "messaging.message.id": id
        }
      },
      (span) =>
        Effect.andThen(
          topology.ensureExchange(broker, exchange.exchange, exchange.type, exchange.durable !== false),
          broker.publish(exchange.exchange, routingKey, wire.encodeJson(encoded.value), {
            confirm: true,
            persistent: true,
            contentType: wire.contentType,
            messageId: id,
            correlationId: context.correlationId,
            ...(options?.type === undefined ? {} : { type: options.type }),
            headers: {
              ...options?.headers,
              ...CallContext.toHeaders(context),
              [wire.header.traceparent]: wire.traceparent(span.traceId, span.spanId, span.sampled)
            }
          })
        )
    ).pipe(Effect.mapError((error) => fail("Transport", error.message)))
  })

/**
 * The dead-letter queue of a `consume` subscription, to inspect or replay what it could not handle
 * (`mesh dlq`, `DeadLetters`).
 *
 * @since 0.1.0
 */
export const deadLetterQueue = (subscriber: { readonly service: string; readonly name: string }): string =>
  topology.eventDeadLetterQueue(queueOf(subscriber.service, subscriber.name))

// ---- internal ----

const queueOf = (service: string, name: string): string => `mesh.amqp.${service}.${name}`

const formatIssue = SchemaIssue.makeFormatterDefault()

interface Codec {
  readonly encode: (value: unknown) => Exit.Exit<unknown, Schema.SchemaError>
  readonly decode: (json: unknown) => Exit.Exit<unknown, Schema.SchemaError>
}

/** a schema's JSON codec, made once per schema (not on every publish) */
const codecs = new WeakMap<Schema.Top, Codec>()

const codecOf = (schema: Schema.Top): Codec => {
  let codec = codecs.get(schema)
  if (codec === undefined) {
    const json = Schema.toCodecJson(schema) as unknown as Schema.Codec<unknown, unknown>
    codec = { encode: Schema.encodeUnknownExit(json), decode: Schema.decodeUnknownExit(json) }
    codecs.set(schema, codec)
  }
  return codec
}
