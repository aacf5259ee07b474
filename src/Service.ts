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
 * `drainTimeout`, and returns the rest to the queue for another instance. Each instance is
 * discoverable (`Discovery`) unless `discovery: false`, and the Layer knows its contract
 * (`contractOf`), which is how `mesh run` finds the services a module exports.
 *
 * @since 0.1.0
 */
import { Config, Context, Duration, Effect, Exit, Layer, Option, References, Schema, Scope, Stream } from "effect"
import type { Fiber } from "effect"
import { Headers } from "effect/http"
import type { Rpc, RpcGroup } from "effect/rpc"
import { Rpc as RpcModule, RpcSchema, RpcServer } from "effect/rpc"
import { RequestId } from "effect/rpc/RpcMessage"
import type { BrokerError, QueueType } from "./Broker.ts"
import { Broker } from "./Broker.ts"
import * as BrokerRpcServer from "./BrokerRpcServer.ts"
import * as CallContext from "./CallContext.ts"
import * as Discovery from "./Discovery.ts"
import * as Identity from "./internal/identity.ts"
import * as QueueTypes from "./internal/queueType.ts"
import * as Runner from "./internal/runner.ts"
import * as SingleInstance_ from "./internal/singleInstance.ts"
import * as wire from "./internal/wire.ts"
import * as MessageSize from "./internal/messageSize.ts"
import * as Sealed from "./Sealed.ts"
import type { ServiceContract } from "./ServiceContract.ts"
import { Forbidden, RemoteDefect } from "./ServiceError.ts"

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
  /**
   * the type of the service's request queue (it carries its commands too): `classic` (the default) or
   * `quorum`, replicated on a cluster; unset, `MESH_QUEUE_TYPE` decides. See the README's "Queues"
   */
  readonly queueType?: QueueType | undefined
  /** on a quorum queue, deliveries of one request before it goes to the dead-letter queue (default 5) */
  readonly deliveryLimit?: number | undefined
  /**
   * the largest request body (and command) taken from the broker, in bytes (default 1 MiB, as the HTTP
   * gateway's `maxBodySize`); a larger one is refused before it is decoded, with `InvalidPayload`
   */
  readonly maxMessageSize?: number | undefined
  /** answer `describe` and announce the instance on the broker (default true); see `Discovery` */
  readonly discovery?: boolean | undefined
  /** the events the service publishes, for `describe` (an `Event.Event` fits) */
  readonly publishes?: ReadonlyArray<Discovery.PublishedEvent> | undefined
  /**
   * the authorization policy: asked before every call and command runs (on every route: the mesh, the
   * HTTP and WebSocket gateways, Nameko callers); `false` denies it, and the caller gets `Forbidden`
   * without the handler running. Decide on `context.verifiedUserId`, the sender the broker verified,
   * never on the claimed `userId` alone. A policy that needs services gets them where the Layer is
   * built (`Layer.unwrap`)
   */
  readonly authorize?: ((call: Call) => Effect.Effect<boolean>) | undefined
}

/**
 * Single-instance mode (nuropb's fixed instance id), an option of `make`: the instance runs under this
 * id, and no other instance with it runs anywhere on the broker at the same time.
 *
 * @since 0.1.0
 */
export interface SingleInstance {
  /** the fixed instance id */
  readonly id: string
  /**
   * when another instance runs with this id: `fail` (the default) fails the Layer with `InstanceTaken`,
   * naming the holder; `wait` waits, and starts once the holder stops or dies
   */
  readonly whenTaken?: "fail" | "wait" | undefined
  /**
   * how long the lease on the id lasts without being renewed: a holder that dies is replaced within
   * about this long, and one that loses the broker stops leading as soon (default 1 second)
   */
  readonly lease?: Duration.Input | undefined
}

/**
 * A service started with a fixed instance id found another instance running with it.
 *
 * @since 0.1.0
 */
export class InstanceTaken extends Schema.TaggedError<InstanceTaken>()("InstanceTaken", {
  service: Schema.String,
  instanceId: Schema.String,
  /** the running instance, as discovery describes it (host, pid, broker, start time) */
  holder: Schema.String
}) {
  override get message(): string {
    return `${this.service}: instance ${this.instanceId} is already running (${this.holder}); ` +
      `stop it, or start this one with whenTaken: "wait" to take over when it goes`
  }
}

