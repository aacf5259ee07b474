/**
 * HTTP routes a service declares among its entrypoints (Nameko's `@http`): a method and a path, path
 * parameters, query, headers and a JSON body decoded by Schema, and a typed answer encoded by
 * Schema with its status and headers. The handler's types come from the schemas.
 *
 * ```ts
 * export const OrdersLive = Service.make(Orders, {
 *   handlers,
 *   entrypoints: [
 *     HttpEntrypoint.make({
 *       method: "GET",
 *       path: "/orders/:id",
 *       params: Schema.Struct({ id: Schema.FiniteFromString }),
 *       success: Order,
 *       errors: { 404: OrderNotFound }
 *     }, ({ params }) => findOrder(params.id))
 *   ]
 * })
 * ```
 *
 * Errors become statuses: input that fails its schema (or a body that is not JSON) 400 with the
 * schema's issue, a body over the edge's limit 413, each declared error its own status with its
 * encoded fields as the body, anything else (an undeclared failure, a defect) 500 with no detail,
 * logged on the server. The handler runs as a call of the service: a `CallContext` one hop below the
 * edge's (same correlation and user), and a span.
 *
 * The routes are registered on the current `HttpRouter` (`HttpGateway.layerServer` provides it) when
 * the service instance starts.
 *
 * @since 0.1.0
 */
import { Effect, Layer, Schema } from "effect"
import type { Scope } from "effect"
import type { HttpMethod } from "effect/http"
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import * as CallContext from "./CallContext.ts"
import * as edge from "./internal/edge.ts"
import * as Service from "./Service.ts"

// ---- models ----

/**
 * The methods a route can answer (`GET` routes answer `HEAD` too).
 *
 * @since 0.1.0
 */
export type Method = Exclude<HttpMethod.HttpMethod, "HEAD" | "TRACE">

/**
 * What a route declares. Every schema is optional; the ones given shape the handler's input, its
 * answer and its error channel.
 *
 * @since 0.1.0
 */
export interface Options<
  P extends Schema.Top | undefined,
  Q extends Schema.Top | undefined,
  H extends Schema.Top | undefined,
  B extends Schema.Top | undefined,
  S extends Schema.Top | undefined,
  Errors extends ErrorStatuses
> {
  readonly method: Method
  readonly path: HttpRouter.PathInput
  /** a name for logs, spans and the call-id stack (default `METHOD path`) */
  readonly name?: string | undefined
  /** decodes the path parameters (strings) */
  readonly params?: P
  /** decodes the query string (strings, arrays for repeated keys) */
  readonly query?: Q
  /** decodes the request headers (lower-case names) */
  readonly headers?: H
  /** decodes the JSON body */
  readonly body?: B
  /** encodes the answer as JSON; without it the handler answers nothing (204) */
  readonly success?: S
  /** the status of a successful answer (default 200, or 204 without `success`) */
  readonly status?: number | undefined
  /** the declared errors, by status: `{ 404: OrderNotFound, 409: Conflict }` */
  readonly errors?: Errors
}

/**
 * Declared errors by status.
 *
 * @since 0.1.0
 */
export type ErrorStatuses = { readonly [status: number]: Schema.Top }

/**
 * The decoded type of an optional schema (`undefined` when it is absent).
 *
 * @since 0.1.0
 */
export type TypeOf<S> = S extends Schema.Top ? S["Type"] : undefined

/**
 * What a handler gets: the decoded inputs and the request itself.
 *
 * @since 0.1.0
 */
export interface Input<P, Q, H, B> {
  readonly params: TypeOf<P>
  readonly query: TypeOf<Q>
  readonly headers: TypeOf<H>
  readonly body: TypeOf<B>
  readonly request: HttpServerRequest.HttpServerRequest
}

/**
 * An answer with its own status or headers: `HttpEntrypoint.reply(order, { status: 201 })`.
 *
 * @since 0.1.0
 */
export class Reply<A> {
  readonly _tag = "Reply"
  readonly value: A
  readonly status: number | undefined
  readonly headers: Readonly<Record<string, string>>
  constructor(value: A, status: number | undefined, headers: Readonly<Record<string, string>>) {
    this.value = value
    this.status = status
    this.headers = headers
  }
}

/**
 * Answers with a value and a status and/or headers of its own.
 *
 * @since 0.1.0
 */
export const reply = <A>(
  value: A,
  options: { readonly status?: number | undefined; readonly headers?: Readonly<Record<string, string>> | undefined }
): Reply<A> => new Reply(value, options.status, options.headers ?? {})

