/**
 * The embedded, in-process `Broker`: RabbitMQ's model (exchanges, bindings, queues, competing
 * consumers, acks, dead-lettering, TTLs, returns) kept in plain JavaScript data structures.
 *
 * It is the default transport: a whole system of services runs in one process with no RabbitMQ, and
 * tests get a fresh broker per layer build. Routing and dispatch are synchronous functions over maps
 * and ring buffers; each consumer and reply queue owns one effect `Queue`, and a single background
 * fiber per broker expires messages and idle queues (it sleeps on the effect `Clock`, so `TestClock`
 * drives it). The broker is one "connection": exclusive queues live until its scope closes.
 *
 * @since 0.1.0
 */
import { Cause, Channel, Clock, Effect, Layer, Queue, Scheduler, Stream } from "effect"
import type { Scope } from "effect"
import type { NonEmptyReadonlyArray } from "effect/Array"
import {
  type BindingArguments,
  type Body,
  Broker,
  BrokerError,
  type BrokerErrorReason,
  type ConsumeOptions,
  type Consumer,
  deathReasonHeader,
  deathTimeHeader,
  type Delivery,
  type ExchangeOptions,
  type ExchangeType,
  type HeaderValue,
  headersOf,
  invalidQueueOptions,
  type Incoming,
  type Message,
  type Properties,
  type PublishOptions,
  type QueueInfo,
  type QueueOptions,
  type ReplyQueue,
  type ReplyQueueOptions
} from "./Broker.ts"
import * as Metrics from "./internal/metrics.ts"

/**
 * Builds a broker that lives as long as the surrounding scope. When the scope closes, every
 * operation fails with `BrokerError` reason `Closed`, consumer and reply streams end, and all
 * queues (exclusive or not) are gone. A consumer lives until its scope closes (or `cancel`), as on
 * RabbitMQ: a `deliveries` stream that stops, interrupted or done pulling (`Stream.take`), leaves it
 * running, and it emits one delivery per pull, so nothing buffered is lost between runs.
 *
 * Every consumer lives in this process, so a `LocalBody` reaches consumers as its value
 * (`Message.local`), its bytes made only for one that reads `body`: unary calls between a client and an
 * instance on this broker are not serialized (see `Options`). A consumer's or reply queue's `take` gets
 * each delivery in the publisher's own call, as RabbitMQ's client gets it in its socket's callback.
 *
 * @since 0.1.0
 */
export const make: Effect.Effect<Broker["Service"], never, Scope.Scope> = Effect.suspend(() => makeWith())

/**
 * @since 0.1.0
 */
export interface Options {
  /**
   * Unary calls from a client to a service instance on this broker go through the queue as values:
   * the handler gets the caller's payload, `CallContext` and span as they are, and its result goes back
   * as it is; nothing is serialized (default true). Streams, untyped calls and rpcs with middleware are
   * serialized. `false` hands every consumer bytes, as RabbitMQ does.
   */
  readonly directCalls?: boolean | undefined
  /**
   * who every publish on this broker is from (its `userId`), as RabbitMQ stamps a connection's user;
   * a publish naming anyone else is refused (reason `Precondition`). Default: none, so consumers see
   * no verified sender (everything in one process is trusted alike) and any named `userId` is refused.
   */
  readonly identity?: string | undefined
}

/**
 * `make` with options.
 *
 * @since 0.1.0
 */
export const makeWith = (options?: Options): Effect.Effect<Broker["Service"], never, Scope.Scope> => Effect.gen(function*() {
  const clock = yield* Clock.Clock
  const state = new BrokerState(clock, options?.directCalls !== false, options?.identity)
  yield* sweeper(state).pipe(Effect.forkScoped)
  yield* Effect.addFinalizer(() => Effect.sync(() => state.close()))

  const consume = (queue: string, options: ConsumeOptions): Effect.Effect<Consumer, BrokerError, Scope.Scope> =>
    Effect.flatMap(Effect.zip(mailboxOf<Delivery>(), Effect.context<never>()), ([mailbox, context]) =>
      Effect.map(
        Effect.acquireRelease(
          Effect.suspend(() => state.addConsumer(queue, options, mailbox, Metrics.redelivery("memory", queue, context))),
          (consumer) => Effect.sync(() => state.closeConsumer(consumer))
        ),
        (consumer): Consumer => ({
          // one delivery per pull, so `Stream.take(n)` never swallows buffered deliveries
          deliveries: Stream.fromChannel(Channel.fromQueue(mailbox)),
          cancel: Effect.sync(() => state.cancelConsumer(consumer))
        })
      ))

  // A reply queue here is never `Lost`: there is no connection to lose, and it lives as long as its scope
  const replyQueue = (options?: ReplyQueueOptions): Effect.Effect<ReplyQueue, BrokerError, Scope.Scope> => Effect.flatMap(
    mailboxOf<Incoming>(),
    (mailbox) =>
      Effect.map(
        Effect.acquireRelease(
          Effect.suspend(() => state.addReply(mailbox, options?.take)),
          (reply) => Effect.sync(() => state.closeReply(reply))
        ),
        (reply): ReplyQueue => ({
          address: reply.address,
          publish: (exchange, routingKey, body, options) => state.publish(exchange, routingKey, body, options, reply),
          incoming: Stream.fromChannel(Channel.fromQueue(mailbox))
        })
      )
  )

  const broker = Broker.of({
    kind: "memory",
    ready: Effect.sync(() => !state.closed),
    declareExchange: (name, type, options) => Effect.suspend(() => state.declareExchange(name, type, options)),
    declareQueue: (name, options) => Effect.suspend(() => state.declareQueue(name, options)),
    deleteQueue: (name) => Effect.suspend(() => state.deleteQueueByName(name)),
    checkQueue: (name) => Effect.suspend(() => state.checkQueue(name)),
    bindQueue: (queue, exchange, pattern, args) => Effect.suspend(() => state.bind(queue, exchange, pattern, args)),
    unbindQueue: (queue, exchange, pattern, args) => Effect.suspend(() => state.unbind(queue, exchange, pattern, args)),
    publish: (exchange, routingKey, body, options) => state.publish(exchange, routingKey, body, options, undefined),
    consume,
    replyQueue
  })
  return broker
})

