/**
 * A typed client for a service, derived from its contract.
 *
 * Every method takes the rpc's payload and returns an `Effect` (or a `Stream` for streaming rpcs)
 * whose error channel is exactly the contract's errors plus the mesh's own `ServiceError`s. Calls
 * carry the current `CallContext` one hop further; a timeout (per client or per call) becomes the
 * callee's deadline and fails the call with `CallTimeout`, interrupting the handler. A retry
 * `Schedule` applies only to retryable failures (`ServiceError.isRetryable`: `TransportError` and
 * `ServiceNotFound` after which the request cannot have run), never to the contract's errors; `retryOn`
 * widens it for idempotent calls.
 *
 * ```ts
 * const calc = yield* ServiceClient.make(Calculator, { timeout: "5 seconds" })
 * const sum = yield* calc.add({ a: 1, b: 2 })
 * ```
 *
 * @since 0.1.0
 */
import { Cause, Clock, Context, Duration, Effect, Option, Queue, Result, Schedule, Stream } from "effect"
import type { Fiber, Layer } from "effect"
import type { Rpc } from "effect/rpc"
import type { RpcClient } from "effect/rpc"
import { RpcClientError, RpcSchema } from "effect/rpc"
import type { FromServerEncoded } from "effect/rpc/RpcMessage"
import type { Broker, BrokerError } from "./Broker.ts"
import * as BrokerRpcClient from "./BrokerRpcClient.ts"
import * as CallContext from "./CallContext.ts"
import * as Codecs from "./internal/codecs.ts"
import * as Metrics from "./internal/metrics.ts"
import * as wire from "./internal/wire.ts"
import type { ServiceContract } from "./ServiceContract.ts"
import type { ServiceError } from "./ServiceError.ts"
import { CallTimeout, isRetryable, isServiceError, RemoteDefect, TransportError } from "./ServiceError.ts"

/**
 * Options of one call.
 *
 * @since 0.1.0
 */
export interface CallOptions {
  /** overrides the client's timeout for this call */
  readonly timeout?: Duration.Input | undefined
  /** extra headers, readable by the handler through effect/rpc's `headers` */
  readonly headers?: Readonly<Record<string, string>> | undefined
}

/**
 * Options of a client.
 *
 * @since 0.1.0
 */
export interface Options {
  /** the default timeout of every call (none by default: the call waits for its deadline, if any) */
  readonly timeout?: Duration.Input | undefined
  /** retries failures for which `retryOn` holds */
  readonly retry?: Schedule.Schedule<unknown, ServiceError> | undefined
  /**
   * which of the mesh's errors `retry` retries (default `ServiceError.isRetryable`: never one after
   * which the request may have run). `ServiceError.isRetryableIfIdempotent` also retries a call whose
   * outcome is unknown or whose request waits in a queue nobody serves: for calls safe to run twice
   */
  readonly retryOn?: ((error: ServiceError) => boolean) | undefined
}

/**
 * The client method of one rpc.
 *
 * @since 0.1.0
 */
export type Method<R extends Rpc.Any> = (
  payload: Rpc.PayloadConstructor<R>,
  options?: CallOptions
) => [Rpc.SuccessSchema<R>] extends [RpcSchema.Stream<infer A, infer E>]
  ? Stream.Stream<A["Type"], E["Type"] | Rpc.Error<R> | ServiceError>
  : Effect.Effect<Rpc.Success<R>, Rpc.Error<R> | ServiceError>

/**
 * A client: one method per rpc of the contract.
 *
 * @since 0.1.0
 */
export type ServiceClient<Rpcs extends Rpc.Any> = {
  readonly [R in Rpcs as R["_tag"]]: Method<R>
}

/**
 * The process-wide connection clients use (one reply queue). Provided by `ServiceClient.layer`.
 *
 * @since 0.1.0
 */
export const Transport = BrokerRpcClient.Transport

/**
 * @since 0.1.0
 */
export type Transport = BrokerRpcClient.Transport

/**
 * The transport clients need, on the current `Broker`.
 *
 * @since 0.1.0
 */
export const layer: Layer.Layer<Transport, BrokerError, Broker> = BrokerRpcClient.layer

/**
 * Makes a typed client for a contract. Cheap after the first time: the underlying client is made once
 * per process.
 *
 * @since 0.1.0
 */
