/**
 * How a subscription settles what it cannot simply ack: an event whose payload fails the schema (or is
 * over the size limit) is dead-lettered at once; a failed one is retried on the subscription's
 * Schedule, the broker holding it meanwhile (a TTL queue per delay dead-letters it back), and
 * dead-lettered with its reason when the schedule ends. Every republish is confirmed before the
 * delivery is acked; an interruption (a shutdown) requeues it for another instance.
 *
 * @internal
 */
import { Cause, Clock, Duration, Effect, Exit, Metric, Option, Pull, Schedule, Schema, SchemaIssue } from "effect"
import type { BrokerError, Delivery, HeaderValue, PublishOptions } from "../Broker.ts"
import type { Broker } from "../Broker.ts"
import * as CallContext from "../CallContext.ts"
import type { DeathReason, Metadata } from "../Event.ts"
import * as internal from "./events.ts"
import * as Identity from "./identity.ts"
import type * as Metrics from "./metrics.ts"
import * as topology from "./topology.ts"
import * as wire from "./wire.ts"

/** where a subscription takes events from and dead-letters them to */
export interface Target {
  /** names the subscription in logs */
  readonly label: string
  readonly queue: string
  readonly deadQueue: string
  /** retry queues survive a broker restart when the subscription's queue does */
  readonly durable: boolean
  readonly maxMessageSize: number
  /** counts its retries and dead letters */
  readonly metrics: Metrics.EventSettling
}

const formatIssue = SchemaIssue.makeFormatterDefault()

/** what a delivery holds: an event to handle, or why it cannot be handled */
export type Decoded =
  | { readonly _tag: "Valid"; readonly payload: unknown; readonly metadata: Metadata }
  | { readonly _tag: "Invalid"; readonly issue: string }

/** decodes deliveries and settles the ones that failed */
export interface Settler {
  readonly decode: (delivery: Delivery) => Decoded
  /** dead-letters an event whose payload failed the schema, then acks it */
  readonly invalid: (delivery: Delivery, issue: string) => Effect.Effect<void>
  /** schedules a retry (or dead-letters the event), then acks it; an interruption requeues it */
  readonly failCause: (delivery: Delivery, cause: Cause.Cause<unknown>) => Effect.Effect<void>
}

/** the id the event was published with, the same on every delivery and retry of it */
export const eventIdOf = (delivery: Delivery): string => {
  const fromHeader = delivery.properties.headers?.[internal.header.eventId]
  return typeof fromHeader === "string" ? fromHeader : delivery.properties.messageId ?? ""
}

const numberHeader = (value: HeaderValue | undefined): number | undefined => {
  const n = typeof value === "number" ? value : typeof value === "string" ? Number(value) : NaN
  return Number.isFinite(n) ? n : undefined
}

/** a count the mesh wrote (`x-mesh-retries`): a whole number from 0, else none (a header from outside may say anything) */
const countHeader = (value: HeaderValue | undefined): number | undefined => {
  const n = numberHeader(value)
  return n !== undefined && Number.isSafeInteger(n) && n >= 0 ? n : undefined
}

/** the most failures a retry schedule is replayed over (a count of retries past it counts as this many) */
const maxReplayedFailures = 1_000

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

/**
 * The settler of one subscription: `decodePayload` is the event's JSON codec; `retry` the
 * subscription's schedule.
 */
export const make = (
  broker: Broker["Service"],
  plan: Target,
  decodePayload: (json: unknown) => Exit.Exit<unknown, Schema.SchemaError>,
  retry: Schedule.Schedule<unknown, unknown>
): Settler => {

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
    const decoded = decodePayload(body.value)
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
        attempt: (countHeader(headers?.[internal.header.retries]) ?? 0) + 1,
        redelivered: delivery.redelivered,
        context: Identity.verify(CallContext.fromHeaders(wire.stringHeaders(headers)), props.userId)
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
      Effect.andThen(
        Metric.update(plan.metrics.deadLetter, 1),
        Effect.logWarning(`${plan.label}: an event with an invalid payload was dead-lettered: ${issue}`)
      ),
      replaceWith(delivery, deadLetter(delivery, "invalid-payload", issue, 0), "dead-letter an invalid event")
    )

  const failCause = (delivery: Delivery, cause: Cause.Cause<unknown>): Effect.Effect<void> => {
    // interrupted (a shutdown): not a failure of the event; another instance takes it
    if (Cause.hasInterruptsOnly(cause)) return delivery.nack(true)
    const error = Cause.squash(cause)
    const message = describe(error)
    return Effect.gen(function*() {
      const headers = delivery.properties.headers
      // the schedule is replayed from its start, a step per failure: a count from outside, however
      // large, must not hold the process in that loop
      const failures = Math.min(countHeader(headers?.[internal.header.retries]) ?? 0, maxReplayedFailures) + 1
      const now = yield* Clock.currentTimeMillis
      const firstFailure = numberHeader(headers?.[internal.header.firstFailure]) ?? now
      const delay = yield* delayAfter(retry, failures, error, firstFailure, now)
      if (Option.isNone(delay)) {
        yield* Metric.update(plan.metrics.deadLetter, 1)
        yield* spanEvent("mesh.event.dead_lettered", { "mesh.event.attempts": failures, "error.message": message })
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
      yield* Metric.update(plan.metrics.retry, 1)
      yield* spanEvent("mesh.event.retry", { "mesh.event.attempt": failures, "mesh.event.retry_delay_ms": millis, "error.message": message })
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

/** an event on the handler's span (a retry, a dead letter), when there is one */
const spanEvent = (name: string, attributes: Record<string, unknown>): Effect.Effect<void> =>
  Effect.matchEffect(Effect.currentSpan, {
    onFailure: () => Effect.void,
    onSuccess: (span) => Effect.map(Clock.currentTimeNanos, (now) => span.event(name, now, attributes))
  })

/** how long an unused retry queue outlives its delay */
const retryQueueLease = 60_000