/**
 * A fresh in-memory broker per layer build. Effect memoizes a layer within one build (and across
 * nested `Effect.provide` calls sharing a memo map), so services provided together share one broker;
 * wrap it in `Layer.fresh(MemoryBroker.layer)` (or `Effect.provide(layer, { local: true })`) when a
 * test needs a broker of its own.
 *
 * @since 0.1.0
 */
export const layer: Layer.Layer<Broker> = layerWithOptions(undefined)

/**
 * `layer` with options: `layerWith({ directCalls: false })` hands every consumer bytes, as RabbitMQ does.
 *
 * @since 0.1.0
 */
export const layerWith = (options?: Options): Layer.Layer<Broker> => layerWithOptions(options)

// ---- internal ----

function layerWithOptions(options: Options | undefined): Layer.Layer<Broker> {
  return Layer.effect(Broker, makeWith(options))
}

/**
 * A consumer's or reply queue's mailbox. A message routed to it wakes the fiber waiting for it in a
 * microtask, in the same turn of the event loop, rather than one `setImmediate` turn later (the
 * default dispatcher); the fibers themselves keep the default scheduler and its yields.
 */
const mailboxOf = <A>() =>
  Effect.provideService(Queue.unbounded<NonEmptyReadonlyArray<A>, Cause.Done>(), Scheduler.Scheduler, wakeInline)

const wakeInline = new Scheduler.MixedScheduler("sync")

type MutableProperties = { -readonly [K in keyof Properties]: Properties[K] }

type DeathReason = "rejected" | "expired" | "delivery-limit" | "maxlen"

const emptyProperties: Properties = {}

const ACK = 0
const REQUEUE = 1
const REJECT = 2
type Settlement = typeof ACK | typeof REQUEUE | typeof REJECT

const fail = (reason: BrokerErrorReason, message: string): Effect.Effect<never, BrokerError> =>
  Effect.fail(new BrokerError({ reason, message }))

const closedError = (): Effect.Effect<never, BrokerError> => fail("Closed", "the memory broker is closed")

const newName = (prefix: string): string => `${prefix}${globalThis.crypto.randomUUID()}`

/**
 * A message as published: shared by every queue it is routed to, and reused as a reply `Message`. The
 * bytes of a `LocalBody` are made when a consumer first reads them.
 */
class Payload implements Message {
  private source: Body
  readonly exchange: string
  readonly routingKey: string
  readonly properties: Properties
  readonly local: unknown
  readonly redelivered = false
  constructor(source: Body, exchange: string, routingKey: string, properties: Properties, local: boolean) {
    this.source = source
    this.exchange = exchange
    this.routingKey = routingKey
    this.properties = properties
    this.local = local && !(source instanceof Uint8Array) ? source.value : undefined
  }
  get body(): Uint8Array {
    const source = this.source
    if (source instanceof Uint8Array) return source
    const bytes = source.bytes()
    this.source = bytes
    return bytes
  }
}

/** a message waiting in (or delivered from) one queue */
interface Entry {
  readonly payload: Payload
  /** how many times it was delivered */
  deliveries: number
  redelivered: boolean
  readonly expiresAt: number | undefined
}

/** a growable ring buffer: O(1) push, shift and unshift */
class Deque<A> {
  private buffer: Array<A | undefined> = new Array(16)
  private head = 0
  length = 0

  push(value: A): void {
    if (this.length === this.buffer.length) this.grow()
    this.buffer[(this.head + this.length) & (this.buffer.length - 1)] = value
    this.length++
  }

  unshift(value: A): void {
    if (this.length === this.buffer.length) this.grow()
    this.head = (this.head - 1 + this.buffer.length) & (this.buffer.length - 1)
    this.buffer[this.head] = value
    this.length++
  }

  peek(): A | undefined {
    return this.length === 0 ? undefined : this.buffer[this.head]
  }

  shift(): A | undefined {
    if (this.length === 0) return undefined
    const value = this.buffer[this.head]
    this.buffer[this.head] = undefined
    this.head = (this.head + 1) & (this.buffer.length - 1)
    this.length--
    return value
  }