/**
 * What a handler may answer: the success value, a `Reply` of it, or any response it builds itself (a
 * stream, HTML, a redirect).
 *
 * @since 0.1.0
 */
export type Answer<S> = SuccessOf<S> | Reply<SuccessOf<S>> | HttpServerResponse.HttpServerResponse

/**
 * The value a handler answers: the success schema's type, or nothing without one.
 *
 * @since 0.1.0
 */
export type SuccessOf<S> = S extends Schema.Top ? S["Type"] : void

/**
 * The error a handler may fail with: one of the declared errors.
 *
 * @since 0.1.0
 */
export type ErrorOf<Errors extends ErrorStatuses> = { [K in keyof Errors]: Errors[K] extends Schema.Top ? Errors[K]["Type"] : never }[keyof Errors]

/**
 * What the schemas of a route need to decode and encode.
 *
 * @since 0.1.0
 */
export type SchemaServices<P, Q, H, B, S, Errors extends ErrorStatuses> =
  | (P extends Schema.Top ? P["DecodingServices"] : never)
  | (Q extends Schema.Top ? Q["DecodingServices"] : never)
  | (H extends Schema.Top ? H["DecodingServices"] : never)
  | (B extends Schema.Top ? B["DecodingServices"] : never)
  | (S extends Schema.Top ? S["EncodingServices"] : never)
  | { [K in keyof Errors]: Errors[K] extends Schema.Top ? Errors[K]["EncodingServices"] : never }[keyof Errors]

// ---- constructors ----

/**
 * A route as an entrypoint of a service. Its requirements: the router, what the handler needs, and
 * what the schemas need.
 *
 * @since 0.1.0
 */
export const make = <
  R,
  const P extends Schema.Top | undefined = undefined,
  const Q extends Schema.Top | undefined = undefined,
  const H extends Schema.Top | undefined = undefined,
  const B extends Schema.Top | undefined = undefined,
  const S extends Schema.Top | undefined = undefined,
  const Errors extends ErrorStatuses = {}
>(
  options: Options<P, Q, H, B, S, Errors>,
  handler: (input: Input<P, Q, H, B>) => Effect.Effect<Answer<S>, ErrorOf<Errors>, R>
): Service.Entrypoint<
  never,
  HttpRouter.HttpRouter | Exclude<R, HttpServerRequest.HttpServerRequest | Scope.Scope> | SchemaServices<P, Q, H, B, S, Errors>
> => {
  const name = options.name ?? `${options.method} ${options.path}`
  return Service.entrypoint(
    `http:${name}`,
    (instance) =>
      Layer.effectDiscard(Effect.gen(function*() {
        const router = yield* HttpRouter.HttpRouter
        const context = yield* Effect.context<never>()
        const route = routeEffect(
          instance.service,
          name,
          options as Options<Schema.Top | undefined, Schema.Top | undefined, Schema.Top | undefined, Schema.Top | undefined, Schema.Top | undefined, ErrorStatuses>,
          handler as unknown as (input: Input<AnySchema, AnySchema, AnySchema, AnySchema>) => Effect.Effect<unknown, unknown>
        )
        yield* router.add(options.method, options.path, Effect.provideContext(route, context))
      }))
  ) as Service.Entrypoint<
    never,
    HttpRouter.HttpRouter | Exclude<R, HttpServerRequest.HttpServerRequest | Scope.Scope> | SchemaServices<P, Q, H, B, S, Errors>
  >
}

/**
 * A route outside any service (a gateway-only process), as a Layer.
 *
 * @since 0.1.0
 */
export const layer = <E, R>(entrypoint: Service.Entrypoint<E, R>): Layer.Layer<never, E, R> =>
  entrypoint.layer({ service: "http", instanceId: crypto.randomUUID() })

// ---- internal ----

type AnySchema = Schema.Top | undefined

const decoder = (schema: Schema.Top, json: boolean) =>
  Schema.decodeUnknownEffect(json ? Schema.toCodecJson(schema) : schema) as (
    u: unknown
  ) => Effect.Effect<unknown, Schema.SchemaError>

const encoder = (schema: Schema.Top) =>
  Schema.encodeUnknownEffect(Schema.toCodecJson(schema)) as (u: unknown) => Effect.Effect<unknown, Schema.SchemaError>