export const make = <const Name extends string, Rpcs extends Rpc.Any>(
  contract: ServiceContract<Name, Rpcs>,
  options?: Options
): Effect.Effect<ServiceClient<Rpcs>, never, Transport> =>
  Effect.gen(function*() {
    const transport = yield* BrokerRpcClient.Transport
    const services = yield* Effect.context<never>()
    const rpc = yield* transport.client(contract.name, contract.group)
    const service = contract.name
    const methods: Record<string, unknown> = {}
    for (const [tag, definition] of contract.group.requests) {
      const raw = (rpc as unknown as Record<string, RawMethod>)[tag]
      const call = Codecs.madeFirst(service, definition as unknown as Rpc.AnyWithProps, raw, (refused) =>
        isStream(definition) ? Stream.fromEffect(refused) : refused)
      const enforced = transport.enforcesDeadlines
      methods[tag] = isStream(definition)
        ? streamMethod(service, tag, call, options, enforced, services)
        : effectMethod(service, tag, call, options, enforced, unaryFor(transport, service, definition), services)
    }
    return methods as ServiceClient<Rpcs>
  })

/**
 * Calls a method by name, without its contract: for tools such as `mesh call`, not for programs. The
 * payload goes out as given (JSON); the server checks it against the method's schema
 * (`InvalidPayload`). The stream has the one result of a method, or each element of a streaming one,
 * in their JSON form; it fails with a contract error in its JSON form (`{ "_tag": ..., ... }`) or with
 * a `ServiceError`. The call carries the current `CallContext`, as typed calls do.
 *
 * @since 0.1.0
 */
export const callUntyped = (
  service: string,
  method: string,
  payload: unknown,
  options?: CallOptions
): Stream.Stream<unknown, unknown, Transport> =>
  Stream.unwrap(Effect.flatMap(
    Effect.flatMap(BrokerRpcClient.Transport, (transport) =>
      Effect.map(transport.protocol(service), (protocol) => ({ protocol, enforced: transport.enforcesDeadlines }))),
    ({ enforced, protocol }) =>
      Effect.map(Effect.context<never>(), (services) =>
        streamMethod(service, method, untypedMethod(protocol, method), undefined, enforced, services)(payload, options))
  ))

// ---- internal ----

type RawMethod = (
  payload: unknown,
  options: { readonly headers: Record<string, string> }
) => Effect.Effect<unknown, unknown> | Stream.Stream<unknown, unknown>

const isStream = (rpc: Rpc.Any): boolean => RpcSchema.isStreamSchema((rpc as Rpc.AnyWithProps).successSchema)

const defectMessage = (defect: unknown): string => {
  if (typeof defect === "string") return defect
  if (typeof defect === "object" && defect !== null && "message" in defect && typeof defect.message === "string") {
    return defect.message
  }
  return String(defect)
}

/**
 * A call past its caller's timeout, as the caller set it. The broker's transport fails its calls
 * itself (`internal/pendingCall.ts`); this is the caller's own word for a transport that does not
 * (a gateway's), and for a timeout noticed on the far side of one.
 */
const timedOut = (service: string, method: string, timeoutMillis: number): Effect.Effect<never, CallTimeout> =>
  Effect.fail(new CallTimeout({ service, method, timeoutMillis }))

/** what a failed call's cause means to the caller */
const toCallError = (service: string, method: string, timeoutMillis?: number) =>
(cause: Cause.Cause<unknown>): Effect.Effect<never, unknown> => {
  for (const reason of cause.reasons) {
    if (Cause.isFailReason(reason)) {
      const error = reason.error
      return Effect.fail(
        RpcClientError.RpcClientError.prototype.isPrototypeOf(error as object)
          ? new TransportError({ service, method, message: defectMessage(error) })
          : error
      )
    }
    if (Cause.isDieReason(reason)) {
      const meshError = wire.serviceErrorOfDefect(reason.defect)
      if (Option.isNone(meshError)) {
        return Effect.fail(new RemoteDefect({ service, method, message: defectMessage(reason.defect) }))
      }
      // whoever noticed the deadline first (this process's transport, or the instance with its own
      // clock), the caller's timeout is the one it set
      return meshError.value._tag === "CallTimeout" && timeoutMillis !== undefined
        ? timedOut(service, method, timeoutMillis)
        : Effect.fail(meshError.value)
    }
  }
  // only interrupts: if this fiber was interrupted it stays so; a remote interrupt must not
  // masquerade as a local one
  return Effect.fail(new RemoteDefect({ service, method, message: "the call was interrupted on the server" }))
}

// call ids only need to be unique, not secret: a random per-process prefix and a counter cost far
// less than a UUID per call
const idPrefix = crypto.randomUUID().replaceAll("-", "").slice(0, 10)
let nextId = 0
const shortId = (): string => `${idPrefix}${(nextId++).toString(36)}`

const toMillis = (timeout: Duration.Input | undefined): number | undefined =>
  timeout === undefined ? undefined : Duration.toMillis(Duration.fromInputUnsafe(timeout))