  /** removes the elements matching `remove` (keeping the others' order) and returns them */
  extract(remove: (value: A) => boolean): Array<A> {
    const removed: Array<A> = []
    const kept = new Deque<A>()
    let value = this.shift()
    while (value !== undefined) {
      if (remove(value)) removed.push(value)
      else kept.push(value)
      value = this.shift()
    }
    this.buffer = kept.buffer
    this.head = kept.head
    this.length = kept.length
    return removed
  }

  clear(): void {
    this.buffer = new Array(16)
    this.head = 0
    this.length = 0
  }

  forEach(f: (value: A) => void): void {
    const mask = this.buffer.length - 1
    for (let i = 0; i < this.length; i++) f(this.buffer[(this.head + i) & mask] as A)
  }

  private grow(): void {
    const next: Array<A | undefined> = new Array(this.buffer.length * 2)
    const mask = this.buffer.length - 1
    for (let i = 0; i < this.length; i++) next[i] = this.buffer[(this.head + i) & mask]
    this.buffer = next
    this.head = 0
  }
}

interface Binding {
  readonly queue: QueueState
  readonly pattern: string
  readonly words: ReadonlyArray<string>
  /** its arguments, and the same as text: two bindings differing only in them are two (as in RabbitMQ) */
  readonly args: BindingArguments | undefined
  readonly argsKey: string
}

const argsKeyOf = (args: BindingArguments | undefined): string =>
  args === undefined ? "" : JSON.stringify(Object.keys(args).sort().map((key) => [key, args[key]]))

/**
 * A headers exchange's match, as RabbitMQ's: every header of the binding (`x-match` `all`, the
 * default) or one of them (`any`) has the same value in the message; arguments starting with `x-` are
 * not headers to match
 */
const matchHeaders = (args: BindingArguments | undefined, headers: Readonly<Record<string, HeaderValue>> | undefined): boolean => {
  const matchAny = args?.["x-match"] === "any"
  let matched = false
  for (const key in args) {
    if (key.startsWith("x-")) continue
    const same = headers !== undefined && key in headers && headers[key] === args[key]
    if (matchAny && same) return true
    if (!matchAny && !same) return false
    matched = true
  }
  return !matchAny && matched
}

class ExchangeState {
  readonly name: string
  readonly type: ExchangeType
  readonly options: ExchangeOptions
  bindings: ReadonlyArray<Binding> = []
  // routing tables derived from `bindings`; replaced (never mutated) on change, so routing can iterate them
  direct = new Map<string, ReadonlyArray<QueueState>>()
  fanout: ReadonlyArray<QueueState> = []
  readonly topicCache = new Map<string, ReadonlyArray<QueueState>>()

  constructor(name: string, type: ExchangeType, options: ExchangeOptions) {
    this.name = name
    this.type = type
    this.options = options
  }

  setBindings(bindings: ReadonlyArray<Binding>): void {
    this.bindings = bindings
    this.topicCache.clear()
    if (this.type === "direct") {
      const direct = new Map<string, Array<QueueState>>()
      for (const b of bindings) {
        const queues = direct.get(b.pattern)
        if (queues === undefined) direct.set(b.pattern, [b.queue])
        else if (!queues.includes(b.queue)) queues.push(b.queue)
      }
      this.direct = direct
    } else if (this.type === "fanout") {
      this.fanout = Array.from(new Set(bindings.map((b) => b.queue)))
    }
  }

  routeHeaders(headers: Readonly<Record<string, HeaderValue>> | undefined): ReadonlyArray<QueueState> {
    const matched = new Set<QueueState>()
    for (const b of this.bindings) if (matchHeaders(b.args, headers)) matched.add(b.queue)
    return Array.from(matched)
  }

  routeTopic(routingKey: string): ReadonlyArray<QueueState> {
    const cached = this.topicCache.get(routingKey)
    if (cached !== undefined) return cached
    const words = splitWords(routingKey)
    const matched = new Set<QueueState>()
    for (const b of this.bindings) {
      if (!matched.has(b.queue) && matchTopic(b.words, 0, words, 0)) matched.add(b.queue)
    }
    const queues = Array.from(matched)
    if (this.topicCache.size >= 4096) this.topicCache.clear()
    this.topicCache.set(routingKey, queues)
    return queues
  }
}

const splitWords = (key: string): ReadonlyArray<string> => key === "" ? [] : key.split(".")

/** AMQP topic matching: `*` is exactly one word, `#` is zero or more words */
const matchTopic = (
  pattern: ReadonlyArray<string>,
  pi: number,
  key: ReadonlyArray<string>,
  ki: number
): boolean => {
  while (pi < pattern.length) {
    const word = pattern[pi]
    if (word === "#") {
      if (pi === pattern.length - 1) return true
      for (let j = ki; j <= key.length; j++) {
        if (matchTopic(pattern, pi + 1, key, j)) return true
      }
      return false
    }
    if (ki >= key.length || (word !== "*" && word !== key[ki])) return false
    pi++
    ki++
  }
  return ki === key.length
}

class QueueState {
  readonly name: string
  readonly options: QueueOptions
  readonly messages = new Deque<Entry>()
  /** consumers that may receive new deliveries, in subscription order */
  consumers: Array<ConsumerState> = []
  /** every consumer whose scope is open, cancelled or not */
  readonly open = new Set<ConsumerState>()
  readonly bindings = new Set<Binding & { readonly exchange: ExchangeState }>()
  /** round-robin position in `consumers` */
  next = 0
  /** messages in `messages` that carry an `expiresAt` */
  expiring = 0
  /** when `expires` is set and the queue has no consumers: the time it is deleted */
  idleDeadline: number | undefined = undefined
  draining = false
  deleted = false

