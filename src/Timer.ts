/**
 * Timers: an effect a service runs on a `Schedule` (spaced, fixed, cron, or any other), declared as
 * one of its entrypoints, per instance (Nameko's `@timer`) or once per cluster.
 *
 * ```ts
 * export const ReportsLive = Service.make(Reports, {
 *   handlers,
 *   entrypoints: [
 *     Timer.make("sweep", Schedule.spaced("10 seconds"), sweepExpired),
 *     Timer.make("nightly", Schedule.cron("0 3 * * *"), buildReport, { mode: "singleton", eager: true })
 *   ]
 * })
 * ```
 *
 * How it runs:
 * - **No overlap.** Runs of a timer never overlap: the next run is planned only when the current one
 *   has ended.
 * - **Catch-up policy: missed ticks are skipped, never queued.** The schedule is stepped when a run
 *   ends, with that time as "now", so a run that overruns never makes the timer fire several times
 *   in a row to catch up. `spaced(d)` waits `d` after the end of each run; `cron(...)` waits for its
 *   next point after the end of the run; `fixed(d)` keeps its grid and, as `Schedule.fixed` does, when
 *   a run overran it fires once right away and then goes back to the grid.
 * - **Eager.** With `eager: true`, the timer runs once as soon as it starts, then follows the
 *   schedule; otherwise the first run waits for the schedule's first delay.
 * - **Failures.** A run that fails (or dies) is logged and the timer goes on. With a `backoff`
 *   schedule, the next run after a failure waits the backoff's delay instead of the timer's own; each
 *   further failure steps the backoff, a success resets it and the timer's own schedule resumes (as
 *   it also does once the backoff has ended, until the next success).
 * - **A schedule that ends** (`Schedule.recurs(3)`) ends the timer; one that fails (a cron expression
 *   that does not parse) stops it with an error log.
 * - **Stop.** When the service's scope closes, the timer stops: an in-flight run is **interrupted**
 *   (its finalizers run). Wrap the effect in `Effect.uninterruptible` for runs that must complete.
 * - **Context.** Every run is a root span (`<service>.timer:<name>`) with a fresh `CallContext`:
 *   a new correlation id and the call-id stack `[<service>.timer:<name>.<id>]`, so the calls it makes
 *   are traced like any other call. The effect may use a `Scope`: each run gets its own.
 *
 * Modes:
 * - `instance` (the default): every running instance of the service fires.
 * - `singleton`: exactly one instance in the cluster fires. Instances compete for a lease held on the
 *   broker (a single-active-consumer queue named after the service and the timer): the broker gives
 *   it to one; when that instance stops, the next takes over at once, and when it dies, within
 *   `lease` (default 1 second) of the broker noticing. An instance that loses its connection but
 *   lives on stops firing before another may start, so runs never overlap across instances. The
 *   instance that takes the lease starts the schedule afresh (`eager` fires at once there). While
 *   the broker is unreachable, no instance fires: safety first.
 *
 * @since 0.1.0
 */
import { Cause, Clock, Duration, Effect, Exit, Layer, Pull, Schedule } from "effect"
import type { Scope } from "effect"
import { Broker } from "./Broker.ts"
import * as Lease from "./internal/lease.ts"
import * as Metrics from "./internal/metrics.ts"
import * as Runner from "./internal/runner.ts"
import * as Topology from "./internal/topology.ts"
import * as Service from "./Service.ts"

/**
 * Where a timer fires: on every instance, or on one instance in the cluster.
 *
 * @since 0.1.0
 */
export type Mode = "instance" | "singleton"

/**
 * Options of a timer. `B` is the backoff schedule, which gets each failure's `Cause`.
 *
 * @since 0.1.0
 */
export interface Options<M extends Mode = Mode, B = never> {
  /** `instance` (default): every instance fires; `singleton`: one instance in the cluster fires */
  readonly mode?: M | undefined
  /** run once when the timer starts (in singleton mode: when this instance takes the lease) */
  readonly eager?: boolean | undefined
  /** after a failed run, wait this schedule's delays (it gets the failure) until a run succeeds */
  readonly backoff?: B | undefined
  /** singleton mode: the bound on failover and on how long a cut-off holder may still fire (default 1 second) */
  readonly lease?: Duration.Input | undefined
}

/**
 * What a timer's entrypoint requires: what its effect (but a `Scope`, given per run) and schedules
 * require, and in singleton mode the broker.
 *
 * @since 0.1.0
 */
