/**
 * The seam between effect-mesh and its transport: a small contract in the AMQP model.
 *
 * Everything above the transport (RPC protocols, events, timers' leases, discovery) is written once
 * against `Broker`. Two implementations exist: `MemoryBroker` (embedded, in-process, the default) and
 * `AmqpBroker` (RabbitMQ). Both must behave the same: `test/fixtures/brokerContract.ts` runs this
 * contract over both, and `test/fixtures/brokerSuite.ts` everything built on it.
 *
 * @since 0.1.0
 */
import { Context, Schema } from "effect"
import type { Effect, Scope, Stream } from "effect"

/**
 * Why a broker operation failed.
 *
 * - `Closed`: the broker (or its connection) is gone or shutting down.
 * - `Unroutable`: a `mandatory` publish with `confirm` reached no queue.
 * - `Nacked`: the broker refused a confirmed publish.
 * - `NotFound`: a queue or exchange that does not exist.
 * - `Precondition`: a declaration that conflicts with an existing one, or a publish the broker refused
 *   (RabbitMQ: a `userId` that is not the connection's user).
 * - `AccessRefused`: the broker refused the login, or the user has no permission for the operation.
 * - `Tls`: the TLS settings or handshake failed (a broker certificate the CA does not trust, a name it
 *   is not for, a client certificate missing or refused, an unreadable certificate file).
 * - `Transport`: every other transport failure.
 *
 * @since 0.1.0
 */
export const BrokerErrorReason = Schema.Literals([
  "Closed",
  "Unroutable",
  "Nacked",
  "NotFound",
  "Precondition",
  "AccessRefused",
  "Tls",
  "Transport"
])

/**
 * @since 0.1.0
 */
export type BrokerErrorReason = typeof BrokerErrorReason.Type

/**
 * The one error of the `Broker` boundary.
 *
 * @since 0.1.0
 */
export class BrokerError extends Schema.TaggedError<BrokerError>()("BrokerError", {
  reason: BrokerErrorReason,
  message: Schema.String,
  /** what the transport failed with (an amqplib or socket error), when there was one */
  cause: Schema.optional(Schema.Defect())
}) {}

/**
 * The header a dead-lettered message carries on both brokers: why it died, as `"rejected"` (a
 * `nack(false)`), `"expired"` (its TTL ran out in the queue), `"delivery-limit"` (delivered
 * `deliveryLimit` times without an ack) or `"maxlen"` (the oldest of a queue over its `maxLength`).
 *
 * @since 0.1.0
 */
export const deathReasonHeader = "x-death-reason"

/**
 * The header a dead-lettered message carries on both brokers beside `deathReasonHeader`: when it
 * died, in epoch milliseconds (to the second on RabbitMQ).
 *
 * @since 0.1.0
 */
export const deathTimeHeader = "x-death-time"

/**
 * Header values that survive both brokers unchanged.
 *
 * @since 0.1.0
 */
export type HeaderValue = string | number | boolean

/**
 * Message properties, as in AMQP's basic properties.
 *
 * @since 0.1.0
 */
export interface Properties {
  readonly contentType?: string | undefined
  readonly correlationId?: string | undefined
  readonly replyTo?: string | undefined
  readonly messageId?: string | undefined
  readonly type?: string | undefined
  /** per-message time to live in milliseconds; the message is dropped when it expires in a queue */
  readonly expiration?: number | undefined
  /** survive a broker restart (on durable queues) */
  readonly persistent?: boolean | undefined
  readonly headers?: Readonly<Record<string, HeaderValue>> | undefined
  /**
   * who published the message, as the broker verified it (AMQP `user_id`). A publish names its
   * sender; left out, the broker's own identity is used (RabbitMQ: the connection's user; `MemoryBroker`:
   * its `identity` option). A broker refuses a publish naming anyone else (reason `Precondition`), so a
   * consumer can rely on it, unlike anything in the headers.
   */
  readonly userId?: string | undefined
}

/**
 * Options of a publish.
 *
 * @since 0.1.0
 */
export interface PublishOptions extends Properties {
  /** return the message to the publisher when no queue is bound for it */
  readonly mandatory?: boolean | undefined
  /**
   * wait for the broker's confirm; with `mandatory`, an unroutable message fails with
   * `BrokerError` reason `Unroutable`
   */
  readonly confirm?: boolean | undefined
}

/**
 * A body that stays a value until its bytes are read. A broker whose consumers share the publisher's
 * process (`MemoryBroker`) hands the value to them as `Message.local` and makes the bytes only for a
 * consumer that reads `body`; RabbitMQ sends the bytes. The mesh's unary calls and their answers
 * travel so: between a client and an instance of one process nothing is serialized, and everything
 * else (prefetch, order, expiry, returns, requeues) is the queue's as for any message.
 *
 * @since 0.1.0
 */
export interface LocalBody {
  readonly _tag: "LocalBody"
  readonly value: unknown
  /** the body's bytes, for a consumer that reads them; made at most once */
  readonly bytes: () => Uint8Array
  /**
   * headers that a consumer taking the value needs not: made, and added to the publish's, where the
   * message leaves the process or a consumer reads them
   */
  readonly headers?: (() => Readonly<Record<string, HeaderValue>>) | undefined
}

