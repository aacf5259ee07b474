/**
 * Dead-letter queues: where the mesh keeps what it could not deliver or handle (rpc requests and
 * commands in `mesh.rpc.<service>.dead`, events in `<subscription>.dead`), to inspect, replay or
 * purge (`mesh dlq`).
 *
 * Nothing consumes a dead-letter queue, so every one the mesh declares is bounded: at most
 * `maxLength` messages (a new dead letter drops the oldest) and each for at most `ttl`. The defaults,
 * 10,000 messages for 7 days, keep a week of evidence (a long weekend and the time to look into it)
 * while a flood of failures (a broken deploy, expired requests under load) costs a bounded amount of
 * broker memory and disk. `MESH_DLQ_MAX_LENGTH` and `MESH_DLQ_TTL` set them for a process; `layer`
 * for the services it is provided to.
 *
 * RabbitMQ refuses to declare an existing queue with other bounds. A dead-letter queue declared before
 * (without bounds, or with other ones) is kept as it is, with a warning naming the queue and the
 * policy that bounds it in place (`rabbitmqctl set_policy`), since deleting it would lose what it holds.
 *
 * @since 0.1.0
 */
import { Cause, Config, Context, Duration, Effect, Fiber, Layer, Option, Queue, Stream } from "effect"
import { Broker, type BrokerError, deathReasonHeader, deathTimeHeader, type Delivery, type HeaderValue, type QueueOptions } from "./Broker.ts"
import * as internal from "./internal/events.ts"
import * as topology from "./internal/topology.ts"

// ---- models ----

/**
 * How much a dead-letter queue keeps: at most `maxLength` messages (the oldest go first), each for
 * at most `ttl`.
 *
 * @since 0.1.0
 */
export interface Bounds {
  readonly maxLength: number
  readonly ttl: Duration.Input
}

/**
 * The bounds without configuration: 10,000 messages, 7 days.
 *
 * @since 0.1.0
 */
export const defaults: Bounds = { maxLength: 10_000, ttl: "7 days" }

/**
 * The bounds given to the services built under it by `layer`; unset, the configuration decides.
 *
 * @since 0.1.0
 */
export const CurrentBounds = Context.Reference<Bounds | undefined>("effect-mesh/DeadLetters/CurrentBounds", {
  defaultValue: () => undefined
})

/**
 * The configuration keys of the bounds.
 *
 * @since 0.1.0
 */
export const keys = { maxLength: "MESH_DLQ_MAX_LENGTH", ttl: "MESH_DLQ_TTL" } as const

/**
 * The bounds as configured: `MESH_DLQ_MAX_LENGTH` (messages) and `MESH_DLQ_TTL` (a duration, e.g.
 * "3 days"), each defaulting to `defaults`.
 *
 * @since 0.1.0
 */
export const config: Config.Config<Bounds> = Config.all({
  maxLength: Config.Int(keys.maxLength).pipe(Config.withDefault(defaults.maxLength)),
  ttl: Config.Duration(keys.ttl).pipe(Config.withDefault(Duration.fromInputUnsafe(defaults.ttl)))
})

/**
 * A message in a dead-letter queue, as `list` reads it.
 *
 * @since 0.1.0
 */
export interface DeadLetter {
  /** the dead-letter queue it is in */
  readonly queue: string
  /**
   * why it died: the mesh's own reason (`handler-failed`, `invalid-payload`) or the broker's
   * (`rejected`, `expired`, `delivery-limit`, `maxlen`); "unknown" when neither says
   */
  readonly reason: string
  /** the last error, when the mesh recorded one */
  readonly error: string | undefined
  /** when it died, epoch millis (RabbitMQ keeps its own reasons' times to the second) */
  readonly diedAt: number | undefined
  /** the queue `replay` publishes it to: the one it died in */
  readonly origin: string
  readonly routingKey: string
  /** the rpc method or event type, when the message says */
  readonly type: string | undefined
  readonly messageId: string | undefined
  readonly body: Uint8Array
  readonly headers: Readonly<Record<string, HeaderValue>>
}