  constructor(name: string, options: QueueOptions) {
    this.name = name
    this.options = options
  }
}

class ConsumerState {
  readonly queue: QueueState
  readonly mailbox: Queue.Queue<NonEmptyReadonlyArray<Delivery>, Cause.Done>
  readonly prefetch: number
  readonly tag: string | undefined
  readonly take: ((delivery: Delivery) => boolean) | undefined
  readonly unacked = new Set<MemoryDelivery>()
  /** counts a redelivered delivery (internal/metrics.ts) */
  readonly redelivered: () => void
  cancelled = false
  closed = false

  constructor(
    queue: QueueState,
    mailbox: Queue.Queue<NonEmptyReadonlyArray<Delivery>, Cause.Done>,
    options: ConsumeOptions,
    redelivered: () => void
  ) {
    this.redelivered = redelivered
    this.queue = queue
    this.mailbox = mailbox
    // as in AMQP, a prefetch of 0 means no limit
    this.prefetch = options.prefetch > 0 ? options.prefetch : Infinity
    this.tag = options.tag
    this.take = options.take
  }
}

class ReplyState {
  readonly address: string
  readonly mailbox: Queue.Queue<NonEmptyReadonlyArray<Incoming>, Cause.Done>
  readonly take: ((incoming: Incoming) => boolean) | undefined
  closed = false

  constructor(
    address: string,
    mailbox: Queue.Queue<NonEmptyReadonlyArray<Incoming>, Cause.Done>,
    take: ((incoming: Incoming) => boolean) | undefined
  ) {
    this.address = address
    this.mailbox = mailbox
    this.take = take
  }

  /** what `take` does not take goes to the stream */
  offer(incoming: Incoming): void {
    if (this.take === undefined || !this.take(incoming)) Queue.offerUnsafe(this.mailbox, [incoming])
  }
}

class MemoryDelivery implements Delivery {
  readonly exchange: string
  readonly routingKey: string
  readonly properties: Properties
  readonly redelivered: boolean
  readonly deliveryCount: number
  readonly consumer: ConsumerState
  readonly entry: Entry
  readonly state: BrokerState

  constructor(state: BrokerState, consumer: ConsumerState, entry: Entry) {
    const payload = entry.payload
    this.exchange = payload.exchange
    this.routingKey = payload.routingKey
    this.properties = payload.properties
    this.redelivered = entry.redelivered
    this.deliveryCount = entry.deliveries
    this.consumer = consumer
    this.entry = entry
    this.state = state
  }

  get body(): Uint8Array {
    return this.entry.payload.body
  }

  get local(): unknown {
    return this.entry.payload.local
  }

  // built on access: most deliveries are settled once, through one of the two
  get ack(): Effect.Effect<void> {
    return Effect.sync(() => this.state.settle(this, ACK))
  }

  get nack(): (requeue: boolean) => Effect.Effect<void> {
    return (requeue) => Effect.sync(() => this.state.settle(this, requeue ? REQUEUE : REJECT))
  }
}

const sameQueueOptions = (a: QueueOptions, b: QueueOptions): boolean =>
  (a.durable === true) === (b.durable === true) &&
  (a.exclusive === true) === (b.exclusive === true) &&
  (a.autoDelete === true) === (b.autoDelete === true) &&
  (a.singleActiveConsumer === true) === (b.singleActiveConsumer === true) &&
  a.deadLetterExchange === b.deadLetterExchange &&
  a.deadLetterRoutingKey === b.deadLetterRoutingKey &&
  a.messageTtl === b.messageTtl &&
  a.maxLength === b.maxLength &&
  a.type === b.type &&
  a.deliveryLimit === b.deliveryLimit &&
  a.expires === b.expires

/** properties whose headers (a `LocalBody`'s) are made when a consumer reads them */
class LocalProperties implements Properties {
  readonly contentType: string | undefined
  readonly correlationId: string | undefined
  readonly replyTo: string | undefined
  readonly messageId: string | undefined
  readonly type: string | undefined
  readonly expiration: number | undefined
  readonly persistent: boolean | undefined
  readonly userId: string | undefined
  // not own enumerable fields: a copy of the properties (`{ ...properties }`) copies the headers alone
  #made: Readonly<Record<string, HeaderValue>> | undefined = undefined
  readonly #body: Body
  readonly #options: PublishOptions | undefined
  constructor(options: PublishOptions | undefined, replyTo: string | undefined, body: Body) {
    this.contentType = options?.contentType
    this.correlationId = options?.correlationId
    this.replyTo = options?.replyTo ?? replyTo
    this.messageId = options?.messageId
    this.type = options?.type
    this.expiration = options?.expiration
    this.persistent = options?.persistent
    this.userId = options?.userId
    this.#body = body
    this.#options = options
  }
  get headers(): Readonly<Record<string, HeaderValue>> | undefined {
    return this.#made ??= headersOf(this.#body, this.#options)
  }
}

