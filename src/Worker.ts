/**
 * Workers: a long-running effect a service keeps running (a queue poller, a cache warmer, a socket
 * reader), declared as one of its entrypoints, and started again on a `Schedule` whenever it ends or
 * fails (farine's `execute`).
 *
 * ```ts
 * export const IndexerLive = Service.make(Indexer, {
 *   handlers,
 *   entrypoints: [
 *     Worker.make("tail-changes", tailChanges, { restart: Schedule.exponential("200 millis") }),
 *     Worker.make("leader-duties", leaderDuties, { mode: "singleton" })
 *   ]
 * })
 * ```
 *
 * - Each time the effect ends, by success, failure or defect, it is logged and the `restart`
 *   schedule (which gets the run's `Exit`) says how long to wait before starting it again; when the
 *   schedule ends, the worker stays stopped. The default restarts forever, exponentially from 100 ms
 *   up to 30 seconds between starts. A run that lasted `resetAfter` (default 1 minute) or more starts
 *   the schedule over, so a worker that was healthy for a while restarts quickly again.
 * - When the service's scope closes the running effect is interrupted.
 * - Each run has a fresh `CallContext` (a new correlation id, the call-id stack
 *   `[<service>.worker:<name>.<id>]`), so the calls it makes are traced like any other. The effect may
 *   use a `Scope`: each run gets its own, closed when the run ends.
 * - `mode: "singleton"` runs the worker on exactly one instance in the cluster, with the same lease as
 *   singleton timers (see `Timer`): when that instance stops or dies, another starts it.
 *
 * @since 0.1.0
 */
import { Cause, Clock, Duration, Effect, Exit, Layer, Metric, Pull, Schedule } from "effect"
import type { Scope } from "effect"
import { Broker } from "./Broker.ts"
import * as Lease from "./internal/lease.ts"
import * as Metrics from "./internal/metrics.ts"
import * as Runner from "./internal/runner.ts"
import * as Topology from "./internal/topology.ts"
import * as Service from "./Service.ts"

/**
 * Where a worker runs: on every instance, or on one instance in the cluster.
 *
 * @since 0.1.0
 */
export type Mode = "instance" | "singleton"

/**
 * Options of a worker. `S` is the restart schedule, which gets each run's `Exit`.
 *
 * @since 0.1.0
 */
export interface Options<M extends Mode = Mode, S = never> {
  /** when to start the effect again after it ended; it gets the run's `Exit` (default: `defaultRestart`) */
  readonly restart?: S | undefined
  /** a run that lasted this long starts the restart schedule over (default 1 minute) */
  readonly resetAfter?: Duration.Input | undefined
  /** `instance` (default): one worker per instance; `singleton`: one in the cluster */
  readonly mode?: M | undefined
  /** singleton mode: the bound on failover and on how long a cut-off holder may still run (default 1 second) */
  readonly lease?: Duration.Input | undefined
}

/**
 * What a worker's entrypoint requires: what its effect (but a `Scope`, given per run) and restart
 * schedule require, and in singleton mode the broker.
 *
 * @since 0.1.0
 */
export type Requirements<M extends Mode, Eff, S> =
  | Exclude<Effect.Services<Eff>, Scope.Scope>
  | Schedule.Env<S>
  | (M extends "singleton" ? Broker : never)

/**
 * Restarts forever, exponentially from 100 ms, at most 30 seconds apart.
 *
 * @since 0.1.0
 */
export const defaultRestart: Schedule.Schedule<Duration.Duration> = Schedule.exponential("100 millis").pipe(
  Schedule.modifyDelay(({ duration }) => Effect.succeed(Duration.min(duration, Duration.seconds(30))))
)

/**
 * Declares a worker: `effect` runs for as long as the service does, restarted on `restart`.
 *
 * @since 0.1.0
 */
export const make = <
  Eff extends Effect.Effect<unknown, unknown, unknown>,
  const M extends Mode = "instance",
  S extends Schedule.Schedule<unknown, Exit.Exit<Effect.Success<Eff>, Effect.Error<Eff>>, unknown, unknown> = never
>(
  name: string,
  effect: Eff,
  options?: Options<M, S>
): Service.Entrypoint<never, Requirements<M, Eff, S>> =>
  Service.entrypoint(`worker:${name}`, (instance) =>
    Layer.effectDiscard(Effect.gen(function*() {
      const loop = workerLoop(
        instance,
        name,
        effect,
        (options?.restart ?? defaultRestart) as Schedule.Schedule<unknown, Exit.Exit<unknown, unknown>, unknown, unknown>,
        Duration.fromInputUnsafe(options?.resetAfter ?? "1 minute")
      ).pipe(Effect.annotateLogs({ service: instance.service, worker: name, instance: instance.instanceId }))
      if (options?.mode !== "singleton") return yield* Effect.forkScoped(loop)
      const broker = yield* Broker
      yield* Lease.run(broker, {
        queue: Topology.leaseQueue(instance.service, "worker", name),
        lease: Duration.fromInputUnsafe(options.lease ?? "1 second"),
        instanceId: instance.instanceId
      }, loop).pipe(Effect.forkScoped)
    })) as unknown as Layer.Layer<never, never, Requirements<M, Eff, S>>)

// ---- internal ----

type Step<In, E, R> = (now: number, input: In) => Pull.Pull<[unknown, Duration.Duration], E, unknown, R>

const workerLoop = <A, E, R, ES, RS>(
  instance: Service.Instance,
  name: string,
  effect: Effect.Effect<A, E, R>,
  restart: Schedule.Schedule<unknown, Exit.Exit<A, E>, ES, RS>,
  resetAfter: Duration.Duration
): Effect.Effect<void, never, Exclude<R, Scope.Scope> | RS> => {
  // no span: a worker's run lasts as long as the worker does
  const metrics = Metrics.loopRuns(instance.service, `${instance.service}.worker:${name}`)
  const runOnce = Effect.suspend(() => Runner.run(Runner.root(instance, "worker", name, { span: false, metrics }), effect))
  const restarted = Metrics.workerRestarted(instance.service, `${instance.service}.worker:${name}`)

  return Effect.gen(function*() {
    let step: Step<Exit.Exit<A, E>, ES, RS> = yield* Schedule.toStep(restart)
    let restarts = 0
    while (true) {
      const started = yield* Clock.currentTimeMillis
      const exit = yield* runOnce
      const now = yield* Clock.currentTimeMillis
      if (Exit.isSuccess(exit)) yield* Effect.logInfo("the worker ended")
      else if (!Cause.hasInterruptsOnly(exit.cause)) yield* Effect.logWarning("the worker failed", exit.cause)
      if (now - started >= Duration.toMillis(resetAfter)) step = yield* Schedule.toStep(restart)
      const delay = yield* Pull.catchDone(
        Effect.map(step(now, exit), ([, delay]): Duration.Duration | undefined => delay),
        () => Effect.undefined
      )
      if (delay === undefined) {
        return yield* Effect.logWarning(`the worker's restart schedule ended after ${restarts} restarts: it stays stopped`)
      }
      yield* Effect.sleep(delay)
      restarts++
      yield* Metric.update(restarted, 1)
      yield* Effect.logInfo(`restarting the worker (restart ${restarts})`)
    }
  }).pipe(
    Effect.catch((error) => Effect.logError("the worker's restart schedule failed: it stays stopped", error))
  )
}
