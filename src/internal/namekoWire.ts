/**
 * Nameko's wire (2.14): names, the request body, the reply body, the error object, and the context
 * headers, as Nameko's `rpc.py`, `events.py`, `messaging.py` and `exceptions.py` make and read them.
 *
 * - requests: topic exchange `nameko-rpc`, routing key `<service>.<method>`, queue `rpc-<service>`
 *   bound with `<service>.*`; body `{"args": [...], "kwargs": {...}}`; `reply_to` is a routing key on
 *   `nameko-rpc`, not a queue;
 * - replies: `{"result": value, "error": null}` or `{"result": null, "error": {exc_type, exc_path,
 *   exc_args, value}}`; Python raises `exc_path` `nameko.exceptions.<Name>` as that class;
 * - events: topic exchange `<source>.events`, routing key the event type, body the payload;
 * - context: one header `nameko.<key>` per context entry (`call_id_stack` a list).
 *
 * @internal
 */
import { Exit, Option, Schema, SchemaIssue } from "effect"
import type { Rpc } from "effect/rpc"
import { RpcSchema } from "effect/rpc"
import type { HeaderValue } from "../Broker.ts"
import * as CallContext from "../CallContext.ts"
import type { RemoteErrorObject, Reply } from "../Nameko.ts"
import * as Codecs from "./codecs.ts"
import * as wire from "./wire.ts"

export const rpcExchange = "nameko-rpc"
export const rpcQueue = (service: string): string => `rpc-${service}`
export const rpcBinding = (service: string): string => `${service}.*`
export const rpcRoutingKey = (service: string, method: string): string => `${service}.${method}`
export const replyQueue = (name: string, id: string): string => `rpc.reply-${name}-${id}`
/** Nameko's reply queues expire five minutes after their consumer went */
export const replyQueueExpires = 300_000
export const eventExchange = (source: string): string => `${source}.events`

/** the queue of a Nameko `@event_handler` */
export const eventQueue = (
  source: string,
  type: string,
  delivery: "pool" | "broadcast" | "singleton",
  service: string,
  method: string,
  instanceId: string
): string =>
  delivery === "singleton"
    ? `evt-${source}-${type}`
    : delivery === "broadcast"
    ? `evt-${source}-${type}--${service}.${method}-${instanceId}`
    : `evt-${source}-${type}--${service}.${method}`

// ---- errors ----

/** a Nameko error object, as `nameko.exceptions.serialize` makes it */
export type ErrorObject = RemoteErrorObject

/** one of Nameko's own errors, which Python callers get back as that class */
export const namekoError = (
  name: "MethodNotFound" | "MalformedRequest" | "IncorrectSignature" | "UnserializableValueError",
  message: string
): ErrorObject => ({ exc_type: name, exc_path: `nameko.exceptions.${name}`, exc_args: [message], value: message })

/**
 * A contract error (its JSON encoding, with `_tag`): `exc_type` is its tag; `exc_args` holds the
 * encoded error, so that an effect-mesh caller gets it back with every field.
 */
export const contractError = (service: string, encoded: unknown): ErrorObject => {
  const fields = isRecord(encoded) ? encoded : {}
  const tag = typeof fields["_tag"] === "string" ? fields["_tag"] : "Error"
  const message = typeof fields["message"] === "string" && fields["message"] !== "" ? fields["message"] : tag
  return { exc_type: tag, exc_path: `effect_mesh.${service}.${tag}`, exc_args: [encoded], value: message }
}

/** a defect of the handler (or an error the contract does not declare) */
export const defect = (message: string): ErrorObject => ({
  exc_type: "RemoteDefect",
  exc_path: "effect_mesh.RemoteDefect",
  exc_args: [message],
  value: message
})

/** the reply body */
export const reply = (result: unknown, error: ErrorObject | undefined): Uint8Array =>
  wire.encodeJson({ result: error === undefined ? result : null, error: error ?? null })