/**
 * What a publish sends: bytes, or a value with the way to its bytes.
 *
 * @since 0.1.0
 */
export type Body = Uint8Array | LocalBody

/**
 * The bytes of a body.
 *
 * @since 0.1.0
 */
export const bytesOf = (body: Body): Uint8Array => body instanceof Uint8Array ? body : body.bytes()

/**
 * The headers of a publish: its options', and a `LocalBody`'s own.
 *
 * @since 0.1.0
 */
export const headersOf = (
  body: Body,
  options: PublishOptions | undefined
): Readonly<Record<string, HeaderValue>> | undefined => {
  const own = body instanceof Uint8Array || body.headers === undefined ? undefined : body.headers()
  return own === undefined ? options?.headers : { ...options?.headers, ...own }
}

/**
 * A message as it arrives at a consumer or a reply queue.
 *
 * @since 0.1.0
 */
export interface Message {
  readonly body: Uint8Array
  /**
   * the value of a `LocalBody`, where the broker hands values over (`MemoryBroker`); `undefined`
   * otherwise, and always on RabbitMQ
   */
  readonly local?: unknown
  readonly exchange: string
  readonly routingKey: string
  readonly properties: Properties
  /** true when the broker delivered this message before and it was not acked */
  readonly redelivered: boolean
}

/**
 * A message delivered by `consume`. Settle it exactly once: `ack` removes it from the queue,
 * `nack(true)` puts it back, `nack(false)` (reject) drops it or dead-letters it when the queue has a
 * dead-letter exchange. Settling a delivery whose channel is gone does nothing: the broker
 * redelivers it.
 *
 * @since 0.1.0
 */
export interface Delivery extends Message {
  readonly ack: Effect.Effect<void>
  readonly nack: (requeue: boolean) => Effect.Effect<void>
  /** how many times this message was delivered before (0 on first delivery) */
  readonly deliveryCount: number
}

/**
 * A message a `mandatory` publish got back because no queue was bound for it.
 *
 * @since 0.1.0
 */
export interface Returned extends Message {
  readonly replyText: string
}

/**
 * @since 0.1.0
 */
export type ExchangeType = "direct" | "topic" | "fanout" | "headers"

/**
 * The arguments of a binding: on a `headers` exchange, the headers a message must have (`x-match`:
 * `all`, the default, or `any` of them); other exchange types route by the pattern alone.
 *
 * @since 0.1.0
 */
export type BindingArguments = Readonly<Record<string, HeaderValue>>

/**
 * @since 0.1.0
 */
export interface ExchangeOptions {
  readonly durable?: boolean | undefined
  readonly autoDelete?: boolean | undefined
}

/**
 * Options of a queue declaration. Unknown options of the real broker are not exposed: what is here
 * behaves the same on both brokers.
 *
 * @since 0.1.0
 */
export interface QueueOptions {
  readonly durable?: boolean | undefined
  /** only the declaring connection may use it; deleted when that connection closes */
  readonly exclusive?: boolean | undefined
  /** deleted when its last consumer goes away */
  readonly autoDelete?: boolean | undefined
  /** messages rejected, expired or over the delivery limit go here */
  readonly deadLetterExchange?: string | undefined
  readonly deadLetterRoutingKey?: string | undefined
  /** default time to live of every message, in milliseconds */
  readonly messageTtl?: number | undefined
  /**
   * at most this many ready messages (delivered, unacked ones do not count): when a publish goes
   * over, the oldest is dropped, or dead-lettered (reason `maxlen`) when the queue has a dead-letter
   * exchange. RabbitMQ's `x-max-length` with `x-overflow: drop-head`.
   */
  readonly maxLength?: number | undefined
  /** only one consumer receives messages at a time; the next takes over when it goes away */
  readonly singleActiveConsumer?: boolean | undefined
  /**
   * RabbitMQ's queue type (`x-queue-type`), said explicitly when given: a queue of another type (or
   * declared without one) by that name is then refused with reason `Precondition`. A quorum queue is
   * replicated on a cluster and always durable; a classic one lives on one node. Unset: the broker's
   * default (classic), not checked.
   */
  readonly type?: QueueType | undefined
  /**
   * after this many deliveries without an ack, a message is dead-lettered (or dropped) instead of
   * being redelivered again. Quorum queues only: on any other queue the declaration is refused.
   */
  readonly deliveryLimit?: number | undefined
  /** delete the queue after it has had no consumers for this many milliseconds */
  readonly expires?: number | undefined
}

/**
 * A queue's type on RabbitMQ: `classic` (on one node) or `quorum` (replicated).
 *
 * @since 0.1.0
 */
export type QueueType = "classic" | "quorum"

/**
 * Why a queue's options cannot be declared as given, or `undefined` when they can: a delivery limit
 * needs a quorum queue. Both brokers refuse such a declaration alike.
 *
 * @since 0.1.0
 */
export const invalidQueueOptions = (name: string, options: QueueOptions | undefined): string | undefined =>
  options?.deliveryLimit !== undefined && options.type !== "quorum"
    ? `queue '${name}': a delivery limit needs a quorum queue (type: "quorum")`
    : undefined

