/**
 * What the HTTP and WebSocket edge modules share: JSON error bodies and the status of each error,
 * the call context an edge request runs with, and forwarding a contract's calls to the mesh.
 */
import { Cause, Effect, Option, Schema, SchemaIssue, Stream } from "effect"
import type { Duration } from "effect"
import type { Headers } from "effect/http"
import { HttpServerResponse } from "effect/http"
import type { HttpServerError } from "effect/http/HttpServerError"
import type { Rpc, RpcGroup } from "effect/rpc"
import { RpcSchema } from "effect/rpc"
import type { RpcServer } from "effect/rpc"
import type { FromClientEncoded } from "effect/rpc/RpcMessage"
import * as CallContext from "../CallContext.ts"
import * as ServiceClient from "../ServiceClient.ts"
import * as wire from "./wire.ts"
import type { ServiceContract } from "../ServiceContract.ts"
import type { ServiceError } from "../ServiceError.ts"
import {
  InvalidPayload,
  isServiceError,
  MethodNotFound,
  ServiceError as ServiceErrorSchema,
  ServiceNotFound
} from "../ServiceError.ts"

export const formatIssue = SchemaIssue.makeFormatterDefault()

/** the HTTP headers an edge reads the call context from */
export const requestHeaders = {
  correlationId: "x-correlation-id",
  userId: "x-user-id"
} as const

// ---- error bodies ----

export const statusOfServiceError = (error: ServiceError): number => {
  switch (error._tag) {
    case "ServiceNotFound":
      // the service exists, but no instance is serving it now: a retry later may succeed
      return error.reason === "NoConsumer" ? 503 : 404
    case "MethodNotFound":
      return 404
    case "InvalidPayload":
      return 400
    case "Forbidden":
      return 403
    case "CallTimeout":
      return 504
    case "RemoteDefect":
      return 500
    case "TransportError":
      return 502
  }
}

export const jsonResponse = (
  status: number,
  body: unknown,
  headers?: Readonly<Record<string, string>>
): HttpServerResponse.HttpServerResponse =>
  HttpServerResponse.jsonUnsafe(body, headers === undefined ? { status } : { status, headers })

const encodeServiceError = Schema.encodeSync(ServiceErrorSchema)

/** a mesh error as JSON: its encoded fields plus its message; no stack */
export const serviceErrorBody = (error: ServiceError): Record<string, unknown> => {
  const { stack: _stack, ...fields } = encodeServiceError(error) as Record<string, unknown>
  return { ...fields, message: error.message }
}

export const serviceErrorResponse = (error: ServiceError): HttpServerResponse.HttpServerResponse =>
  jsonResponse(statusOfServiceError(error), serviceErrorBody(error))

export const badRequest = (message: string, issue?: string): HttpServerResponse.HttpServerResponse =>
  jsonResponse(400, issue === undefined ? { _tag: "BadRequest", message } : { _tag: "BadRequest", message, issue })

export const payloadTooLarge: HttpServerResponse.HttpServerResponse = jsonResponse(413, {
  _tag: "PayloadTooLarge",
  message: "the request body is larger than the limit"
})

/** a request whose headers are over the edge's limits (`maxHeaderCount`) */
export const headersTooLarge = (message: string): HttpServerResponse.HttpServerResponse =>
  jsonResponse(431, { _tag: "RequestHeaderFieldsTooLarge", message })

export const internalError: HttpServerResponse.HttpServerResponse = jsonResponse(500, {
  _tag: "InternalServerError",
  message: "internal server error"
})

export const notFound = (message: string): HttpServerResponse.HttpServerResponse =>
  jsonResponse(404, { _tag: "NotFound", message })

/** the response for a failure reading the request itself */
export const requestErrorResponse = (error: HttpServerError): HttpServerResponse.HttpServerResponse => {
  const reason = error.reason
  switch (reason._tag) {
    case "RequestParseError":
      return reason.reason === "BodyTooLarge" ? payloadTooLarge : badRequest("the request body could not be read")
    case "RouteNotFound":
      return notFound("no route for this request")
    default:
      return internalError
  }
}