/** a reply's body as its parts; `undefined` when it is not one */
export const readReply = (body: Uint8Array): Reply | undefined => {
  const json = wire.decodeJson(body)
  if (Option.isNone(json) || !isRecord(json.value)) return undefined
  const error = json.value["error"]
  if (error === null || error === undefined) return { result: json.value["result"], error: undefined }
  if (!isRecord(error)) return undefined
  return {
    result: null,
    error: {
      exc_type: typeof error["exc_type"] === "string" ? error["exc_type"] : "Exception",
      exc_path: typeof error["exc_path"] === "string" ? error["exc_path"] : "",
      exc_args: Array.isArray(error["exc_args"]) ? error["exc_args"] : [],
      value: typeof error["value"] === "string" ? error["value"] : String(error["value"] ?? "")
    }
  }
}

// ---- requests ----

/** the positional arguments of each method: the payload field each one goes to, in order */
export type Signatures = Readonly<Record<string, ReadonlyArray<string>>>

/**
 * An rpc Nameko's wire can carry: unary (Nameko has no streams) and without middleware (which a
 * Nameko caller could not satisfy).
 */
export const servable = (rpc: Rpc.AnyWithProps): boolean =>
  rpc.middlewares.size === 0 && !RpcSchema.isStreamSchema(rpc.successSchema)

const formatIssue = SchemaIssue.makeFormatterDefault()

/** the request body to the rpc's payload (decoded), or the Nameko error refusing it */
export const readRequest = (
  rpc: Rpc.AnyWithProps,
  positional: ReadonlyArray<string>,
  body: Uint8Array
): { readonly _tag: "Payload"; readonly payload: unknown } | { readonly _tag: "Refused"; readonly error: ErrorObject } => {
  const json = wire.decodeJson(body)
  if (Option.isNone(json) || !isRecord(json.value)) {
    return { _tag: "Refused", error: namekoError("MalformedRequest", "the body is not a JSON object") }
  }
  const args = json.value["args"]
  const kwargs = json.value["kwargs"]
  if (!Array.isArray(args) || !isRecord(kwargs)) {
    return { _tag: "Refused", error: namekoError("MalformedRequest", "Message missing `args` or `kwargs`") }
  }
  const method = rpc._tag
  const signature = (message: string) => ({ _tag: "Refused" as const, error: namekoError("IncorrectSignature", message) })
  if (args.length > positional.length) {
    return signature(`${method}() takes ${positional.length} positional arguments but ${args.length} were given`)
  }
  const fields: Record<string, unknown> = {}
  for (let i = 0; i < args.length; i++) fields[positional[i]] = args[i]
  const known = payloadFields(rpc)
  for (const key of Object.keys(kwargs)) {
    if (key in fields) return signature(`${method}() got multiple values for argument '${key}'`)
    if (!known.has(key)) return signature(`${method}() got an unexpected keyword argument '${key}'`)
    fields[key] = kwargs[key]
  }
  // an rpc without a payload struct (`Rpc.make("ping")`) takes no arguments
  const decoded = Codecs.codecsOf(rpc).decodePayload(isStruct(rpc) || Object.keys(fields).length > 0 ? fields : null)
  if (Exit.isFailure(decoded)) {
    const issue = Option.match(Exit.findErrorOption(decoded), {
      onNone: () => "the arguments do not match the payload",
      onSome: (error) => formatIssue(error.issue)
    })
    return signature(`${method}(): ${issue}`)
  }
  return { _tag: "Payload", payload: decoded.value }
}

/** a payload (as the caller gives it) to Nameko's body, through the rpc's schema */
export const writeRequest = (
  rpc: Rpc.AnyWithProps,
  positional: ReadonlyArray<string>,
  payload: unknown
): Exit.Exit<Uint8Array, Schema.SchemaError> =>
  Exit.map(Codecs.codecsOf(rpc).encodePayload(payload), (encoded) => {
    const fields = isRecord(encoded) ? encoded : {}
    const args: Array<unknown> = []
    // positional as far as given in a row; the rest by name
    let i = 0
    for (; i < positional.length && positional[i] in fields; i++) args.push(fields[positional[i]])
    const taken = new Set(positional.slice(0, i))
    const kwargs: Record<string, unknown> = {}
    for (const key of Object.keys(fields)) if (!taken.has(key)) kwargs[key] = fields[key]
    return wire.encodeJson({ args, kwargs })
  })