const toProperties = (options: PublishOptions | undefined, replyTo: string | undefined, body: Body): Properties =>
  body instanceof Uint8Array ? plainProperties(options, replyTo) : new LocalProperties(options, replyTo, body)

const plainProperties = (options: PublishOptions | undefined, replyTo: string | undefined): Properties => {
  if (options === undefined) return replyTo === undefined ? emptyProperties : { replyTo }
  const p: MutableProperties = {}
  if (options.contentType !== undefined) p.contentType = options.contentType
  if (options.correlationId !== undefined) p.correlationId = options.correlationId
  if (options.replyTo !== undefined) p.replyTo = options.replyTo
  else if (replyTo !== undefined) p.replyTo = replyTo
  if (options.messageId !== undefined) p.messageId = options.messageId
  if (options.type !== undefined) p.type = options.type
  if (options.expiration !== undefined) p.expiration = options.expiration
  if (options.persistent !== undefined) p.persistent = options.persistent
  if (options.headers !== undefined) p.headers = options.headers
  if (options.userId !== undefined) p.userId = options.userId
  return p
}

/** All of the broker's state and logic, as synchronous functions; the service wraps them in effects. */
class BrokerState {
  readonly clock: Clock.Clock
  readonly exchanges = new Map<string, ExchangeState>()
  readonly queues = new Map<string, QueueState>()
  readonly replies = new Map<string, ReplyState>()
  readonly consumers = new Set<ConsumerState>()
  closed = false
  /** whether a `LocalBody` reaches consumers as its value (`Options.directCalls`) */
  readonly local: boolean
  /** the earliest time the sweeper must run (a message expiry or an idle queue deadline) */
  nextDeadline = Infinity
  /** set while the sweeper waits: wakes it when `nextDeadline` moves earlier */
  wake: (() => void) | undefined = undefined

  /** the sender of every publish (`Options.identity`) */
  readonly identity: string | undefined

  constructor(clock: Clock.Clock, local: boolean, identity: string | undefined) {
    this.clock = clock
    this.local = local
    this.identity = identity
  }

  // -- declarations --

  declareExchange(name: string, type: ExchangeType, options: ExchangeOptions = {}): Effect.Effect<void, BrokerError> {
    if (this.closed) return closedError()
    if (name === "") return fail("Precondition", "the default exchange cannot be declared")
    const existing = this.exchanges.get(name)
    if (existing === undefined) {
      this.exchanges.set(name, new ExchangeState(name, type, options))
      return Effect.void
    }
    if (
      existing.type !== type ||
      (existing.options.durable === true) !== (options.durable === true) ||
      (existing.options.autoDelete === true) !== (options.autoDelete === true)
    ) {
      return fail("Precondition", `exchange '${name}' exists with other options (${existing.type})`)
    }
    return Effect.void
  }

  declareQueue(name: string, options: QueueOptions = {}): Effect.Effect<string, BrokerError> {
    if (this.closed) return closedError()
    const invalid = invalidQueueOptions(name, options)
    if (invalid !== undefined) return fail("Precondition", invalid)
    const existing = name === "" ? undefined : this.queues.get(name)
    if (existing !== undefined) {
      if (!sameQueueOptions(existing.options, options)) {
        return fail("Precondition", `queue '${name}' exists with other options`)
      }
      if (existing.options.expires !== undefined && existing.open.size === 0) this.startIdle(existing)
      return Effect.succeed(name)
    }
    const queue = new QueueState(name === "" ? newName("amq.gen-") : name, options)
    this.queues.set(queue.name, queue)
    if (options.expires !== undefined) this.startIdle(queue)
    return Effect.succeed(queue.name)
  }

  deleteQueueByName(name: string): Effect.Effect<void, BrokerError> {
    if (this.closed) return closedError()
    const queue = this.queues.get(name)
    if (queue !== undefined) this.deleteQueue(queue)
    return Effect.void
  }

  deleteQueue(queue: QueueState): void {
    if (queue.deleted) return
    queue.deleted = true
    this.queues.delete(queue.name)
    const exchanges = new Set<ExchangeState>()
    for (const b of queue.bindings) exchanges.add(b.exchange)
    queue.bindings.clear()
    for (const exchange of exchanges) {
      this.setBindings(exchange, exchange.bindings.filter((b) => b.queue !== queue))
    }
    queue.messages.clear()
    queue.expiring = 0
    queue.idleDeadline = undefined
    // as RabbitMQ cancels the consumers of a deleted queue: their streams end after what they hold
    for (const consumer of queue.consumers) {
      consumer.cancelled = true
      Queue.endUnsafe(consumer.mailbox)
    }
    queue.consumers = []
  }

  checkQueue(name: string): Effect.Effect<QueueInfo, BrokerError> {
    if (this.closed) return closedError()
    const queue = this.queues.get(name)
    if (queue === undefined) return fail("NotFound", `no queue '${name}'`)
    return Effect.succeed({ messages: queue.messages.length, consumers: queue.consumers.length })
  }