/** the running instance's leadership, as its handlers and entrypoints see it */
const CurrentLeadership = Context.Reference<SingleInstance_.Leadership>("effect-mesh/Service/Leadership", {
  defaultValue: () => ({ leading: false })
})

/**
 * Whether the running instance leads: started with a fixed instance id (`make`'s `instance`) and
 * holding it on the broker now (nuropb's `is_leader`). Always false for other instances.
 *
 * @since 0.1.0
 */
export const isLeader: Effect.Effect<boolean> = Effect.withFiber((fiber) =>
  Effect.succeed(fiber.getRef(CurrentLeadership).leading)
)

/**
 * A call as the authorization policy sees it: which method, its payload (made by its schema), and the
 * caller's context (`verifiedUserId`: the sender the broker verified).
 *
 * @since 0.1.0
 */
export interface Call {
  readonly service: string
  readonly method: string
  readonly payload: unknown
  readonly context: CallContext.CallContext
}

/**
 * Who is running: the service's name and this instance's id (unique per running Layer).
 *
 * @since 0.1.0
 */
export interface Instance {
  readonly service: string
  readonly instanceId: string
  /** the service's authorization policy (`Options.authorize`), for entrypoints that serve calls too */
  readonly authorize?: ((call: Call) => Effect.Effect<boolean>) | undefined
}

/**
 * Something a service runs besides its rpc handlers (an event subscription, a timer, a worker, an
 * HTTP route): a Layer made for the running instance.
 *
 * @since 0.1.0
 */
export interface Entrypoint<out E = never, out R = never> {
  readonly _tag: "Entrypoint"
  /** a name for logs and `describe` */
  readonly name: string
  readonly layer: (instance: Instance) => Layer.Layer<never, E, R>
}

/**
 * Makes an entrypoint.
 *
 * @since 0.1.0
 */
export const entrypoint = <E, R>(
  name: string,
  layer: (instance: Instance) => Layer.Layer<never, E, R>
): Entrypoint<E, R> => ({ _tag: "Entrypoint", name, layer })

/**
 * The error of a list of entrypoints.
 *
 * @since 0.1.0
 */
export type EntrypointError<T> = T extends Entrypoint<infer E, infer _R> ? E : never

/**
 * The requirements of a list of entrypoints.
 *
 * @since 0.1.0
 */
export type EntrypointServices<T> = T extends Entrypoint<infer _E, infer R> ? R : never

/**
 * What the Layer of `make` requires: the broker, and everything the handlers require.
 *
 * @since 0.1.0
 */
export type Requirements<Rpcs extends Rpc.Any, Handlers, RX> =
  | Broker
  | Exclude<RX, Scope.Scope>
  | NotAny<RpcGroup.HandlersServices<Rpcs, Handlers>>
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
  RX = never,
  const Entrypoints extends ReadonlyArray<Entrypoint<unknown, unknown>> = [],
  const Single extends SingleInstance | undefined = undefined
>(
  contract: ServiceContract<Name, Rpcs>,
  options: Options<Handlers, EX, RX> & {
    /** event subscriptions, timers, workers, routes: everything else the service runs */
    readonly entrypoints?: Entrypoints | undefined
    /** single-instance mode: a fixed instance id, held on the broker (see `SingleInstance`) */
    readonly instance?: Single
  }
): Layer.Layer<
  never,
  EX | BrokerError | EntrypointError<Entrypoints[number]> | ([Single] extends [undefined] ? never : InstanceTaken),
  Requirements<Rpcs, Handlers, RX> | EntrypointServices<Entrypoints[number]>