const fieldsOf = (rpc: Rpc.AnyWithProps): Readonly<Record<string, unknown>> | undefined =>
  (rpc.payloadSchema as unknown as { readonly fields?: Readonly<Record<string, unknown>> }).fields

const isStruct = (rpc: Rpc.AnyWithProps): boolean => fieldsOf(rpc) !== undefined

const payloadFields = (rpc: Rpc.AnyWithProps): ReadonlySet<string> => new Set(Object.keys(fieldsOf(rpc) ?? {}))

// ---- context ----

export const headerPrefix = "nameko."
export const callIdStackHeader = "nameko.call_id_stack"
export const userIdHeader = "nameko.user_id"
export const correlationIdHeader = "nameko.correlation_id"

/**
 * The context Nameko's headers carry, one hop further for a run of `<service>.<method>`: its call-id
 * stack with this run's entry pushed (as a Nameko worker pushes its own), the user id, the
 * correlation id (kept when a caller sent one, else the first call id of the stack), and every other
 * `nameko.<key>` as an entry `<key>` (`auth_token`, `language`, ...).
 */
export const contextOf = (
  headers: Readonly<Record<string, HeaderValue>> | undefined,
  run: { readonly service: string; readonly method: string; readonly id: string }
): CallContext.CallContext => {
  const entries: Record<string, string> = {}
  let stack: ReadonlyArray<string> = []
  let userId: string | undefined
  let correlationId = ""
  for (const key in headers) {
    if (!key.startsWith(headerPrefix)) continue
    const value = headers[key]
    if (key === callIdStackHeader) stack = stackOf(value)
    else if (key === userIdHeader) userId = String(value)
    else if (key === correlationIdHeader) correlationId = String(value)
    else entries[key.slice(headerPrefix.length)] = String(value)
  }
  const parent: CallContext.CallContext = {
    correlationId: correlationId !== "" ? correlationId : stack[0] ?? "",
    callIdStack: stack,
    userId,
    deadline: undefined,
    entries
  }
  return CallContext.child(parent, { ...run, deadline: undefined })
}

/**
 * The headers that carry a context to Nameko: its call-id stack as it is (the callee pushes its own
 * entry), or a fresh root entry `<caller>.call.<id>` outside any call, and every entry as
 * `nameko.<key>`. The stack goes as an AMQP list, which is what Nameko reads.
 */
export const headersOf = (context: CallContext.CallContext, caller: string, id: string): Record<string, HeaderValue> => {
  const headers: Record<string, HeaderValue> = {}
  for (const key in context.entries) headers[`${headerPrefix}${key}`] = context.entries[key]
  const stack = context.callIdStack.length > 0 ? context.callIdStack : [`${caller}.call.${id}`]
  // amqplib writes an array as an AMQP field array (a Python list on Nameko's side); the Broker seam
  // types header values as scalars, which is what both brokers hand back to its consumers
  headers[callIdStackHeader] = stack as unknown as HeaderValue
  if (context.userId !== undefined) headers[userIdHeader] = context.userId
  if (context.correlationId !== "") headers[correlationIdHeader] = context.correlationId
  return headers
}

/** a stack header as RabbitMQ hands it back (a list, as its JSON text) or as one string */
const stackOf = (value: HeaderValue | undefined): ReadonlyArray<string> => {
  if (typeof value !== "string") return []
  if (value.startsWith("[")) {
    const parsed = wire.decodeJson(new TextEncoder().encode(value))
    if (Option.isSome(parsed) && Array.isArray(parsed.value)) {
      return parsed.value.filter((e): e is string => typeof e === "string")
    }
  }
  return [value]
}

const isRecord = (u: unknown): u is Record<string, unknown> =>
  typeof u === "object" && u !== null && !Array.isArray(u)

// ---- schemas ----

/** a JSON codec of a schema, as a plain parse */
export const jsonDecoder = (schema: Schema.Top): (u: unknown) => Exit.Exit<unknown, Schema.SchemaError> =>
  Schema.decodeUnknownExit(Schema.toCodecJson(schema) as unknown as Schema.Codec<unknown, unknown>)