  bind(queueName: string, exchangeName: string, pattern: string, args?: BindingArguments): Effect.Effect<void, BrokerError> {
    if (this.closed) return closedError()
    if (exchangeName === "") return fail("Precondition", "queues cannot be bound to the default exchange")
    const exchange = this.exchanges.get(exchangeName)
    if (exchange === undefined) return fail("NotFound", `no exchange '${exchangeName}'`)
    const queue = this.queues.get(queueName)
    if (queue === undefined) return fail("NotFound", `no queue '${queueName}'`)
    const argsKey = argsKeyOf(args)
    if (exchange.bindings.some((b) => b.queue === queue && b.pattern === pattern && b.argsKey === argsKey)) return Effect.void
    const binding = { queue, pattern, words: splitWords(pattern), exchange, args, argsKey }
    queue.bindings.add(binding)
    this.setBindings(exchange, [...exchange.bindings, binding])
    return Effect.void
  }

  unbind(queueName: string, exchangeName: string, pattern: string, args?: BindingArguments): Effect.Effect<void, BrokerError> {
    if (this.closed) return closedError()
    const exchange = this.exchanges.get(exchangeName)
    if (exchange === undefined) return fail("NotFound", `no exchange '${exchangeName}'`)
    const queue = this.queues.get(queueName)
    if (queue === undefined) return fail("NotFound", `no queue '${queueName}'`)
    const argsKey = argsKeyOf(args)
    for (const b of queue.bindings) {
      if (b.exchange === exchange && b.pattern === pattern && b.argsKey === argsKey) queue.bindings.delete(b)
    }
    this.setBindings(exchange, exchange.bindings.filter((b) => !(b.queue === queue && b.pattern === pattern && b.argsKey === argsKey)))
    return Effect.void
  }

  setBindings(exchange: ExchangeState, bindings: ReadonlyArray<Binding>): void {
    const hadBindings = exchange.bindings.length > 0
    exchange.setBindings(bindings)
    if (hadBindings && bindings.length === 0 && exchange.options.autoDelete === true) {
      this.exchanges.delete(exchange.name)
    }
  }

  // -- publishing and routing --

  publish(
    exchangeName: string,
    routingKey: string,
    body: Body,
    options: PublishOptions | undefined,
    reply: ReplyState | undefined
  ): Effect.Effect<void, BrokerError> {
    return Effect.suspend(() => {
      if (this.closed) return closedError()
      let exchange: ExchangeState | undefined
      if (exchangeName !== "") {
        exchange = this.exchanges.get(exchangeName)
        if (exchange === undefined) return fail("NotFound", `no exchange '${exchangeName}'`)
      }
      // as RabbitMQ checks user_id against the connection's user
      if (options?.userId !== undefined && options.userId !== this.identity) {
        return fail("Precondition", `a publish named '${options.userId}' as its sender, which this broker is not`)
      }
      if (this.identity !== undefined && options?.userId === undefined) options = { ...options, userId: this.identity }
      const payload = new Payload(body, exchangeName, routingKey, toProperties(options, reply?.address, body), this.local)
      const routed = exchange === undefined ? this.routeDefault(payload) : this.route(exchange, payload)
      if (routed || options?.mandatory !== true) return Effect.void
      if (options.confirm === true) {
        return fail("Unroutable", `no queue is bound for '${routingKey}' on exchange '${exchangeName}'`)
      }
      if (reply !== undefined && !reply.closed) {
        const returned = new Payload(body, exchangeName, routingKey, payload.properties, this.local)
        reply.offer({ _tag: "Returned", message: Object.assign(returned, { replyText: "NO_ROUTE" }) })
      }
      return Effect.void
    })
  }

  /** the default exchange: the queue (or reply queue) named by the routing key */
  routeDefault(payload: Payload): boolean {
    const queue = this.queues.get(payload.routingKey)
    if (queue !== undefined) {
      this.enqueue(queue, payload)
      return true
    }
    const reply = this.replies.get(payload.routingKey)
    if (reply !== undefined) {
      reply.offer({ _tag: "Reply", message: payload })
      return true
    }
    return false
  }

  route(exchange: ExchangeState, payload: Payload): boolean {
    const queues = exchange.type === "direct"
      ? exchange.direct.get(payload.routingKey)
      : exchange.type === "fanout"
      ? exchange.fanout
      : exchange.type === "headers"
      ? exchange.routeHeaders(payload.properties.headers)
      : exchange.routeTopic(payload.routingKey)
    if (queues === undefined || queues.length === 0) return false
    for (let i = 0; i < queues.length; i++) this.enqueue(queues[i], payload)
    return true
  }

  enqueue(queue: QueueState, payload: Payload): void {
    const expiration = payload.properties.expiration
    const ttl = queue.options.messageTtl
    let expiresAt: number | undefined
    if (expiration !== undefined || ttl !== undefined) {
      const now = this.clock.currentTimeMillisUnsafe()
      const limit = Math.min(expiration ?? Infinity, ttl ?? Infinity)
      expiresAt = now + Math.max(0, limit)
    }
    const entry: Entry = { payload, deliveries: 0, redelivered: false, expiresAt }
    // as in RabbitMQ, a message a consumer can take right away is delivered even with a TTL of 0
    if (queue.messages.length === 0 && !queue.draining) {
      const consumer = this.pick(queue)
      if (consumer !== undefined) {
        this.deliver(consumer, entry)
        return
      }
    }
    this.push(queue, entry, false)
  }

