/**
 * The one admission step of a service instance: a delivery from the service's queue is checked once
 * (reply-to and correlation id, size, method, content type, seal, body, payload, deadline) and becomes
 * admitted work or a refusal that says how to settle it. A request that came as a value
 * (`LocalRequest`) for the very rpc served is admitted as it is, without bytes to check. Every route of the instance (the unary hot
 * path in the transport's callback, the stream of deliveries, RpcServer for streams and middleware)
 * starts from its answer, so a request is decoded once, whichever route it takes.
 *
 * @internal
 */
import { Exit, Option, Result, Schema, SchemaIssue } from "effect"
import type { Rpc, RpcGroup } from "effect/rpc"
import type { Delivery, HeaderValue } from "../Broker.ts"
import * as CallContext from "../CallContext.ts"
import type { ServiceError } from "../ServiceError.ts"
import { InvalidPayload, MethodNotFound } from "../ServiceError.ts"
import * as WireFormat from "../WireFormat.ts"
import * as Codecs from "./codecs.ts"
import * as events from "./events.ts"
import * as Formats from "./formats.ts"
import { LocalRequest } from "./local.ts"
import * as Sealing from "./sealing.ts"
import * as wire from "./wire.ts"

/**
 * A request to run: its rpc and decoded payload, where to answer (`replyTo` is `""` for a command,
 * which is never answered) and the caller's deadline (epoch millis, `NaN` without one).
 */
export interface Admitted {
  readonly _tag: "Admitted"
  readonly rpc: Rpc.AnyWithProps
  readonly payload: unknown
  readonly replyTo: string
  readonly requestId: string
  readonly command: boolean
  readonly deadline: number
  /** the format the request came in: its answer is written in it */
  readonly format: Formats.BodyFormat
  /** the request as a value, when it came so: its context and span are the caller's own */
  readonly local: LocalRequest | undefined
}

/** a request refused with one of the mesh's errors: answered with it (a command: dead-lettered) */
export interface Refused {
  readonly _tag: "Refused"
  readonly replyTo: string
  readonly requestId: string
  readonly error: ServiceError
  /** the format to answer in: the request's, JSON where the service does not know it */
  readonly format: Formats.BodyFormat
  /**
   * why a sealed request was refused unopened (altered, sealed for another key, not sealed): it is
   * answered, then dead-lettered rather than acked
   */
  readonly deadLetter?: string | undefined
}

/** nobody to answer (no reply-to or correlation id): dead-lettered, not sent around in circles */
export interface Unanswerable {
  readonly _tag: "Unanswerable"
}

/** its caller's deadline has passed: nobody waits for the answer, so it is dropped */
export interface Expired {
  readonly _tag: "Expired"
  readonly method: string
}

/** what the admission step makes of a delivery */
export type Admission = Admitted | Refused | Unanswerable | Expired

/** the admission step of one service */
export type Admit = (delivery: Delivery, now: () => number) => Admission

const unanswerable: Unanswerable = { _tag: "Unanswerable" }

const formatIssue = SchemaIssue.makeFormatterDefault()

/**
 * The schema issue of a payload that failed to decode. The JSON codec of a number also accepts
 * "NaN" and "Infinity", so its issue for `"one"` lists only those; the payload's own schema says
 * "Expected number". Off the hot path: only failed payloads get here.
 */
const explain = (rpc: Rpc.AnyWithProps, payload: unknown, failed: Exit.Exit<unknown, Schema.SchemaError>): string => {
  const plain = Schema.decodeUnknownExit(rpc.payloadSchema as unknown as Schema.Codec<unknown, unknown>)(payload)
  const error = Exit.findErrorOption(Exit.isFailure(plain) ? plain : failed)
  return Option.match(error, { onNone: () => "the payload could not be decoded", onSome: (e) => formatIssue(e.issue) })
}

/** the caller's deadline (epoch millis; NaN without one), from the call context header */
const deadlineOf = (headers: Readonly<Record<string, HeaderValue>> | undefined): number =>
  CallContext.deadlineOf(wire.stringHeader(headers, CallContext.headerNames.context)) ?? Number.NaN

/** a sealed request opened: its plaintext, and the format its answers are sealed in */
type Opened =
  | { readonly _tag: "Opened"; readonly plaintext: Uint8Array; readonly inner: Formats.BodyFormat; readonly format: Formats.BodyFormat }
  | { readonly _tag: "Refused"; readonly issue: string }