/** `None` for an empty body, else the parsed JSON; fails with a response for bad or oversize bodies */
export const readJsonBody = (
  request: { readonly text: Effect.Effect<string, HttpServerError> }
): Effect.Effect<unknown, HttpServerResponse.HttpServerResponse> =>
  Effect.flatMap(
    Effect.mapError(request.text, requestErrorResponse),
    (text) => {
      if (text.trim() === "") return Effect.succeed(undefined)
      return Option.match(parseJson(text), {
        onNone: () => Effect.fail(badRequest("the request body is not valid JSON")),
        onSome: Effect.succeed
      })
    }
  )

const parseJson: (text: string) => Option.Option<unknown> = Option.liftThrowable((text: string): unknown =>
  JSON.parse(text)
)

// ---- call context ----

/**
 * The call context of an edge request: the correlation id and user id from its headers; what
 * `x-correlation-id` / `x-user-id` say wins over the mesh headers a typed client sends.
 */
export const contextFromHeaders = (
  headers: Headers.Headers | Readonly<Record<string, string | undefined>>
): CallContext.CallContext => {
  const record = headers as Readonly<Record<string, string | undefined>>
  const mesh = CallContext.fromHeaders(headers)
  const correlationId = record[requestHeaders.correlationId]
  const userId = record[requestHeaders.userId]
  return {
    ...mesh,
    // the typed client's own entry for this call: the gateway's call to the mesh adds the real one
    callIdStack: mesh.callIdStack.slice(0, -1),
    correlationId: nonEmpty(correlationId) ?? mesh.correlationId,
    userId: nonEmpty(userId) ?? nonEmpty(mesh.userId)
  }
}

const nonEmpty = (s: string | undefined): string | undefined => s === undefined || s === "" ? undefined : s

// ---- forwarding to the mesh ----

/**
 * Any contract, as lists of contracts take them: `ServiceContract.Any` is too narrow for a union of
 * rpcs (an `RpcGroup` is invariant in them).
 */
export interface AnyContract {
  readonly name: string
  readonly group: RpcGroup.Any
}

export const erase = (contract: AnyContract): ServiceContract<string, Rpc.Any> =>
  contract as unknown as ServiceContract<string, Rpc.Any>

export type RawHandler = (
  payload: unknown,
  options: { readonly headers: Headers.Headers }
) => Effect.Effect<unknown, unknown> | Stream.Stream<unknown, unknown>

export const isStreamRpc = (rpc: Rpc.Any): boolean =>
  RpcSchema.isStreamSchema((rpc as Rpc.AnyWithProps).successSchema)

/** what a mesh error becomes inside an effect/rpc server: a defect the mesh's clients decode back */
const dieServiceErrors = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.catchIf(effect, isServiceError, (error) => Effect.die(wire.serviceErrorDefect(error as ServiceError))) as Effect.Effect<
    A,
    E,
    R
  >

/**
 * effect/rpc handlers for a contract that forward each call to the service over the mesh, with the
 * call context taken from the request's headers. Mesh errors travel as encoded defects, as they do
 * between services, so a `ServiceClient` on the far side gets them back typed.
 */
export const forwardingHandlers = <Rpcs extends Rpc.Any>(
  contract: ServiceContract<string, Rpcs>,
  options: { readonly timeout?: Duration.Input | undefined }
) =>
  Effect.gen(function*() {
    const client = yield* ServiceClient.make(contract, { timeout: options.timeout })
    const methods = client as unknown as Record<
      string,
      (payload: unknown) => Effect.Effect<unknown, unknown> | Stream.Stream<unknown, unknown>
    >
    const handlers: Record<string, RawHandler> = {}
    for (const [tag, rpc] of contract.group.requests) {
      const method = methods[tag]
      handlers[tag] = isStreamRpc(rpc)
        ? (payload, { headers }) =>
          Stream.catchCause(
            Stream.provideService(
              method(payload) as Stream.Stream<unknown, unknown>,
              CallContext.CallContext,
              contextFromHeaders(headers)
            ),
            (cause) => Stream.fromEffect(dieServiceErrors(Effect.failCause(cause)))
          )
        : (payload, { headers }) =>
          dieServiceErrors(
            Effect.provideService(
              method(payload) as Effect.Effect<unknown, unknown>,
              CallContext.CallContext,
              contextFromHeaders(headers)
            )
          )
    }
    return yield* contract.group.toHandlers(handlers as unknown as RpcGroup.HandlersFrom<Rpcs>)
  })

