/**
 * The errors the mesh itself can put in a caller's error channel, next to the contract's own errors.
 *
 * Each is a `Schema.TaggedError`, so it crosses the wire typed: a server answers an unknown method
 * with `MethodNotFound`, a payload that fails its schema with `InvalidPayload` (carrying the schema
 * issue text), a call its authorization policy denies with `Forbidden`, and a handler's defect or undeclared failure with `RemoteDefect`. The client adds
 * `ServiceNotFound`, `CallTimeout` and `TransportError`.
 *
 * A handler that calls another service gets these errors too, and its own contract does not declare
 * them: `orDie` turns them into defects (its caller sees a `RemoteDefect`), `mapError` into an error
 * the contract declares.
 *
 * ```ts
 * const total = yield* calculator.multiply({ a, b }).pipe(ServiceError.orDie)
 * ```
 *
 * @since 0.1.0
 */
import { Effect, Schema } from "effect"
import { dual } from "effect/Function"

/**
 * Why a service was not found.
 *
 * - `NoQueue` (also when absent): the service has no queue, so the broker returned the request; nothing
 *   ran, and nothing will.
 * - `NoConsumer`: its queue exists but no instance consumes it (none started, or all stopped): the
 *   request waits there, and runs if an instance starts before its deadline (or ever, without one).
 *
 * @since 0.1.0
 */
export const ServiceNotFoundReason = Schema.Literals(["NoQueue", "NoConsumer"])

/**
 * @since 0.1.0
 */
export type ServiceNotFoundReason = typeof ServiceNotFoundReason.Type

/**
 * No instance serves this service: nobody ever started it, or it is gone (see `reason`).
 *
 * @since 0.1.0
 */
export class ServiceNotFound extends Schema.TaggedError<ServiceNotFound>()("ServiceNotFound", {
  service: Schema.String,
  reason: Schema.optionalKey(ServiceNotFoundReason)
}) {
  override get message(): string {
    return this.reason === "NoConsumer"
      ? `no instance of "${this.service}" is serving: its queue has no consumer (the request stays queued and runs if one starts)`
      : `no service named "${this.service}" is running`
  }
}

/**
 * The service runs but has no method of this name (often: client and server contracts differ).
 *
 * @since 0.1.0
 */
export class MethodNotFound extends Schema.TaggedError<MethodNotFound>()("MethodNotFound", {
  service: Schema.String,
  method: Schema.String
}) {
  override get message(): string {
    return `service "${this.service}" has no method "${this.method}"`
  }
}

/**
 * The payload did not match the method's schema on the server. `issue` is the schema's explanation.
 *
 * @since 0.1.0
 */
export class InvalidPayload extends Schema.TaggedError<InvalidPayload>()("InvalidPayload", {
  service: Schema.String,
  method: Schema.String,
  issue: Schema.String
}) {
  override get message(): string {
    return `invalid payload for ${this.service}.${this.method}: ${this.issue}`
  }
}

/**
 * The call did not complete before its deadline; the handler (if it started) was interrupted.
 *
 * @since 0.1.0
 */
export class CallTimeout extends Schema.TaggedError<CallTimeout>()("CallTimeout", {
  service: Schema.String,
  method: Schema.String,
  timeoutMillis: Schema.Number
}) {
  override get message(): string {
    return `${this.service}.${this.method} did not answer within ${this.timeoutMillis} ms`
  }
}

/**
 * The handler died, or failed with an error its contract does not declare. No stack trace crosses
 * the wire unless the service is configured to send them.
 *
 * @since 0.1.0
 */
export class RemoteDefect extends Schema.TaggedError<RemoteDefect>()("RemoteDefect", {
  service: Schema.String,
  method: Schema.String,
  message: Schema.String,
  stack: Schema.optionalKey(Schema.String)
}) {}

/**
 * The service's authorization policy (`Service.make`'s `authorize`) denied the call: the handler did
 * not run. `caller` is the sender the broker verified, when there was one (never a claimed user id).
 *
 * @since 0.1.0
 */
export class Forbidden extends Schema.TaggedError<Forbidden>()("Forbidden", {
  service: Schema.String,
  method: Schema.String,
  caller: Schema.optionalKey(Schema.String)
}) {
  override get message(): string {
    const who = this.caller === undefined ? "a caller the broker did not verify" : `"${this.caller}"`
    return `${who} may not call ${this.service}.${this.method}`
  }
}