  push(queue: QueueState, entry: Entry, atHead: boolean): void {
    if (atHead) queue.messages.unshift(entry)
    else queue.messages.push(entry)
    if (entry.expiresAt !== undefined) {
      queue.expiring++
      this.schedule(entry.expiresAt)
    }
    // as RabbitMQ's `x-overflow: drop-head`: a publish over the limit drops the oldest ready messages
    const limit = queue.options.maxLength
    if (limit === undefined || atHead) return
    while (queue.messages.length > Math.max(0, limit)) {
      const oldest = queue.messages.shift()
      if (oldest === undefined) break
      if (oldest.expiresAt !== undefined) queue.expiring--
      this.deadLetter(queue, oldest, "maxlen")
    }
  }

  deadLetter(queue: QueueState, entry: Entry, reason: DeathReason): void {
    const exchangeName = queue.options.deadLetterExchange
    if (exchangeName === undefined || this.closed) return
    const exchange = exchangeName === "" ? undefined : this.exchanges.get(exchangeName)
    if (exchangeName !== "" && exchange === undefined) return
    const original = entry.payload
    const headers: Record<string, HeaderValue> = {
      ...original.properties.headers,
      [deathReasonHeader]: reason,
      [deathTimeHeader]: this.clock.currentTimeMillisUnsafe()
    }
    const properties: MutableProperties = { ...original.properties, headers }
    // as RabbitMQ does, so that the message does not expire again where it lands
    delete properties.expiration
    const payload = new Payload(
      original.body,
      exchangeName,
      queue.options.deadLetterRoutingKey ?? original.routingKey,
      properties,
      false
    )
    if (exchange === undefined) this.routeDefault(payload)
    else this.route(exchange, payload)
  }

  // -- dispatch --

  /** the consumer that gets the next message: round-robin over those under their prefetch */
  pick(queue: QueueState): ConsumerState | undefined {
    const consumers = queue.consumers
    const n = consumers.length
    if (n === 0) return undefined
    if (queue.options.singleActiveConsumer === true) {
      const active = consumers[0]
      return active.unacked.size < active.prefetch ? active : undefined
    }
    for (let i = 0; i < n; i++) {
      const index = (queue.next + i) % n
      const consumer = consumers[index]
      if (consumer.unacked.size < consumer.prefetch) {
        queue.next = (index + 1) % n
        return consumer
      }
    }
    return undefined
  }

  deliver(consumer: ConsumerState, entry: Entry): void {
    const delivery = new MemoryDelivery(this, consumer, entry)
    if (entry.redelivered) consumer.redelivered()
    entry.deliveries++
    consumer.unacked.add(delivery)
    // what `take` does not take goes to the stream
    if (consumer.take === undefined || !consumer.take(delivery)) Queue.offerUnsafe(consumer.mailbox, [delivery])
  }

  /** hands waiting messages to consumers with room; expired ones met on the way are dead-lettered */
  drain(queue: QueueState): void {
    if (queue.draining || queue.deleted || this.closed) return
    queue.draining = true
    let now = -1
    let head = queue.messages.peek()
    while (head !== undefined) {
      if (head.expiresAt !== undefined) {
        if (now < 0) now = this.clock.currentTimeMillisUnsafe()
        if (head.expiresAt <= now) {
          queue.messages.shift()
          queue.expiring--
          this.deadLetter(queue, head, "expired")
          head = queue.messages.peek()
          continue
        }
      }
      const consumer = this.pick(queue)
      if (consumer === undefined) break
      queue.messages.shift()
      if (head.expiresAt !== undefined) queue.expiring--
      this.deliver(consumer, head)
      head = queue.messages.peek()
    }
    queue.draining = false
  }

  /** puts delivered messages back at the head of their queue, in their order */
  requeue(queue: QueueState, entries: ReadonlyArray<Entry>): void {
    if (queue.deleted || this.closed) return
    const limit = queue.options.deliveryLimit
    for (let i = entries.length - 1; i >= 0; i--) {
      const entry = entries[i]
      if (limit !== undefined && entry.deliveries >= limit) {
        this.deadLetter(queue, entry, "delivery-limit")
      } else {
        entry.redelivered = true
        this.push(queue, entry, true)
      }
    }
  }

  settle(delivery: MemoryDelivery, settlement: Settlement): void {
    const consumer = delivery.consumer
    // already settled, requeued when its consumer closed, or the broker is gone
    if (!consumer.unacked.delete(delivery) || this.closed) return
    const queue = consumer.queue
    if (queue.deleted) return
    if (settlement === REQUEUE) this.requeue(queue, [delivery.entry])
    else if (settlement === REJECT) this.deadLetter(queue, delivery.entry, "rejected")
    this.drain(queue)
  }

  // -- consumers --

  addConsumer(
    queueName: string,
    options: ConsumeOptions,
    mailbox: Queue.Queue<NonEmptyReadonlyArray<Delivery>, Cause.Done>,
    redelivered: () => void
  ): Effect.Effect<ConsumerState, BrokerError> {
    if (this.closed) return closedError()
    const queue = this.queues.get(queueName)
    if (queue === undefined) return fail("NotFound", `no queue '${queueName}'`)
    const consumer = new ConsumerState(queue, mailbox, options, redelivered)
    queue.consumers.push(consumer)
    queue.open.add(consumer)
    queue.idleDeadline = undefined
    this.consumers.add(consumer)
    this.drain(queue)
    return Effect.succeed(consumer)
  }