/**
 * @since 0.1.0
 */
export interface ConsumeOptions {
  /** how many unacked deliveries this consumer may hold */
  readonly prefetch: number
  /** a name for logs and the management UI */
  readonly tag?: string | undefined
  /**
   * Sees each delivery as it arrives, before the stream: `true` when it took the delivery, which then
   * never reaches `deliveries`. For a hot path that starts work of its own for a message: it saves a
   * hop through the stream per message. It runs in the transport's callback, so it must return at
   * once and never throw. A broker may hand everything to the stream instead (`MemoryBroker` does,
   * since its deliveries arrive within the publisher's own call).
   */
  readonly take?: ((delivery: Delivery) => boolean) | undefined
}

/**
 * A running consumer. `deliveries` is the stream of messages; `cancel` stops new deliveries while the
 * ones already received can still be settled; closing the consumer's scope requeues anything unsettled.
 * The scope, not the stream, ends the consumer: a `deliveries` stream that is interrupted (a timeout, a
 * race) leaves it running, holding what it received, and the next read goes on where that one stopped.
 *
 * @since 0.1.0
 */
export interface Consumer {
  readonly deliveries: Stream.Stream<Delivery, BrokerError>
  readonly cancel: Effect.Effect<void>
}

/**
 * A private address for replies, with the publish that must be used for requests expecting replies
 * on it (on RabbitMQ the direct reply-to pseudo-queue only works on the channel that publishes).
 * `incoming` carries the replies, the mandatory requests the broker returned, and `Lost` when the
 * replies to what was published before can no longer come.
 *
 * @since 0.1.0
 */
export interface ReplyQueue {
  readonly address: string
  readonly publish: Publish
  readonly incoming: Stream.Stream<Incoming, BrokerError>
}

/**
 * Options of a reply queue.
 *
 * @since 0.1.0
 */
export interface ReplyQueueOptions {
  /** as `ConsumeOptions.take`: sees each reply (or returned request) before `incoming` does */
  readonly take?: ((incoming: Incoming) => boolean) | undefined
}

/**
 * Publishes to an exchange; the empty exchange routes to the queue named by the routing key.
 *
 * @since 0.1.0
 */
export type Publish = (
  exchange: string,
  routingKey: string,
  body: Body,
  options?: PublishOptions
) => Effect.Effect<void, BrokerError>

/**
 * What arrives at a reply queue: a reply, a returned request, or `Lost`: the reply queue lost its
 * channel or connection (RabbitMQ's direct reply-to lives and dies with its channel), so no reply to
 * a request published on it before will ever come; requests published after it are answered as
 * usual. `AmqpBroker` says `Lost` when the reply queue's channel closes (with the connection, or on
 * its own) before it re-attaches; `MemoryBroker` never loses one.
 *
 * @since 0.1.0
 */
export type Incoming =
  | { readonly _tag: "Reply"; readonly message: Message }
  | { readonly _tag: "Returned"; readonly message: Returned }
  | { readonly _tag: "Lost" }

/**
 * What a queue holds now, as a passive declaration (RabbitMQ's `queue.declare` with `passive`) tells.
 *
 * @since 0.1.0
 */
export interface QueueInfo {
  /** ready messages (delivered, unacked ones do not count) */
  readonly messages: number
  /** consumers subscribed to it (cancelled ones do not count) */
  readonly consumers: number
}

/**
 * The broker contract.
 *
 * @since 0.1.0
 */
export class Broker extends Context.Service<Broker, {
  /** a short name for logs: "memory" or "amqp" */
  readonly kind: string
  /**
   * whether it serves: connected, with every consumer and reply queue attached (false while RabbitMQ is
   * away or being recovered, and once the broker is shut down); what `/readyz` reports
   */
  readonly ready: Effect.Effect<boolean>
  readonly declareExchange: (
    name: string,
    type: ExchangeType,
    options?: ExchangeOptions
  ) => Effect.Effect<void, BrokerError>
  /** declares a queue; the empty name asks the broker for a unique one, which is returned */
  readonly declareQueue: (name: string, options?: QueueOptions) => Effect.Effect<string, BrokerError>
  readonly deleteQueue: (name: string) => Effect.Effect<void, BrokerError>
  /** what a queue holds, without declaring it; fails with reason `NotFound` when it does not exist */
  readonly checkQueue: (name: string) => Effect.Effect<QueueInfo, BrokerError>
  readonly bindQueue: (queue: string, exchange: string, pattern: string, args?: BindingArguments) => Effect.Effect<void, BrokerError>
  readonly unbindQueue: (queue: string, exchange: string, pattern: string, args?: BindingArguments) => Effect.Effect<void, BrokerError>
  readonly publish: Publish
  readonly consume: (queue: string, options: ConsumeOptions) => Effect.Effect<Consumer, BrokerError, Scope.Scope>
  readonly replyQueue: (options?: ReplyQueueOptions) => Effect.Effect<ReplyQueue, BrokerError, Scope.Scope>
}>()("effect-mesh/Broker") {}