> =>
  mark(
    Layer.unwrap(Effect.gen(function*() {
      const single = options.instance
      const instance: Instance = { service: contract.name, instanceId: single?.id ?? crypto.randomUUID(), authorize: options.authorize }
      const leadership: SingleInstance_.Leadership = { leading: false }
      if (single !== undefined) {
        const taken = yield* SingleInstance_.acquire(yield* Broker, {
          service: instance.service,
          instanceId: instance.instanceId,
          whenTaken: single.whenTaken ?? "fail",
          lease: Duration.fromInputUnsafe(single.lease ?? "1 second")
        }, leadership)
        if (Option.isSome(taken)) {
          return yield* new InstanceTaken({ service: instance.service, instanceId: instance.instanceId, holder: taken.value })
        }
      }
      const entrypoints = (options.entrypoints ?? []).map((e) => e.layer(instance))
      const sealedKey = yield* sealedKeyOf(contract.name, contract.group.requests)
      const discovery = options.discovery === false ? [] : [Discovery.layer({
        service: instance.service,
        instanceId: instance.instanceId,
        contract: contract as unknown as ServiceContract<string, Rpc.Any>,
        entrypoints: (options.entrypoints ?? []).map((e) => e.name),
        publishes: options.publishes,
        sealedKey: sealedKey?.publicKey
      })]
      return Layer.mergeAll(rpcLayer(contract, options, instance, sealedKey), ...entrypoints, ...discovery).pipe(
        Layer.provide(Layer.succeed(CurrentLeadership)(leadership))
      )
    })),
    contract as unknown as ServiceContract<string, Rpc.Any>
  ) as Layer.Layer<
    never,
    EX | BrokerError | EntrypointError<Entrypoints[number]> | ([Single] extends [undefined] ? never : InstanceTaken),
    Requirements<Rpcs, Handlers, RX> | EntrypointServices<Entrypoints[number]>
  >

/**
 * The contract a Layer made by `make` serves (`None` for any other value, including a service Layer
 * transformed by `Layer.provide` and the like). `mesh run` uses it to find the services a module
 * exports.
 *
 * @since 0.1.0
 */
export const contractOf = (u: unknown): Option.Option<ServiceContract<string, Rpc.Any>> =>
  Layer.isLayer(u) && markKey in u ? Option.some((u as unknown as Marked)[markKey]) : Option.none()

/**
 * Whether a value is a Layer made by `make`.
 *
 * @since 0.1.0
 */
export const isService = (u: unknown): u is Layer.Layer<never, unknown, unknown> => Option.isSome(contractOf(u))

// ---- internal ----

/**
 * Handlers that do not match their contract (say, an error it does not declare) are inferred as the
 * contract's own handler type, which requires `any`: the Layer would then carry `any` into every file
 * that provides it, far from the mistake. The handler's own error is the one to read.
 */
type NotAny<T> = 0 extends 1 & T ? never : T

const markKey = "~effect-mesh/Service/contract"

interface Marked {
  readonly [markKey]: ServiceContract<string, Rpc.Any>
}

const mark = <A, E, R>(layer: Layer.Layer<A, E, R>, contract: ServiceContract<string, Rpc.Any>): Layer.Layer<A, E, R> =>
  Object.defineProperty(layer, markKey, { value: contract, enumerable: false })