  /** stops new deliveries; what the consumer holds stays settle-able until it closes */
  cancelConsumer(consumer: ConsumerState): void {
    if (consumer.cancelled || consumer.closed) return
    consumer.cancelled = true
    this.detach(consumer)
    Queue.endUnsafe(consumer.mailbox)
    this.drain(consumer.queue)
  }

  /** the consumer is gone: its unsettled messages go back to the queue for the others */
  closeConsumer(consumer: ConsumerState): void {
    if (consumer.closed) return
    consumer.closed = true
    if (!consumer.cancelled) {
      consumer.cancelled = true
      this.detach(consumer)
    }
    Queue.endUnsafe(consumer.mailbox)
    Queue.shutdownUnsafe(consumer.mailbox)
    this.consumers.delete(consumer)
    const queue = consumer.queue
    queue.open.delete(consumer)
    const entries: Array<Entry> = []
    for (const delivery of consumer.unacked) entries.push(delivery.entry)
    consumer.unacked.clear()
    if (this.closed || queue.deleted) return
    this.requeue(queue, entries)
    if (queue.open.size === 0) {
      if (queue.options.autoDelete === true) {
        this.deleteQueue(queue)
        return
      }
      if (queue.options.expires !== undefined) this.startIdle(queue)
    }
    this.drain(queue)
  }

  detach(consumer: ConsumerState): void {
    const queue = consumer.queue
    const index = queue.consumers.indexOf(consumer)
    if (index < 0) return
    queue.consumers = queue.consumers.filter((c) => c !== consumer)
    if (queue.next > index) queue.next--
    if (queue.next >= queue.consumers.length) queue.next = 0
  }

  // -- reply queues --

  addReply(
    mailbox: Queue.Queue<NonEmptyReadonlyArray<Incoming>, Cause.Done>,
    take: ((incoming: Incoming) => boolean) | undefined
  ): Effect.Effect<ReplyState, BrokerError> {
    if (this.closed) return closedError()
    const reply = new ReplyState(newName("amq.rabbitmq.reply-to."), mailbox, take)
    this.replies.set(reply.address, reply)
    return Effect.succeed(reply)
  }

  closeReply(reply: ReplyState): void {
    if (reply.closed) return
    reply.closed = true
    this.replies.delete(reply.address)
    // what already arrived can still be read; nothing more will
    Queue.endUnsafe(reply.mailbox)
  }

  // -- time --

  startIdle(queue: QueueState): void {
    const expires = queue.options.expires
    if (expires === undefined) return
    queue.idleDeadline = this.clock.currentTimeMillisUnsafe() + Math.max(0, expires)
    this.schedule(queue.idleDeadline)
  }

  schedule(at: number): void {
    if (at < this.nextDeadline) {
      this.nextDeadline = at
      if (this.wake !== undefined) this.wake()
    }
  }

  /** dead-letters every expired message, deletes idle queues, and computes the next deadline */
  sweep(now: number): void {
    this.nextDeadline = Infinity
    for (const queue of Array.from(this.queues.values())) {
      if (queue.deleted) continue
      if (queue.idleDeadline !== undefined) {
        if (queue.idleDeadline <= now && queue.open.size === 0) {
          this.deleteQueue(queue)
          continue
        }
        this.schedule(queue.idleDeadline)
      }
      if (queue.expiring === 0) continue
      const expired = queue.messages.extract((entry) => entry.expiresAt !== undefined && entry.expiresAt <= now)
      queue.expiring -= expired.length
      queue.messages.forEach((entry) => {
        if (entry.expiresAt !== undefined) this.schedule(entry.expiresAt)
      })
      for (const entry of expired) this.deadLetter(queue, entry, "expired")
    }
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    for (const consumer of this.consumers) {
      consumer.closed = true
      consumer.cancelled = true
      consumer.unacked.clear()
      Queue.endUnsafe(consumer.mailbox)
      Queue.shutdownUnsafe(consumer.mailbox)
    }
    this.consumers.clear()
    for (const reply of this.replies.values()) {
      reply.closed = true
      Queue.endUnsafe(reply.mailbox)
      Queue.shutdownUnsafe(reply.mailbox)
    }
    this.replies.clear()
    // exclusive queues die with their connection; here every queue goes with the broker
    for (const queue of this.queues.values()) {
      queue.deleted = true
      queue.messages.clear()
    }
    this.queues.clear()
    this.exchanges.clear()
    this.nextDeadline = Infinity
  }
}

/** the one fiber per broker that acts on deadlines: it sleeps until the next one, or until woken */
const sweeper = (state: BrokerState): Effect.Effect<never> => {
  const woken = Effect.callback<void>((resume) => {
    state.wake = () => {
      state.wake = undefined
      resume(Effect.void)
    }
    return Effect.sync(() => {
      state.wake = undefined
    })
  })
  return Effect.forever(Effect.suspend(() => {
    const now = state.clock.currentTimeMillisUnsafe()
    if (state.nextDeadline <= now) {
      state.sweep(now)
      return Effect.void
    }
    if (state.nextDeadline === Infinity) return woken
    return Effect.raceFirst(Effect.sleep(state.nextDeadline - now), woken)
  }))
}