/** the first cause's reason as an error value, for JSON gateways */
export const failureOf = (cause: Cause.Cause<unknown>): { readonly _tag: "Fail"; readonly error: unknown } | {
  readonly _tag: "Die"
  readonly defect: unknown
} | { readonly _tag: "Interrupt" } => {
  for (const reason of cause.reasons) {
    if (Cause.isFailReason(reason)) return { _tag: "Fail", error: reason.error }
    if (Cause.isDieReason(reason)) return { _tag: "Die", defect: reason.defect }
  }
  return { _tag: "Interrupt" }
}

// ---- JSON calls (the HTTP gateway's `/rpc/<service>/<method>`, the WebSocket gateway's frames) ----

export interface MethodEntry {
  readonly service: string
  readonly method: string
  readonly stream: boolean
  readonly decodePayload: (u: unknown) => Effect.Effect<unknown, Schema.SchemaError>
  readonly encodeSuccess: (a: unknown) => Effect.Effect<unknown, Schema.SchemaError>
  readonly encodeError: (e: unknown) => Effect.Effect<unknown, Schema.SchemaError>
  readonly call: (payload: unknown) => Effect.Effect<unknown, unknown> | Stream.Stream<unknown, unknown>
}

export interface ContractEntry {
  readonly name: string
  readonly errorStatus: Readonly<Record<string, number>>
  readonly methods: ReadonlyMap<string, MethodEntry>
}

/** a contract's methods as JSON calls over the mesh (payloads decoded, answers encoded with its schemas) */
export const contractEntry = (
  given: AnyContract,
  options: {
    readonly timeout: Duration.Input
    readonly errorStatus?: Readonly<Record<string, number>> | undefined
  }
) =>
  Effect.gen(function*() {
    const contract = erase(given)
    const client = yield* ServiceClient.make(contract, { timeout: options.timeout })
    const calls = client as unknown as Record<string, MethodEntry["call"]>
    const methods = new Map<string, MethodEntry>()
    for (const [tag, rpc] of contract.group.requests) {
      const props = rpc as Rpc.AnyWithProps
      const stream = isStreamRpc(props)
      const streamSchema = props.successSchema as unknown as { readonly success: Schema.Top; readonly error: Schema.Top }
      const success = stream ? streamSchema.success : props.successSchema
      const error = stream ? Schema.Union([props.errorSchema, streamSchema.error]) : props.errorSchema
      methods.set(tag, {
        service: contract.name,
        method: tag,
        stream,
        // a method without a payload ignores the body (`{}` or nothing)
        decodePayload: props.payloadSchema === Schema.Void
          ? () => Effect.void
          : explained(props.payloadSchema),
        encodeSuccess: Schema.encodeUnknownEffect(Schema.toCodecJson(success)) as MethodEntry["encodeSuccess"],
        encodeError: Schema.encodeUnknownEffect(Schema.toCodecJson(error)) as MethodEntry["encodeError"],
        call: calls[tag]
      })
    }
    return { name: contract.name, errorStatus: options.errorStatus ?? {}, methods } satisfies ContractEntry
  })

/**
 * Decodes a payload with the JSON codec of its schema. The JSON codec of a number also accepts
 * "NaN" and "Infinity", so its issue for `"one"` lists only those; on failure the payload's own
 * schema explains it ("Expected number"), as the server's admission does for `mesh call`.
 */
const explained = (schema: Schema.Top): MethodEntry["decodePayload"] => {
  const json = Schema.decodeUnknownEffect(Schema.toCodecJson(schema)) as MethodEntry["decodePayload"]
  const plain = Schema.decodeUnknownEffect(schema as unknown as Schema.Codec<unknown, unknown>)
  return (u) =>
    Effect.catch(json(u), (error) => Effect.matchEffect(plain(u), { onFailure: Effect.fail, onSuccess: () => Effect.fail(error) }))
}

export interface ErrorBody {
  readonly status: number
  readonly body: unknown
}