/** a call's context one hop further; its headers are made when they are needed (direct calls seldom do) */
class Prepared {
  readonly context: CallContext.CallContext
  /** milliseconds left before the deadline, if there is one */
  readonly remaining: number | undefined
  private readonly extra: Readonly<Record<string, string>> | undefined
  private made: Record<string, string> | undefined = undefined
  constructor(context: CallContext.CallContext, remaining: number | undefined, extra: Readonly<Record<string, string>> | undefined) {
    this.context = context
    this.remaining = remaining
    this.extra = extra
  }
  get headers(): Record<string, string> {
    if (this.made === undefined) {
      const own = CallContext.toHeaders(this.context)
      this.made = this.extra === undefined ? own : { ...lowerCaseNames(this.extra), ...own }
    }
    return this.made
  }
}

/** header names are case-insensitive: effect/rpc's `Headers` keeps them in lower case */
const lowerCaseNames = (headers: Readonly<Record<string, string>>): Record<string, string> => {
  const out: Record<string, string> = {}
  for (const key in headers) out[key.toLowerCase()] = headers[key]
  return out
}

/** the call's context one hop further, as headers; read from the calling fiber without effects */
const prepare = (
  fiber: Fiber.Fiber<unknown, unknown>,
  service: string,
  method: string,
  clientTimeout: number | undefined,
  call: CallOptions | undefined
): Prepared => {
  const parent = fiber.getRef(CallContext.CallContext)
  const now = fiber.getRef(Clock.Clock).currentTimeMillisUnsafe()
  const timeout = call?.timeout === undefined ? clientTimeout : toMillis(call.timeout)
  const own = timeout === undefined ? undefined : now + timeout
  const context = CallContext.child(parent, { service, method, id: shortId(), deadline: own })
  return new Prepared(context, context.deadline === undefined ? undefined : context.deadline - now, call?.headers)
}

/**
 * `enforced`: the transport fails a call past its deadline itself, with no timer of ours: one watcher
 * per transport costs far less than `Effect.timeout` (a timer and a race of two fibers) per call.
 */
const effectMethod = (
  service: string,
  method: string,
  raw: RawMethod,
  options: Options | undefined,
  enforced: boolean,
  unary: ((payload: unknown, prepared: Prepared) => Effect.Effect<unknown, unknown>) | undefined,
  services: Context.Context<never>
) => {
  const clientTimeout = toMillis(options?.timeout)
  const onFailure = toCallError(service, method)
  const retry = options?.retry as Schedule.Schedule<unknown, unknown> | undefined
  const retryable = retryableOf(options)
  const measured = Metrics.rpcClient(service, method)
  return (payload: unknown, call?: CallOptions): Effect.Effect<unknown, unknown> => {
    const attempt = Effect.withFiber((fiber) => {
      const startedAt = performance.now()
      const prepared = prepare(fiber, service, method, clientTimeout, call)
      const timeoutMillis = prepared.remaining === undefined ? undefined : Math.max(0, prepared.remaining)
      const result = Effect.catchCause(
        unary !== undefined
          ? unary(payload, prepared)
          : raw(payload, { headers: prepared.headers }) as Effect.Effect<unknown, unknown>,
        timeoutMillis === undefined ? onFailure : toCallError(service, method, timeoutMillis)
      )
      const bounded = enforced || timeoutMillis === undefined
        ? result
        : Effect.timeoutOrElse(result, { duration: timeoutMillis, orElse: () => timedOut(service, method, timeoutMillis) })
      // its duration and outcome as the caller saw them (each attempt of a retried call), in the
      // client's own services' metrics (its caller's fiber has more to search through)
      return Effect.onExit(bounded, (exit) => measured(exit, startedAt, services))
    })
    if (retry === undefined) return attempt
    // only retryable failures reach the schedule: a contract error never waits for a retry delay
    const shielded = Effect.matchEffect(attempt, {
      onSuccess: (value) => Effect.succeed(Result.succeed(value)),
      onFailure: (error) => retryable(error) ? Effect.fail(error) : Effect.succeed(Result.fail(error))
    })
    return Effect.flatMap(Effect.retry(shielded, retry), (result) =>
      Result.match(result, { onSuccess: Effect.succeed, onFailure: Effect.fail }))
  }
}

