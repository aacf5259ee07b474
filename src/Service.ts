/**
 * A running service is a `Layer`: the contract's handlers served from the service's queue on the
 * current `Broker`. Its requirements are what the handlers require (plus the `Broker`), so a missing
 * dependency is a type error, not a crash at run time.
 *
 * ```ts
 * export const CalculatorLive = Service.make(Calculator, {
 *   handlers: {
 *     add: ({ a, b }) => Effect.succeed(a + b),
 *     divide: ({ a, b }) => b === 0 ? Effect.fail(new DivisionByZero()) : Effect.succeed(a / b),
 *     countdown: ({ from }) => Stream.range(0, from).pipe(Stream.map((i) => from - i))
 *   }
 * })
 * ```
 *
 * Handlers read the current call with `yield* CallContext.CallContext`; calls they make carry it on.
 * When the Layer is released, the service stops taking requests, lets running ones finish within
 * `drainTimeout`, and returns the rest to the queue for another instance.
 *
 * @since 0.1.0
 */
import { Clock, Effect, Layer, Schema, Stream } from "effect"
import type { Duration, Scope } from "effect"
import type { Rpc, RpcGroup } from "effect/rpc"
import { Rpc as RpcModule, RpcServer } from "effect/rpc"
import type { Broker, BrokerError } from "./Broker.ts"
import * as BrokerRpcServer from "./BrokerRpcServer.ts"
import * as CallContext from "./CallContext.ts"
import type { ServiceContract } from "./ServiceContract.ts"
import { CallTimeout, RemoteDefect, ServiceError } from "./ServiceError.ts"

/**
 * @since 0.1.0
 */
export interface Options<Handlers, EX, RX> {
  /** the handlers, or an effect building them (its requirements become the Layer's) */
  readonly handlers: Handlers | Effect.Effect<Handlers, EX, RX>
  /** requests one instance runs at once; the broker holds the rest (default 64) */
  readonly concurrency?: number | undefined
  /** how long a stopping instance waits for running requests (default 10 seconds) */
  readonly drainTimeout?: Duration.Input | undefined
  /** send the stack of a handler's defect to callers (off by default) */
  readonly exposeStackTraces?: boolean | undefined
  /** deliveries of one request before it goes to the service's dead-letter queue (default 5) */
  readonly deliveryLimit?: number | undefined
}

/**
 * What the Layer of `make` requires: the broker, and everything the handlers require.
 *
 * @since 0.1.0
 */
export type Requirements<Rpcs extends Rpc.Any, Handlers, RX> =
  | Broker
  | Exclude<RX, Scope.Scope>
  | RpcGroup.HandlersServices<Rpcs, Handlers>
  | Rpc.Middleware<Rpcs>
  | Rpc.ServicesServer<Rpcs>

/**
 * Serves a contract's handlers on the current broker.
 *
 * @since 0.1.0
 */
export const make = <
  const Name extends string,
  Rpcs extends Rpc.Any,
  const Handlers extends RpcGroup.HandlersFrom<Rpcs>,
  EX = never,
  RX = never
>(
  contract: ServiceContract<Name, Rpcs>,
  options: Options<Handlers, EX, RX>
): Layer.Layer<never, EX | BrokerError, Requirements<Rpcs, Handlers, RX>> =>
  Layer.effectDiscard(Effect.gen(function*() {
    const build = options.handlers
    const handlers: Record<string, RawHandler> = Effect.isEffect(build)
      ? yield* (build as unknown as Effect.Effect<Record<string, RawHandler>, EX, RX>)
      : build as unknown as Record<string, RawHandler>
    const wrapped: Record<string, RawHandler> = {}
    for (const tag in handlers) {
      wrapped[tag] = wrapHandler(contract.name, tag, handlers[tag], options.exposeStackTraces === true)
    }
    const context = yield* contract.group.toHandlers(wrapped as unknown as Handlers)
    const server = yield* BrokerRpcServer.make({
      service: contract.name,
      group: contract.group as unknown as RpcGroup.RpcGroup<Rpc.Any>,
      concurrency: options.concurrency ?? 64,
      drainTimeout: options.drainTimeout ?? BrokerRpcServer.defaultDrainTimeout,
      instanceId: crypto.randomUUID(),
      deliveryLimit: options.deliveryLimit
    })
    yield* RpcServer.make(contract.group, {
      disableFatalDefects: true,
      spanPrefix: contract.name
    }).pipe(
      Effect.provideService(RpcServer.Protocol, server.protocol),
      Effect.provide(context),
      Effect.forkScoped
    )
    // added last, so it runs first: requests drain before the server above is interrupted
    yield* Effect.addFinalizer(() => server.drain)
  })) as Layer.Layer<never, EX | BrokerError, Requirements<Rpcs, Handlers, RX>>

// ---- internal ----

type HandlerResult = Effect.Effect<unknown, unknown, unknown> | Stream.Stream<unknown, unknown, unknown>
type RawHandler = (payload: unknown, options: Parameters<Rpc.ToHandlerFn<Rpc.Any>>[1]) => RpcModule.WrapperOr<HandlerResult>

const encodeServiceError = Schema.encodeSync(ServiceError)

const wrapHandler = (service: string, method: string, handler: RawHandler, exposeStackTraces: boolean): RawHandler =>
(payload, options) => {
  const context = CallContext.fromHeaders(options.headers)
  const withStack = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    exposeStackTraces
      ? Effect.catchDefect(effect, (defect) =>
        Effect.die(encodeServiceError(
          new RemoteDefect({
            service,
            method,
            message: defect instanceof Error ? defect.message : String(defect),
            ...(defect instanceof Error && defect.stack !== undefined ? { stack: defect.stack } : {})
          })
        )))
      : effect
  return RpcModule.wrapMap(handler(payload, options), (result): HandlerResult => {
    if (Stream.isStream(result)) return Stream.provideService(result, CallContext.CallContext, context)
    const effect = withStack(Effect.provideService(result, CallContext.CallContext, context))
    if (context.deadline === undefined) return effect
    const deadline = context.deadline
    // past the caller's deadline nobody waits for the answer: stop the work, say why
    return Effect.flatMap(Clock.currentTimeMillis, (now) => {
      const timeoutMillis = Math.max(0, deadline - now)
      return Effect.timeoutOrElse(effect, {
        duration: timeoutMillis,
        orElse: () => Effect.die(encodeServiceError(new CallTimeout({ service, method, timeoutMillis })))
      })
    })
  })
}