const internalErrorBody: ErrorBody = {
  status: 500,
  body: { _tag: "InternalServerError", message: "internal server error" }
}

const serviceErrorOutcome = (error: ServiceError): ErrorBody => ({
  status: statusOfServiceError(error),
  body: serviceErrorBody(error)
})

/** a failed call's status and JSON body: mesh errors by kind, contract errors as the contract encodes them */
export const errorBody = (entry: ContractEntry, target: MethodEntry, error: unknown): Effect.Effect<ErrorBody> => {
  if (isServiceError(error)) return Effect.succeed(serviceErrorOutcome(error))
  const tag = typeof error === "object" && error !== null && "_tag" in error && typeof error._tag === "string"
    ? error._tag
    : undefined
  if (tag === undefined) return Effect.succeed(internalErrorBody)
  return target.encodeError(error).pipe(
    Effect.map((encoded): ErrorBody => {
      const fields = typeof encoded === "object" && encoded !== null ? encoded : { _tag: tag }
      const message = error instanceof Error && error.message !== "" ? { message: error.message } : {}
      return { status: entry.errorStatus[tag] ?? 422, body: { ...message, ...fields } }
    }),
    Effect.orElseSucceed(() => internalErrorBody)
  )
}

/** what a JSON call comes to: an answer (or error) with its status, or a stream of encoded values */
export type Outcome =
  | { readonly _tag: "Done"; readonly status: number; readonly body: unknown }
  | { readonly _tag: "Stream"; readonly values: Stream.Stream<unknown, ErrorBody> }

const done = (outcome: ErrorBody): Outcome => ({ _tag: "Done", status: outcome.status, body: outcome.body })

/** calls `service.method` with a JSON payload, under the current call context */
export const callJson = (
  entries: ReadonlyMap<string, ContractEntry>,
  service: string,
  method: string,
  payload: unknown
): Effect.Effect<Outcome> => {
  const entry = entries.get(service)
  if (entry === undefined) return Effect.succeed(done(serviceErrorOutcome(new ServiceNotFound({ service }))))
  const target = entry.methods.get(method)
  if (target === undefined) {
    return Effect.succeed(done(serviceErrorOutcome(new MethodNotFound({ service, method }))))
  }
  return Effect.matchEffect(target.decodePayload(payload), {
    onFailure: (error) =>
      Effect.succeed(
        done(serviceErrorOutcome(new InvalidPayload({ service, method, issue: formatIssue(error.issue) })))
      ),
    onSuccess: (decoded): Effect.Effect<Outcome> => {
      const failed = (error: unknown) => errorBody(entry, target, error)
      if (target.stream) {
        const values = (target.call(decoded) as Stream.Stream<unknown, unknown>).pipe(
          Stream.mapEffect(target.encodeSuccess),
          Stream.catch((error) => Stream.fromEffect(Effect.flatMap(failed(error), Effect.fail)))
        )
        return Effect.succeed({ _tag: "Stream", values })
      }
      return (target.call(decoded) as Effect.Effect<unknown, unknown>).pipe(
        Effect.flatMap(target.encodeSuccess),
        Effect.map((encoded): Outcome => ({ _tag: "Done", status: 200, body: encoded === undefined ? null : encoded })),
        Effect.catch((error) => Effect.map(failed(error), done))
      )
    }
  })
}

// ---- effect/rpc protocols ----

const protectedHeaders: ReadonlySet<string> = new Set([requestHeaders.correlationId, requestHeaders.userId])

/**
 * A server protocol whose requests keep only the first occurrence of the headers the edge sets: the
 * HTTP request's headers come first, so a client cannot override its identity in the rpc envelope.
 */
export const firstHeaderWins = (protocol: RpcServer.Protocol["Service"]): RpcServer.Protocol["Service"] => ({
  ...protocol,
  run: (f) =>
    protocol.run((clientId, message: FromClientEncoded) => {
      if (message._tag !== "Request") return f(clientId, message)
      const seen = new Set<string>()
      const headers = message.headers.filter(([key]) => {
        const name = key.toLowerCase()
        if (!protectedHeaders.has(name)) return true
        if (seen.has(name)) return false
        seen.add(name)
        return true
      })
      return f(clientId, { ...message, headers })
    })
})