/** a method's unary calls through the transport without effect/rpc's client, when it offers them */
const unaryFor = (transport: Transport["Service"], service: string, definition: Rpc.Any) => {
  const unary = transport.unary
  const rpc = definition as Rpc.AnyWithProps
  if (unary === undefined || rpc.middlewares.size > 0 || isStream(definition)) return undefined
  const method = rpc._tag
  const spanName = `${service}.${method}`
  const attributes = { "rpc.system.name": "effect_rpc", "rpc.method": method }
  return (payload: unknown, prepared: Prepared): Effect.Effect<unknown, unknown> =>
    Effect.useSpan(spanName, { kind: "client", attributes }, (span) =>
      unary(service, rpc, payload, {
        context: prepared.context,
        headers: () => prepared.headers,
        deadline: prepared.context.deadline,
        timeoutMillis: Math.max(0, prepared.remaining ?? 0),
        span
      }))
}

const streamMethod = (
  service: string,
  method: string,
  raw: RawMethod,
  options: Options | undefined,
  enforced: boolean,
  services: Context.Context<never>
) => {
  const clientTimeout = toMillis(options?.timeout)
  const measured = Metrics.rpcClient(service, method)
  const retry = options?.retry as Schedule.Schedule<unknown, unknown> | undefined
  const retryable = retryableOf(options)
  return (payload: unknown, call?: CallOptions): Stream.Stream<unknown, unknown> => {
    const stream = Stream.unwrap(Effect.withFiber((fiber) => {
      const startedAt = performance.now()
      const { headers, remaining } = prepare(fiber, service, method, clientTimeout, call)
      const onFailure = toCallError(service, method, remaining === undefined ? undefined : Math.max(0, remaining))
      const result = Stream.catchCause(
        raw(payload, { headers }) as Stream.Stream<unknown, unknown>,
        (cause) => Stream.fromEffect(onFailure(cause))
      )
      const bounded = remaining === undefined || enforced ? result : Stream.interruptWhen(
        result,
        Effect.andThen(Effect.sleep(Math.max(0, remaining)), timedOut(service, method, Math.max(0, remaining)))
      )
      // from the call to the stream's end, as the caller saw it (each attempt of a retried stream)
      return Effect.succeed(Stream.onExit(bounded, (exit) => measured(exit, startedAt, services)))
    }))
    if (retry === undefined) return stream
    return Stream.retry(stream, retry.pipe(Schedule.while(({ input }) => retryable(input))))
  }
}

/** which failures a client's `retry` sees: the mesh's own errors that `retryOn` accepts */
const retryableOf = (options: Options | undefined): (error: unknown) => boolean => {
  const retryOn = options?.retryOn
  return retryOn === undefined ? isRetryable : (error) => isServiceError(error) && retryOn(error)
}

let nextUntypedClient = 0

/**
 * one request on the raw protocol: chunks are acked as they come, the Exit ends the stream. Without
 * the contract a stream is known by its chunks: one that sends none ends with a `null` result
 */
const untypedMethod = (protocol: RpcClient.Protocol["Service"], method: string): RawMethod => (payload, { headers }) =>
  Stream.unwrap(Effect.gen(function*() {
    const clientId = nextUntypedClient++
    const requestId = `untyped-${clientId}`
    const replies = yield* Queue.unbounded<FromServerEncoded>()
    yield* Effect.forkScoped(protocol.run(clientId, (message) => Queue.offer(replies, message)))
    let done = false
    let chunks = false
    yield* Effect.addFinalizer(() =>
      done ? Effect.void : Effect.ignore(protocol.send(clientId, { _tag: "Interrupt", requestId }))
    )
    yield* protocol.send(clientId, {
      _tag: "Request",
      id: requestId,
      tag: method,
      payload,
      headers: Object.entries(headers)
    })
    return Stream.fromQueue(replies).pipe(
      Stream.takeUntil((message) => message._tag === "Exit"),
      Stream.flatMap((message): Stream.Stream<unknown, unknown> => {
        switch (message._tag) {
          case "Chunk":
            chunks = true
            return Stream.fromIterable(message.values).pipe(
              Stream.onEnd(Effect.ignore(protocol.send(clientId, { _tag: "Ack", requestId })))
            )
          case "Exit": {
            done = true
            const exit = message.exit
            // a stream ends with a void Exit: its value is not a result
            if (exit._tag === "Success") {
              return chunks || exit.value === undefined ? Stream.empty : Stream.succeed(exit.value)
            }
            return Stream.failCause(encodedCause(exit.cause))
          }
          default:
            return Stream.empty
        }
      })
    )
  }))

type EncodedCause = Extract<Extract<FromServerEncoded, { readonly _tag: "Exit" }>["exit"], { readonly _tag: "Failure" }>["cause"]

const encodedCause = (cause: EncodedCause): Cause.Cause<unknown> => {
  for (const reason of cause) {
    if (reason._tag === "Fail") return Cause.fail(reason.error)
    if (reason._tag === "Die") return Cause.die(reason.defect)
  }
  return Cause.interrupt()
}
