/**
 * The instance runner: how every run of a service instance goes, whatever started it (a request or
 * command the instance answers, an event it handles, a timer's tick, a worker's life). It plays the
 * part of Nameko's ServiceContainer and its worker threads. A run gets:
 * - its own scope, closed when it ends;
 * - the `CallContext` it runs in (its caller's one hop further, or a fresh root);
 * - its span when it has one: a child of its caller's, or a root;
 * - the run's exit handed to `onExit` (its answer, ack or dead letter) before its fiber ends.
 *
 * Runs that arrive (requests, events) start in fibers of their own on a `Lane`, one per entrypoint.
 * The lane counts them, and drains them when the entrypoint stops: it waits for its runs up to a
 * deadline and interrupts those left (each one's `onExit` then puts its message back). How many run at
 * once is the consumer's prefetch: the broker holds the rest. Runs that a loop makes (a timer's tick,
 * a worker's life) go in the loop's own fiber (`run`), so that stopping the loop stops them.
 *
 * effect/rpc's RpcServer runs what it serves itself (streams, untyped calls, rpcs with middleware):
 * there the handler gets the same `CallContext` (see `Service`), and RpcServer makes the span.
 *
 * @internal
 */
import { Context, Deferred, Effect, Exit, Option, References, Scope, Tracer } from "effect"
import { Fiber } from "effect"
import type { Duration } from "effect"
import * as CallContext from "../CallContext.ts"
import type * as Metrics from "./metrics.ts"
import * as Spans from "./spans.ts"

/** what a run is: its name (the span's, `<service>.<method>` or `<service>.<kind>:<name>`), context, span */
export interface Run {
  /** the service whose instance runs it */
  readonly service: string
  readonly name: string
  readonly context: CallContext.CallContext
  readonly span: Spans.SpanOptions | undefined
  /**
   * the span ends after `onExit` (an event's ack, retry or dead letter: its span events), rather than
   * with the handler, before its answer is sent (a request's, as `withSpan` would)
   */
  readonly settledInSpan?: boolean | undefined
  /** what it reports as it begins and ends (internal/metrics.ts) */
  readonly metrics?: Metrics.RunMetrics | undefined
}

/** the runs of one entrypoint, each in a fiber of its own */
export interface Lane {
  /** starts a run at once; `onExit` runs in its fiber, after its span ended */
  readonly start: <A, E>(
    run: Run,
    effect: Effect.Effect<A, E, Scope.Scope | CallContext.CallContext>,
    onExit?: (exit: Exit.Exit<A, E>) => Effect.Effect<void>
  ) => Fiber.Fiber<A, E>
  /** runs in progress */
  readonly size: () => number
  /** waits for the runs in progress up to `timeout`, then interrupts those left; how many that was */
  readonly drain: (timeout: Duration.Input) => Effect.Effect<number>
}

/** a lane whose runs get `services` (the entrypoint's), read once for their spans */
export const lane = (services: Context.Context<never>): Lane => {
  const spans = Spans.make(services)
  const baseAnnotations = Context.get(services, References.CurrentLogAnnotations)
  const running = new Set<Fiber.Fiber<unknown, unknown>>()
  let idle: Deferred.Deferred<void> | undefined

  const ended = (
    fiber: Fiber.Fiber<unknown, unknown>,
    scope: Scope.Closeable,
    run: Run,
    startedAt: number,
    exit: Exit.Exit<unknown, unknown>
  ) => {
    running.delete(fiber)
    run.metrics?.end(exit, (performance.now() - startedAt) / 1000, services)
    const close = Scope.closeUnsafe(scope, exit)
    if (close !== undefined) Effect.runForkWith(services)(Effect.uninterruptible(close))
    if (idle !== undefined && running.size === 0) Deferred.doneUnsafe(idle, Exit.void)
  }

  const start = <A, E>(
    run: Run,
    effect: Effect.Effect<A, E, Scope.Scope | CallContext.CallContext>,
    onExit?: (exit: Exit.Exit<A, E>) => Effect.Effect<void>
  ): Fiber.Fiber<A, E> => {
    const scope = Scope.makeUnsafe()
    const startedAt = run.metrics === undefined ? 0 : performance.now()
    run.metrics?.begin(services)
    // the run's services go in its fiber's context as it starts: no effect per service
    // (`CallContext` is a reference: Context's types do not count it as a service)
    const context = Context.add(
      Context.add(services, CallContext.CallContext, run.context),
      Scope.Scope,
      scope
    ) as Context.Context<Scope.Scope | CallContext.CallContext>
    const span = run.span === undefined ? undefined : spans.start(run.name, run.span)
    // every log line of the run says whose run it is, and of which call and trace
    const logged = Context.add(context, References.CurrentLogAnnotations, annotationsOf(baseAnnotations, run, span))
    const body = span === undefined
      ? run.span === undefined
        ? withOnExit(effect, onExit)
        // tracing is off: withSpan makes what it makes then
        : withOnExit(Effect.withSpan(effect, run.name, Spans.withSpanOptions(run.span)), onExit)
      // the span ends with the run, before its answer is sent (as withSpan's would)
      : Effect.onExit(effect, (exit) => {
        if (onExit === undefined || run.settledInSpan !== true) {
          spans.end(span, exit)
          return onExit === undefined ? Effect.void : onExit(exit)
        }
        return Effect.ensuring(onExit(exit), Effect.sync(() => spans.end(span, exit)))
      })
    const fiber = Effect.runForkWith(span === undefined ? logged : spans.provide(logged, span))(body)
    running.add(fiber)
    fiber.addObserver((exit) => ended(fiber, scope, run, startedAt, exit))
    return fiber
  }

  const drain = (timeout: Duration.Input): Effect.Effect<number> =>
    Effect.suspend(() => {
      if (running.size === 0) return Effect.succeed(0)
      const done = idle ??= Deferred.makeUnsafe<void>()
      return Effect.flatMap(Effect.timeoutOption(Deferred.await(done), timeout), () => {
        const left = Array.from(running)
        return Effect.as(Fiber.interruptAll(left), left.length)
      })
    })

  return { start, size: () => running.size, drain }
}