const rpcLayer = <Rpcs extends Rpc.Any, Handlers, EX, RX>(
  contract: ServiceContract<string, Rpcs>,
  options: Options<Handlers, EX, RX>,
  instance: Instance,
  sealedKey: Sealed.ServiceKey | undefined
) =>
  Layer.effectDiscard(Effect.gen(function*() {
    const build = options.handlers
    const handlers: Record<string, RawHandler> = Effect.isEffect(build)
      ? yield* (build as unknown as Effect.Effect<Record<string, RawHandler>, EX, RX>)
      : build as unknown as Record<string, RawHandler>
    const wrapped: Record<string, RawHandler> = {}
    for (const tag in handlers) {
      wrapped[tag] = wrapHandler(contract.name, tag, handlers[tag], options)
    }
    const context = yield* contract.group.toHandlers(wrapped as unknown as RpcGroup.HandlersFrom<Rpcs>)
    // unary rpcs without middleware run on the instance's own runner
    const unary = yield* unaryRunner(contract, handlers, options)
    const server = yield* BrokerRpcServer.make({
      service: contract.name,
      group: contract.group as unknown as RpcGroup.RpcGroup<Rpc.Any>,
      concurrency: options.concurrency ?? 64,
      drainTimeout: options.drainTimeout ?? BrokerRpcServer.defaultDrainTimeout,
      instanceId: instance.instanceId,
      queueType: yield* QueueTypes.resolve(options.queueType, QueueTypes.defaults.requests),
      deliveryLimit: options.deliveryLimit,
      maxMessageSize: yield* MessageSize.resolve(options.maxMessageSize),
      sealedKey,
      unary
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

/**
 * The key a service with sealed rpcs opens their requests with: `Sealed.CurrentServiceKey` where the
 * Layer is built (`Sealed.layer`), else `MESH_SEALED_PRIVATE_KEY` from config (so `mesh run` needs no
 * wiring). A contract with sealed rpcs and no key, or a key that is not one, is a mistake of
 * deployment: the service does not start, and says which (never the key).
 */
const sealedKeyOf = (service: string, requests: ReadonlyMap<string, Rpc.Any>): Effect.Effect<Sealed.ServiceKey | undefined> =>
  Effect.withFiber((fiber) => {
    const given = fiber.getRef(Sealed.CurrentServiceKey)
    const sealed = Array.from(requests.values()).filter(Sealed.isSealed).map((rpc) => rpc._tag)
    if (given !== undefined || sealed.length === 0) return Effect.succeed(given)
    const missing = `${service} has sealed methods (${sealed.join(", ")}) but no key: set ${Sealed.configKeys.privateKey} ` +
      `or provide Sealed.layer(privateKey) where the service is built`
    return Effect.gen(function*() {
      const key = yield* Config.option(Config.Redacted(Sealed.configKeys.privateKey)).pipe(
        Effect.mapError((error) => `${Sealed.configKeys.privateKey}: ${error.message}`)
      )
      if (Option.isNone(key)) return yield* Effect.fail(missing)
      return yield* Effect.mapError(Sealed.makeServiceKey(key.value), (error) => `${service}: ${error.message}`)
    }).pipe(Effect.mapError((message) => new globalThis.Error(message)), Effect.orDie)
  })

/**
 * The instance's unary rpcs without middleware, run without RpcServer: each request in a fiber of its
 * own with the instance's services, a scope of its own, the caller's `CallContext` and a server span
 * (as RpcServer runs them). BrokerRpcServer hands it the requests it admits.
 */
const unaryRunner = <Rpcs extends Rpc.Any, Handlers, EX, RX>(
  contract: ServiceContract<string, Rpcs>,
  handlers: Record<string, RawHandler>,
  options: Options<Handlers, EX, RX>
) =>
  Effect.gen(function*() {
    const base = yield* Effect.context<never>()
    const service = contract.name
    const exposeStackTraces = options.exposeStackTraces === true
    const authorize = options.authorize
    const rpcs = new Map<string, Rpc.Any>()
    const spanOf = new Map<string, { readonly name: string; readonly attributes: Record<string, unknown> }>()
    for (const [tag, rpc] of contract.group.requests) {
      const props = rpc as unknown as Rpc.AnyWithProps
      if (props.middlewares.size > 0 || RpcSchema.isStreamSchema(props.successSchema)) continue
      rpcs.set(tag, rpc)
      spanOf.set(tag, { name: `${service}.${tag}`, attributes: { "rpc.system.name": "effect_rpc", "rpc.method": tag } })
    }
    const lane = Runner.lane(base)
    let nextRequest = 0
    const handle = (request: BrokerRpcServer.UnaryRequest): Effect.Effect<unknown, unknown> => {
      const tag = request.rpc._tag
      const handler = handlers[tag]
      const id = nextRequest++
      const run = Effect.suspend(() => {
        const made = handler(request.payload, new DirectOptions(id, request))
        if (!RpcModule.isWrapper(made)) return made as Effect.Effect<unknown, unknown>
        const inner = made.value as Effect.Effect<unknown, unknown>
        return made.uninterruptible ? Effect.uninterruptible(inner) : inner
      })
      const allowed = authorize === undefined
        ? run
        : Effect.andThen(authorized(authorize, { service, method: tag, payload: request.payload, context: request.context }), run)
      return withStack(service, tag, exposeStackTraces)(allowed)
    }
    // each request on the instance runner: its scope, `CallContext` and server span (internal/runner.ts)
    const start = (
      request: BrokerRpcServer.UnaryRequest,
      onExit?: (exit: Exit.Exit<unknown, unknown>) => Effect.Effect<void>
    ): Fiber.Fiber<unknown, unknown> => {
      const named = spanOf.get(request.rpc._tag)
      return lane.start({
        service,
        name: named?.name ?? `${service}.${request.rpc._tag}`,
        context: request.context,
        span: { kind: "server", parent: request.span, attributes: named?.attributes }
      }, handle(request), onExit)
    }
    return { service, rpcs, start } satisfies BrokerRpcServer.UnaryRunner
  })

/** what a handler gets besides its payload, as RpcServer gives it; made when a handler reads it */
class DirectOptions {
  readonly requestId: RequestId
  readonly rpc: Rpc.Any
  private readonly request: BrokerRpcServer.UnaryRequest
  private made: { client?: RpcModule.ServerClient; headers?: Headers.Headers } = {}
  constructor(id: number, request: BrokerRpcServer.UnaryRequest) {
    this.requestId = RequestId(id)
    this.rpc = request.rpc
    this.request = request
  }
  get client(): RpcModule.ServerClient {
    return this.made.client ??= new RpcModule.ServerClient(Number(this.requestId))
  }
  get headers(): Headers.Headers {
    return this.made.headers ??= Headers.fromRecordUnsafe(this.request.headers())
  }
}

type HandlerResult = Effect.Effect<unknown, unknown, unknown> | Stream.Stream<unknown, unknown, unknown>
type RawHandler = (payload: unknown, options: Parameters<Rpc.ToHandlerFn<Rpc.Any>>[1]) => RpcModule.WrapperOr<HandlerResult>


/**
 * A handler as effect/rpc's RpcServer runs it (streams, rpcs with middleware): with the caller's
 * `CallContext` and the run's log annotations, as the instance runner gives its own runs, and behind
 * the service's authorization policy
 */
const wrapHandler = (
  service: string,
  method: string,
  handler: RawHandler,
  options: Pick<Options<unknown, unknown, unknown>, "exposeStackTraces" | "authorize">
): RawHandler =>
(payload, handlerOptions) => {
  const context = Identity.verify(CallContext.fromHeaders(handlerOptions.headers), handlerOptions.headers[Identity.header])
  const run = { service, name: `${service}.${method}`, context }
  const policy = options.authorize
  const allowed = policy === undefined ? undefined : authorized(policy, { service, method, payload, context })
  return RpcModule.wrapMap(handler(payload, handlerOptions), (result): HandlerResult => {
    if (Stream.isStream(result)) {
      const stream = Stream.provideService(result, CallContext.CallContext, context)
      return Stream.unwrap(Effect.map(
        allowed === undefined ? Runner.annotations(run) : Effect.andThen(allowed, Runner.annotations(run)),
        (annotations) => Stream.provideService(stream, References.CurrentLogAnnotations, annotations)
      ))
    }
    const effect = Effect.provideService(result, CallContext.CallContext, context)
    // the caller's deadline is enforced by the protocol (BrokerRpcServer), for every call at once
    return withStack(service, method, options.exposeStackTraces === true)(
      Runner.annotated(run, allowed === undefined ? effect : Effect.andThen(allowed, effect))
    )
  })
}

/**
 * Asks a service's authorization policy about a call: on `false`, the caller's `Forbidden`, as a defect
 * (as every mesh error travels: `ServiceError` reads it back). For entrypoints that serve calls on a
 * wire of their own (`Nameko.serve`), with their instance's `authorize`.
 *
 * @since 0.1.0
 */
export const authorized = (policy: (call: Call) => Effect.Effect<boolean>, call: Call): Effect.Effect<void> =>
  Effect.flatMap(policy(call), (allowed) =>
    allowed ? Effect.void : Effect.die(wire.serviceErrorDefect(
      new Forbidden({
        service: call.service,
        method: call.method,
        ...(call.context.verifiedUserId === undefined ? {} : { caller: call.context.verifiedUserId })
      })
    )))

/** with `exposeStackTraces`, a defect reaches the caller as a RemoteDefect with its stack */
const withStack = (service: string, method: string, exposeStackTraces: boolean) =>
<A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  exposeStackTraces
    ? Effect.catchDefect(effect, (defect) =>
      Effect.die(wire.serviceErrorDefect(
        new RemoteDefect({
          service,
          method,
          message: defect instanceof Error ? defect.message : String(defect),
          ...(defect instanceof Error && defect.stack !== undefined ? { stack: defect.stack } : {})
        })
      )))
    : effect