/**
 * Which dead letters `list`, `replay` and `purge` take: at most `limit` (default all), read until none
 * arrives for `wait` (default 1 second).
 *
 * @since 0.1.0
 */
export interface ReadOptions {
  readonly limit?: number | undefined
  readonly wait?: Duration.Input | undefined
}

/**
 * What `replay` did: how many went back, and those that could not (they stay in the queue).
 *
 * @since 0.1.0
 */
export interface Replayed {
  readonly replayed: number
  readonly failed: ReadonlyArray<{ readonly letter: DeadLetter; readonly message: string }>
}

// ---- constructors ----

/**
 * Gives the services built under it these bounds for their dead-letter queues (the rest from
 * `defaults`), whatever the configuration says.
 *
 * @since 0.1.0
 */
export const layer = (bounds: Partial<Bounds>): Layer.Layer<never> =>
  Layer.succeed(CurrentBounds, { ...defaults, ...bounds })

/**
 * The bounds the services built under it get: the current `layer`'s, else the configuration's.
 *
 * @since 0.1.0
 */
export const current: Effect.Effect<Bounds, Config.ConfigError> = Effect.gen(function*() {
  const bounds = yield* CurrentBounds
  return bounds === undefined ? yield* config : bounds
})

/**
 * The declaration options of a dead-letter queue with these bounds.
 *
 * @since 0.1.0
 */
export const queueOptions = (bounds: Bounds): QueueOptions => ({
  durable: true,
  maxLength: Math.max(0, Math.floor(bounds.maxLength)),
  messageTtl: Math.max(0, Math.floor(Duration.toMillis(Duration.fromInputUnsafe(bounds.ttl))))
})

/**
 * The dead-letter queue a name means: a name with a dot is a queue; a bare name is a service, whose
 * rpc and command dead letters are in `mesh.rpc.<service>.dead`.
 *
 * @since 0.1.0
 */
export const queueOf = (target: string): string =>
  target.includes(".") ? target : topology.rpcDeadLetterQueue(target)

/**
 * The dead letters of a queue, oldest first. They stay in the queue, in their order.
 *
 * @since 0.1.0
 */
export const list = (queue: string, options?: ReadOptions): Effect.Effect<ReadonlyArray<DeadLetter>, BrokerError, Broker> =>
  withLetters(queue, options, (held) =>
    Effect.as(
      // back in reverse: each requeue goes to the head of the queue
      Effect.forEach(held.slice().reverse(), (d) => d.nack(true), { discard: true }),
      held.map((d) => letterOf(queue, d))
    ))

/**
 * Removes the dead letters of a queue (those a `list` with the same options would show).
 *
 * @since 0.1.0
 */
export const purge = (queue: string, options?: ReadOptions): Effect.Effect<number, BrokerError, Broker> =>
  withLetters(queue, options, (held) => Effect.as(Effect.forEach(held, (d) => d.ack, { discard: true }), held.length))

/**
 * Publishes the dead letters of a queue back to the queue each died in, without the headers of its
 * death (an event's retries start over), and removes each once the broker confirmed it. One that
 * cannot be published (its queue is gone) stays.
 *
 * @since 0.1.0
 */
export const replay = (queue: string, options?: ReadOptions): Effect.Effect<Replayed, BrokerError, Broker> =>
  Effect.flatMap(Broker, (broker) =>
    withLetters(queue, options, (held) =>
      Effect.gen(function*() {
        let replayed = 0
        const failed: Array<{ readonly letter: DeadLetter; readonly message: string }> = []
        const back: Array<Delivery> = []
        for (const delivery of held) {
          const letter = letterOf(queue, delivery)
          const props = delivery.properties
          const published = yield* Effect.exit(broker.publish("", letter.origin, delivery.body, {
            contentType: props.contentType,
            correlationId: props.correlationId,
            replyTo: props.replyTo,
            messageId: props.messageId,
            type: props.type,
            persistent: true,
            headers: aliveHeaders(letter.headers),
            mandatory: true,
            confirm: true
          }))
          if (published._tag === "Success") {
            replayed++
            yield* delivery.ack
          } else {
            back.push(delivery)
            failed.push({ letter, message: failureMessage(published.cause) })
          }
        }
        yield* Effect.forEach(back.reverse(), (d) => d.nack(true), { discard: true })
        return { replayed, failed }
      })))