/**
 * What a transport failure means for the request, when the client knows more than that it failed.
 *
 * - `OutcomeUnknown`: the connection to the broker was lost while the call was in flight: the request
 *   may or may not have run (or may still run), and its reply can never come.
 *
 * @since 0.1.0
 */
export const TransportErrorReason = Schema.Literals(["OutcomeUnknown"])

/**
 * @since 0.1.0
 */
export type TransportErrorReason = typeof TransportErrorReason.Type

/**
 * The transport failed: the broker went away, a publish was refused, a reply could not be read.
 *
 * @since 0.1.0
 */
export class TransportError extends Schema.TaggedError<TransportError>()("TransportError", {
  service: Schema.String,
  method: Schema.String,
  message: Schema.String,
  reason: Schema.optionalKey(TransportErrorReason)
}) {}

/**
 * Every error the mesh adds to a call.
 *
 * @since 0.1.0
 */
export type ServiceError =
  | ServiceNotFound
  | MethodNotFound
  | InvalidPayload
  | Forbidden
  | CallTimeout
  | RemoteDefect
  | TransportError

/**
 * The schema of `ServiceError`, as it travels inside a defect on the wire.
 *
 * @since 0.1.0
 */
export const ServiceError: Schema.Codec<ServiceError, unknown> = Schema.toCodecJson(
  Schema.Union([ServiceNotFound, MethodNotFound, InvalidPayload, Forbidden, CallTimeout, RemoteDefect, TransportError])
) as Schema.Codec<ServiceError, unknown>

const tags: ReadonlySet<string> = new Set([
  "ServiceNotFound",
  "MethodNotFound",
  "InvalidPayload",
  "Forbidden",
  "CallTimeout",
  "RemoteDefect",
  "TransportError"
])

/**
 * Whether a value is one of the mesh's own errors.
 *
 * @since 0.1.0
 */
export const isServiceError = (u: unknown): u is ServiceError =>
  typeof u === "object" && u !== null && "_tag" in u && typeof u._tag === "string" && tags.has(u._tag) &&
  u instanceof Error

/**
 * Whether a retry can help and cannot run the request twice: the transport failed before the request
 * left, or the service was not there. The client's `retry` applies to these alone by default.
 * Contract errors, invalid payloads, defects and timeouts are never retried; nor are failures after
 * which the request may have run or may still run (`TransportError` `OutcomeUnknown`,
 * `ServiceNotFound` `NoConsumer`): see `isRetryableIfIdempotent`.
 *
 * @since 0.1.0
 */
export const isRetryable = (u: unknown): boolean =>
  isServiceError(u) && (
    (u._tag === "TransportError" && u.reason !== "OutcomeUnknown") ||
    (u._tag === "ServiceNotFound" && u.reason !== "NoConsumer")
  )

/**
 * `isRetryable`, and also the failures after which the request may have run, or may still run: for
 * calls that are safe to run twice (`ServiceClient.Options.retryOn`).
 *
 * @since 0.1.0
 */
export const isRetryableIfIdempotent = (u: unknown): boolean =>
  isServiceError(u) && (u._tag === "TransportError" || u._tag === "ServiceNotFound")

/**
 * Turns the mesh's own errors into defects and leaves every other error as it is: a handler calling
 * another service uses it to keep its error channel to what its contract declares. Its caller sees a
 * `RemoteDefect` carrying the error's message.
 *
 * @since 0.1.0
 */
export const orDie = <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, Exclude<E, ServiceError>, R> =>
  Effect.catch(self, (error) => isServiceError(error) ? Effect.die(error) : Effect.fail(error as Exclude<E, ServiceError>))

/**
 * Turns the mesh's own errors into an error of your choosing (one the handler's contract declares)
 * and leaves every other error as it is.
 *
 * @since 0.1.0
 */
export const mapError: {
  <E2>(f: (error: ServiceError) => E2): <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, Exclude<E, ServiceError> | E2, R>
  <A, E, R, E2>(self: Effect.Effect<A, E, R>, f: (error: ServiceError) => E2): Effect.Effect<A, Exclude<E, ServiceError> | E2, R>
} = dual(
  2,
  <A, E, R, E2>(self: Effect.Effect<A, E, R>, f: (error: ServiceError) => E2): Effect.Effect<A, Exclude<E, ServiceError> | E2, R> =>
    Effect.catch(self, (error) => Effect.fail(isServiceError(error) ? f(error) : error as Exclude<E, ServiceError>))
)