/** decodes one part of the request, or fails with the 400 that says which part and why */
const decodePart = (
  part: string,
  decode: ((u: unknown) => Effect.Effect<unknown, Schema.SchemaError>) | undefined,
  input: Effect.Effect<unknown, HttpServerResponse.HttpServerResponse, HttpServerRequest.HttpServerRequest | HttpRouter.RouteContext | HttpServerRequest.ParsedSearchParams>
) =>
  decode === undefined
    ? Effect.succeed(undefined)
    : Effect.flatMap(input, (raw) =>
      Effect.mapError(decode(raw), (error) => edge.badRequest(`invalid ${part}`, edge.formatIssue(error.issue))))

const routeEffect = (
  service: string,
  name: string,
  options: Options<AnySchema, AnySchema, AnySchema, AnySchema, AnySchema, ErrorStatuses>,
  handler: (input: Input<AnySchema, AnySchema, AnySchema, AnySchema>) => Effect.Effect<unknown, unknown>
): Effect.Effect<
  HttpServerResponse.HttpServerResponse,
  never,
  HttpServerRequest.HttpServerRequest | HttpRouter.RouteContext | HttpServerRequest.ParsedSearchParams
> => {
  const params = options.params === undefined ? undefined : decoder(options.params, false)
  const query = options.query === undefined ? undefined : decoder(options.query, false)
  const headers = options.headers === undefined ? undefined : decoder(options.headers, false)
  const body = options.body === undefined ? undefined : decoder(options.body, true)
  const success = options.success === undefined ? undefined : encoder(options.success)
  const okStatus = options.status ?? (options.success === undefined ? 204 : 200)
  const errors = Object.entries(options.errors ?? {}).map(([status, schema]) => ({
    status: Number(status),
    is: Schema.is(schema as Schema.Top),
    encode: encoder(schema as Schema.Top)
  }))

  const answer = (value: unknown): Effect.Effect<HttpServerResponse.HttpServerResponse, Schema.SchemaError> => {
    if (HttpServerResponse.isHttpServerResponse(value)) return Effect.succeed(value)
    const replied = value instanceof Reply ? value : undefined
    const status = replied?.status ?? okStatus
    const extra = replied?.headers
    const raw = replied === undefined ? value : replied.value
    if (success === undefined) return Effect.succeed(HttpServerResponse.empty({ status, ...(extra ? { headers: extra } : {}) }))
    return Effect.map(success(raw), (encoded) => edge.jsonResponse(status, encoded === undefined ? null : encoded, extra))
  }

  const failed = (error: unknown): Effect.Effect<HttpServerResponse.HttpServerResponse> => {
    const declared = errors.find((e) => e.is(error))
    if (declared === undefined) {
      return Effect.as(Effect.logError(`${service} ${name}: an undeclared failure`, error), edge.internalError)
    }
    return declared.encode(error).pipe(
      Effect.map((encoded) => {
        const message = error instanceof Error && error.message !== "" ? { message: error.message } : {}
        return edge.jsonResponse(declared.status, typeof encoded === "object" && encoded !== null ? { ...message, ...encoded } : encoded)
      }),
      Effect.catch(() => Effect.succeed(edge.internalError))
    )
  }

  return Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const input: Input<AnySchema, AnySchema, AnySchema, AnySchema> = {
      params: yield* decodePart("path parameters", params, HttpRouter.params),
      query: yield* decodePart("query", query, HttpServerRequest.ParsedSearchParams),
      headers: yield* decodePart("headers", headers, Effect.succeed(request.headers)),
      body: yield* decodePart("body", body, edge.readJsonBody(request)),
      request
    }
    const parent = yield* CallContext.CallContext
    const context = CallContext.child(parent, {
      service,
      method: `http:${name}`,
      id: crypto.randomUUID().slice(0, 13),
      deadline: undefined
    })
    return yield* handler(input).pipe(
      Effect.provideService(CallContext.CallContext, context),
      Effect.withSpan(`${service}.http ${name}`),
      Effect.matchCauseEffect({
        onSuccess: (value) =>
          Effect.catch(answer(value), (error) =>
            Effect.as(Effect.logError(`${service} ${name}: the answer does not match its schema`, error), edge.internalError)),
        onFailure: (cause) => {
          const failure = edge.failureOf(cause)
          if (failure._tag === "Fail") return failed(failure.error)
          if (failure._tag === "Die") {
            return Effect.as(Effect.logError(`${service} ${name}: a defect`, cause), edge.internalError)
          }
          return Effect.interrupt
        }
      })
    )
  }).pipe(Effect.catch((response) => Effect.succeed(response)))
}


