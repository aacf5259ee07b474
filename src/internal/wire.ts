/**
 * How RPC messages look on the broker. A request is one message: the method in `type`, the request id
 * in `correlationId`, the call context and the caller's span (W3C `traceparent`) in headers, the
 * encoded payload as body, in its contract's wire format (WireFormat.ts, internal/formats.ts; JSON by
 * default). Replies carry effect/rpc's own encoded envelopes in the request's format; control messages
 * are the mesh's own, always JSON. A stream chunk names the instance that sent it, so that its ack goes
 * back there.
 *
 * Every header costs on both ends (amqplib encodes and decodes field tables byte by byte), so there
 * are as few as the protocol needs.
 */
import { Option, Schema } from "effect"
import type { HeaderValue } from "../Broker.ts"
import type { ServiceError } from "../ServiceError.ts"
import { ServiceError as ServiceErrorSchema } from "../ServiceError.ts"

export const contentType = "application/json"

/** the default limit of a message body a service takes: the HTTP gateway's `maxBodySize` (1 MiB) */
export const defaultMaxMessageSize = 1024 * 1024

/** why a body over a service's limit is refused, before it is decoded */
export const tooLarge = (size: number, limit: number): string =>
  `the message is ${size} bytes, over the service's limit of ${limit} (maxMessageSize)`

export const header = {
  instance: "x-mesh-instance",
  traceparent: "traceparent"
} as const

/** the W3C trace context of a span: `00-<trace id>-<span id>-<flags>` */
export const traceparent = (traceId: string, spanId: string, sampled: boolean): string =>
  `00-${traceId}-${spanId}-${sampled ? "01" : "00"}`

export interface SpanContext {
  readonly traceId: string
  readonly spanId: string
  readonly sampled: boolean
}

/** the sampled bit of the flags; flags that are not hex leave the span sampled */
const isSampled = (flags: string): boolean => {
  const bits = Number.parseInt(flags, 16)
  return Number.isNaN(bits) || (bits & 1) === 1
}

/** the span a `traceparent` header names, if it is one */
export const parseTraceparent = (value: string | undefined): SpanContext | undefined => {
  if (value === undefined) return undefined
  // the W3C form (`00-` 32 hex `-` 16 hex `-` 2 hex) by its offsets; anything else split on dashes
  if (value.length === 55 && value.charCodeAt(2) === 45 && value.charCodeAt(35) === 45 && value.charCodeAt(52) === 45) {
    return { traceId: value.slice(3, 35), spanId: value.slice(36, 52), sampled: isSampled(value.slice(53)) }
  }
  const parts = value.split("-")
  if (parts.length !== 4 || parts[1] === "" || parts[2] === "") return undefined
  return { traceId: parts[1], spanId: parts[2], sampled: isSampled(parts[3]) }
}

// node's Buffer rather than TextEncoder/TextDecoder: for the small bodies of RPC it is about twice
// as fast, and amqplib wants Buffers anyway
export const encodeJson = (value: unknown): Uint8Array => Buffer.from(JSON.stringify(value), "utf8")

const utf8 = (body: Uint8Array): string =>
  (Buffer.isBuffer(body) ? body : Buffer.from(body.buffer, body.byteOffset, body.byteLength)).toString("utf8")

/** the one place a body is parsed: `None` for bytes that are not JSON */
export const decodeJson: (body: Uint8Array) => Option.Option<unknown> = Option.liftThrowable(
  (body: Uint8Array): unknown => JSON.parse(utf8(body))
)

/** a control message from a client to the instance(s) running its request */
export interface Control {
  readonly _tag: "Interrupt" | "Ack"
  readonly client: string
  readonly requestId: string
}

export const isControl = (u: unknown): u is Control =>
  typeof u === "object" && u !== null && "_tag" in u && (u._tag === "Interrupt" || u._tag === "Ack") &&
  "client" in u && typeof u.client === "string" && "requestId" in u && typeof u.requestId === "string"

const encodeServiceError = Schema.encodeSync(ServiceErrorSchema)
const decodeServiceError = Schema.decodeUnknownOption(ServiceErrorSchema)

const serviceErrorKey = "effect-mesh/ServiceError"

/**
 * One of the mesh's own errors as a defect (a call's Exit has no place for them among the contract's
 * errors). It is wrapped: effect/rpc's defect schema decodes an object with a `message` (a
 * RemoteDefect, a TransportError) into a plain `Error`, which would lose what the error was and the
 * server's stack.
 */
export const serviceErrorDefect = (error: ServiceError): unknown => ({ [serviceErrorKey]: encodeServiceError(error) })

/** the mesh error a defect carries, if it carries one */
export const serviceErrorOfDefect = (defect: unknown): Option.Option<ServiceError> =>
  typeof defect === "object" && defect !== null && serviceErrorKey in defect
    ? decodeServiceError((defect as Record<string, unknown>)[serviceErrorKey])
    : Option.none()

/** an encoded Exit that fails the call with one of the mesh's own errors */
export const serviceErrorExit = (error: ServiceError) => ({
  _tag: "Failure" as const,
  cause: [{ _tag: "Die" as const, defect: serviceErrorDefect(error) }]
})

/** a header as a string, whatever the broker decoded it as */
export const stringHeader = (
  headers: Readonly<Record<string, HeaderValue>> | undefined,
  name: string
): string | undefined => {
  const value = headers?.[name]
  return value === undefined ? undefined : String(value)
}

/** the headers of a message as effect/rpc takes them */
export const headerEntries = (headers: Readonly<Record<string, HeaderValue>> | undefined): Array<[string, string]> => {
  const entries: Array<[string, string]> = []
  if (headers !== undefined) for (const key in headers) entries.push([key, String(headers[key])])
  return entries
}

/** the headers a request carries, flattened for the broker */
export const stringHeaders = (headers: Readonly<Record<string, HeaderValue>> | undefined): Record<string, string> => {
  const out: Record<string, string> = {}
  if (headers === undefined) return out
  for (const key in headers) out[key] = String(headers[key])
  return out
}