/**
 * A run in the current fiber (a timer's tick, a worker's life): its exit as a value, so that a
 * failed run never fails the loop that makes it. Its logs carry its correlation id.
 */
export const run = <A, E, R>(
  run: Run,
  effect: Effect.Effect<A, E, R>
): Effect.Effect<Exit.Exit<A, E>, never, Exclude<R, Scope.Scope>> =>
  Effect.suspend(() => {
    const scoped = Effect.provideService(Effect.scoped(effect), CallContext.CallContext, run.context)
    const logged = annotated(run, scoped)
    const traced = run.span === undefined ? logged : Effect.withSpan(logged, run.name, Spans.withSpanOptions(run.span))
    const metrics = run.metrics
    if (metrics === undefined) return Effect.exit(traced)
    return Effect.withFiber((fiber) => {
      const startedAt = performance.now()
      metrics.begin(fiber.context)
      return Effect.map(Effect.exit(traced), (exit) => {
        metrics.end(exit, (performance.now() - startedAt) / 1000, fiber.context)
        return exit
      })
    })
  })

/**
 * The log annotations of a run: whose run it is, and of which call and trace (the current span's), on
 * top of the current ones. For the runs that effect/rpc's RpcServer makes (streams, rpcs with
 * middleware), and for `run`'s.
 */
export const annotations = (run: Pick<Run, "service" | "name" | "context">): Effect.Effect<Record<string, unknown>> =>
  Effect.withFiber((fiber) => {
    const span = Option.getOrUndefined(Option.filter(Context.getOption(fiber.context, Tracer.ParentSpan), isSpan))
    return Effect.succeed(annotationsOf(fiber.getRef(References.CurrentLogAnnotations), run, span))
  })

/** `effect` with the log annotations of a run (`annotations`) */
export const annotated = <A, E, R>(
  run: Pick<Run, "service" | "name" | "context">,
  effect: Effect.Effect<A, E, R>
): Effect.Effect<A, E, R> =>
  Effect.flatMap(annotations(run), (annotations) => Effect.provideService(effect, References.CurrentLogAnnotations, annotations))

/** a run no caller started: a fresh `CallContext` rooted at `<service>.<kind>:<name>`, a root span */
export const root = (
  instance: { readonly service: string; readonly instanceId: string },
  kind: "timer" | "worker",
  name: string,
  options: { readonly span: boolean; readonly metrics?: Metrics.RunMetrics | undefined }
): Run => {
  const entry = `${instance.service}.${kind}:${name}`
  const context = CallContext.root(entry)
  return {
    service: instance.service,
    name: entry,
    context,
    metrics: options.metrics,
    span: options.span
      ? {
        kind: "internal",
        root: true,
        attributes: {
          "mesh.service": instance.service,
          "mesh.instance": instance.instanceId,
          [`mesh.${kind}`]: name,
          "mesh.correlation_id": context.correlationId
        }
      }
      : undefined
  }
}

/** the log annotations of a run, on top of those its instance's services have */
const annotationsOf = (
  base: Readonly<Record<string, unknown>>,
  run: Pick<Run, "service" | "name" | "context">,
  span: Tracer.Span | undefined
): Record<string, unknown> => {
  const stack = run.context.callIdStack
  const own: Record<string, unknown> = {
    service: run.service,
    run: run.name,
    correlationId: run.context.correlationId
  }
  if (stack.length > 0) own["callId"] = stack[stack.length - 1]
  if (span !== undefined) own["traceId"] = span.traceId
  return isEmpty(base) ? own : { ...base, ...own }
}

const isEmpty = (record: Readonly<Record<string, unknown>>): boolean => {
  for (const _ in record) return false
  return true
}

const isSpan = (span: Tracer.AnySpan): span is Tracer.Span => span._tag === "Span"

const withOnExit = <A, E, R>(
  effect: Effect.Effect<A, E, R>,
  onExit: ((exit: Exit.Exit<A, E>) => Effect.Effect<void>) | undefined
): Effect.Effect<A, E, R> => onExit === undefined ? effect : Effect.onExit(effect, onExit)