/** why a request to a sealed rpc that is not sealed is refused */
const notSealed = "the method is sealed: its requests must be sealed for the service's key (Sealed.ts)"

/** opens a sealed request; off the hot path: only sealed requests, and requests to sealed rpcs, get here */
const open = (
  key: Sealing.ServiceKey,
  service: string,
  method: string,
  correlationId: string,
  contentType: string | undefined,
  body: Uint8Array
): Opened => {
  if (!Sealing.isSealedContentType(contentType)) return { _tag: "Refused", issue: notSealed }
  const inner = Sealing.innerFormat(contentType)
  if (inner === undefined) return { _tag: "Refused", issue: Formats.unknownContentType(contentType) }
  const opened = Sealing.openRequest(key, { service, method, correlationId }, body)
  return Result.match(opened, {
    onFailure: (issue): Opened => ({ _tag: "Refused", issue }),
    onSuccess: ({ answers, plaintext }): Opened => ({ _tag: "Opened", plaintext, inner, format: Sealing.sealedFormat(inner, answers) })
  })
}

/** the admission step of a service: its name, its rpcs, and the largest body it takes */
export const make = (
  service: string,
  group: RpcGroup.RpcGroup<Rpc.Any>,
  maxMessageSize: number,
  /** the service's key, when it has one: sealed requests are opened with it (Sealed.ts) */
  key?: Sealing.ServiceKey | undefined
): Admit =>
(delivery, now) => {
  const props = delivery.properties
  const requestId = props.correlationId
  const method = props.type ?? ""
  const rpc = group.requests.get(method) as Rpc.AnyWithProps | undefined
  const local = delivery.local
  if (local instanceof LocalRequest && local.rpc === rpc && props.replyTo !== undefined && requestId !== undefined) {
    const deadline = local.context.deadline ?? Number.NaN
    if (Number.isFinite(deadline) && deadline <= now()) return { _tag: "Expired", method }
    // it came as a value, in no format: what is answered in bytes (a failure) is JSON
    return { _tag: "Admitted", rpc, payload: local.payload, replyTo: props.replyTo, requestId, command: false, deadline, format: Formats.json, local }
  }
  const command = events.isCommand(props.headers)
  const replyTo = command ? "" : props.replyTo
  if (replyTo === undefined || (replyTo === "" && !command) || requestId === undefined) return unanswerable
  // a format known to this process, or JSON to say that it is not
  let format = Formats.ofContentType(props.contentType)
  const refuse = (error: ServiceError): Refused => ({ _tag: "Refused", replyTo, requestId, error, format: format ?? Formats.json })
  if (delivery.body.length > maxMessageSize) {
    return refuse(new InvalidPayload({ service, method, issue: wire.tooLarge(delivery.body.length, maxMessageSize) }))
  }
  if (rpc === undefined) return refuse(new MethodNotFound({ service, method }))
  const codecs = Codecs.codecsOf(rpc)
  let bytes = delivery.body
  // what the body is read with: the request's format, or inside a seal its inner one
  let inner = format
  // a service with a key opens what is sealed, and takes nothing else for a sealed rpc
  if (key !== undefined && (codecs.sealed || Sealing.isSealedContentType(props.contentType))) {
    const opened = open(key, service, method, requestId, props.contentType, bytes)
    if (opened._tag === "Refused") {
      return { _tag: "Refused", replyTo, requestId, error: new InvalidPayload({ service, method, issue: opened.issue }), format: Formats.json, deadLetter: opened.issue }
    }
    format = opened.format
    inner = opened.inner
    bytes = opened.plaintext
  }
  if (format === undefined || inner === undefined) {
    return refuse(new InvalidPayload({ service, method, issue: Formats.unknownContentType(String(props.contentType)) }))
  }
  const body = inner.decode(bytes)
  if (Option.isNone(body)) {
    return refuse(new InvalidPayload({ service, method, issue: `the body is not ${format.format === WireFormat.json ? "JSON" : "MessagePack"}` }))
  }
  const decoded = codecs.decodePayload(body.value)
  if (Exit.isFailure(decoded)) {
    return refuse(new InvalidPayload({ service, method, issue: explain(rpc, body.value, decoded) }))
  }
  const deadline = deadlineOf(props.headers)
  if (Number.isFinite(deadline) && deadline <= now()) return { _tag: "Expired", method }
  return { _tag: "Admitted", rpc, payload: decoded.value, replyTo, requestId, command, deadline, format, local: undefined }
}