// ---- internal ----

/** the mesh's headers about a death, and those the brokers add */
const deathHeaders: ReadonlySet<string> = new Set([
  internal.header.deathReason,
  internal.header.error,
  internal.header.attempts,
  internal.header.queue,
  internal.header.diedAt,
  internal.header.retries,
  internal.header.firstFailure
])

const aliveHeaders = (headers: Readonly<Record<string, HeaderValue>>): Record<string, HeaderValue> => {
  const out: Record<string, HeaderValue> = {}
  for (const key in headers) if (!deathHeaders.has(key) && !internal.isTransient(key)) out[key] = headers[key]
  return out
}

const stringOf = (value: HeaderValue | undefined): string | undefined =>
  value === undefined ? undefined : String(value)

const numberOf = (value: HeaderValue | undefined): number | undefined => {
  const n = typeof value === "number" ? value : typeof value === "string" ? Number(value) : Number.NaN
  return Number.isFinite(n) ? n : undefined
}

const deadSuffix = ".dead"

const letterOf = (queue: string, delivery: Delivery): DeadLetter => {
  const headers = delivery.properties.headers ?? {}
  const origin = stringOf(headers[internal.header.queue]) ??
    stringOf(headers["x-last-death-queue"]) ??
    stringOf(headers["x-first-death-queue"]) ??
    (queue.endsWith(deadSuffix) ? queue.slice(0, -deadSuffix.length) : queue)
  return {
    queue,
    reason: stringOf(headers[internal.header.deathReason]) ?? stringOf(headers[deathReasonHeader]) ?? "unknown",
    error: stringOf(headers[internal.header.error]),
    diedAt: numberOf(headers[internal.header.diedAt]) ?? numberOf(headers[deathTimeHeader]),
    origin,
    routingKey: delivery.routingKey,
    type: delivery.properties.type,
    messageId: delivery.properties.messageId,
    body: delivery.body,
    headers
  }
}

const failureMessage = (cause: Cause.Cause<BrokerError>): string => {
  const error = Cause.squash(cause)
  return error instanceof Error ? error.message : String(error)
}

/**
 * Takes the dead letters of a queue, holding them unsettled, and hands them to `settle`. They are read
 * with a consumer that is cancelled (not interrupted: that would requeue them on the embedded broker)
 * once `limit` arrived or none did for `wait`; what `settle` leaves unsettled goes back when the scope
 * closes.
 */
const withLetters = <A>(
  queue: string,
  options: ReadOptions | undefined,
  settle: (held: ReadonlyArray<Delivery>) => Effect.Effect<A, BrokerError>
): Effect.Effect<A, BrokerError, Broker> =>
  Effect.scoped(Effect.gen(function*() {
    const broker = yield* Broker
    const limit = options?.limit === undefined ? Infinity : Math.max(0, Math.floor(options.limit))
    const wait = options?.wait ?? "1 second"
    if (limit === 0) return yield* settle([])
    const consumer = yield* broker.consume(queue, {
      prefetch: Number.isFinite(limit) ? limit : 0,
      tag: `mesh dlq ${queue}`
    })
    const inbox = yield* Queue.unbounded<Delivery>()
    const reader = yield* consumer.deliveries.pipe(
      Stream.runForEach((delivery) => Queue.offer(inbox, delivery)),
      Effect.forkScoped
    )
    const held: Array<Delivery> = []
    while (held.length < limit) {
      const next = yield* Effect.timeoutOption(Queue.take(inbox), wait)
      if (Option.isNone(next)) break
      held.push(next.value)
    }
    yield* consumer.cancel
    yield* Fiber.join(reader)
    // what arrived between the last take and the cancel
    for (const late of yield* Queue.clear(inbox)) held.push(late)
    return yield* settle(held)
  }))