export type Requirements<M extends Mode, Eff, S, B> =
  | Exclude<Effect.Services<Eff>, Scope.Scope>
  | Schedule.Env<S>
  | Schedule.Env<B>
  | (M extends "singleton" ? Broker : never)

/**
 * The default lease of a singleton timer.
 *
 * @since 0.1.0
 */
export const defaultLease: Duration.Duration = Duration.seconds(1)

/**
 * Declares a timer: `effect` runs on `schedule`, in every instance or (`mode: "singleton"`) in one.
 *
 * @since 0.1.0
 */
export const make = <
  Eff extends Effect.Effect<unknown, unknown, unknown>,
  S extends Schedule.Schedule<unknown, unknown, unknown, unknown>,
  const M extends Mode = "instance",
  B extends Schedule.Schedule<unknown, Cause.Cause<Effect.Error<Eff>>, unknown, unknown> = never
>(
  name: string,
  schedule: S,
  effect: Eff,
  options?: Options<M, B>
): Service.Entrypoint<never, Requirements<M, Eff, S, B>> =>
  Service.entrypoint(`timer:${name}`, (instance) =>
    Layer.effectDiscard(Effect.gen(function*() {
      const loop = timerLoop(
        instance,
        name,
        schedule,
        effect,
        options?.eager === true,
        options?.backoff as Schedule.Schedule<unknown, Cause.Cause<unknown>, unknown, unknown> | undefined
      ).pipe(Effect.annotateLogs({ service: instance.service, timer: name, instance: instance.instanceId }))
      if (options?.mode !== "singleton") return yield* Effect.forkScoped(loop)
      const broker = yield* Broker
      yield* Lease.run(broker, {
        queue: Topology.leaseQueue(instance.service, "timer", name),
        lease: Duration.fromInputUnsafe(options.lease ?? defaultLease),
        instanceId: instance.instanceId
      }, loop).pipe(Effect.forkScoped)
    })) as unknown as Layer.Layer<never, never, Requirements<M, Eff, S, B>>)

// ---- internal ----

type Step<In, E, R> = (now: number, input: In) => Pull.Pull<[unknown, Duration.Duration], E, unknown, R>

/** the delay of a schedule's next step, or undefined when the schedule is done */
const nextDelay = <E, R>(pull: Pull.Pull<[unknown, Duration.Duration], E, unknown, R>) =>
  Pull.catchDone(Effect.map(pull, ([, delay]): Duration.Duration | undefined => delay), () => Effect.undefined)

const timerLoop = <A, E, R, ES, RS, EB, RB>(
  instance: Service.Instance,
  name: string,
  schedule: Schedule.Schedule<unknown, unknown, ES, RS>,
  effect: Effect.Effect<A, E, R>,
  eager: boolean,
  backoff: Schedule.Schedule<unknown, Cause.Cause<E>, EB, RB> | undefined
): Effect.Effect<void, never, Exclude<R, Scope.Scope> | RS | RB> => {
  const metrics = Metrics.loopRuns(instance.service, `${instance.service}.timer:${name}`)
  const runOnce = Effect.suspend(() => Runner.run(Runner.root(instance, "timer", name, { span: true, metrics }), effect)).pipe(
    Effect.tap((exit) =>
      Exit.isFailure(exit) && !Cause.hasInterruptsOnly(exit.cause)
        ? Effect.logWarning("the timer's run failed; the timer goes on", exit.cause)
        : Effect.void
    )
  )

  return Effect.gen(function*() {
    const next: Step<unknown, ES, RS> = yield* Schedule.toStep(schedule)
    let backoffStep: Step<Cause.Cause<E>, EB, RB> | "ended" | undefined
    let last: Exit.Exit<A, E> | undefined = eager ? yield* runOnce : undefined
    while (true) {
      const now = yield* Clock.currentTimeMillis
      let delay: Duration.Duration | undefined
      if (backoff !== undefined && last !== undefined && Exit.isFailure(last) && backoffStep !== "ended") {
        if (backoffStep === undefined) backoffStep = yield* Schedule.toStep(backoff)
        delay = yield* nextDelay(backoffStep(now, last.cause))
        if (delay === undefined) backoffStep = "ended"
      }
      if (delay === undefined) delay = yield* nextDelay(next(now, undefined))
      if (delay === undefined) return yield* Effect.logInfo("the timer's schedule ended: the timer stops")
      yield* Effect.sleep(delay)
      last = yield* runOnce
      if (Exit.isSuccess(last)) backoffStep = undefined
    }
  }).pipe(
    Effect.catch((error) => Effect.logError("the timer's schedule failed: the timer stops", error))
  )
}
