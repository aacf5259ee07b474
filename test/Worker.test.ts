/**
 * Workers under the TestClock: restarts on a schedule after failures and ends, giving up when the
 * schedule ends, starting the schedule over after a healthy run, stopping with the scope.
 */
import { assert, describe, it } from "@effect/vitest"
import { Clock, Effect, Exit, Layer, Metric, Schedule, Scope } from "effect"
import { TestClock } from "effect/testing"
import { CallContext, Service, Worker } from "effect-mesh"
import { captureLogs } from "./fixtures/logs.ts"

const instance: Service.Instance = { service: "indexer", instanceId: "instance-1" }

const start = (entrypoint: Service.Entrypoint<never, never>) =>
  Effect.gen(function*() {
    const scope = yield* Scope.fork(yield* Scope.Scope)
    yield* Layer.buildWithScope(entrypoint.layer(instance), scope)
    return scope
  })

describe("Worker", () => {
  it.effect("a worker that fails three times is restarted three times and then runs", () => {
    const logs = captureLogs()
    return Effect.gen(function*() {
      const starts: Array<number> = []
      let running = false
      const worker = Effect.gen(function*() {
        starts.push(yield* Clock.currentTimeMillis)
        if (starts.length <= 3) return yield* Effect.fail(`attempt ${starts.length} failed`)
        running = true
        return yield* Effect.never
      })
      yield* start(Worker.make("tail", worker, { restart: Schedule.spaced("1 second") }))
      yield* TestClock.adjust("1 minute")
      assert.deepStrictEqual(starts, [0, 1000, 2000, 3000])
      assert.isTrue(running)
      assert.strictEqual(logs.lines.filter((l) => l.message === "the worker failed").length, 3)
      assert.deepStrictEqual(
        logs.lines.filter((l) => l.message.startsWith("restarting")).map((l) => l.message),
        ["restarting the worker (restart 1)", "restarting the worker (restart 2)", "restarting the worker (restart 3)"]
      )
      // counted: mesh.worker.restarts, and each life by outcome in mesh.run.duration
      const snapshots = yield* Metric.snapshot
      const series = (id: string, outcome?: string) =>
        snapshots.find((m) =>
          m.id === id && m.attributes?.["mesh.run"] === "indexer.worker:tail" &&
          (outcome === undefined || m.attributes?.["outcome"] === outcome)
        )
      const restarts = series("mesh.worker.restarts")
      assert.strictEqual(restarts?.type === "Counter" ? Number(restarts.state.count) : -1, 3)
      const failed = series("mesh.run.duration", "error")
      assert.strictEqual(failed?.type === "Histogram" ? failed.state.count : -1, 3)
    }).pipe(Effect.provide(logs.layer), Effect.provideService(Metric.MetricRegistry, new Map()))
  })

  it.effect("a worker that ends is started again; defects too", () =>
    Effect.gen(function*() {
      let runs = 0
      const worker = Effect.suspend(() => {
        runs++
        return runs % 2 === 0 ? Effect.die(new Error("boom")) : Effect.void
      })
      yield* start(Worker.make("pulse", worker, { restart: Schedule.spaced("1 second") }))
      yield* TestClock.adjust("4500 millis")
      assert.strictEqual(runs, 5)
    }))

  it.effect("the default restart backs off exponentially", () =>
    Effect.gen(function*() {
      const starts: Array<number> = []
      const worker = Effect.flatMap(Clock.currentTimeMillis, (now) => {
        starts.push(now)
        return Effect.fail("nope")
      })
      yield* start(Worker.make("flaky", worker))
      yield* TestClock.adjust("2 seconds")
      assert.deepStrictEqual(starts, [0, 100, 300, 700, 1500])
    }))

  it.effect("when the restart schedule ends, the worker stays stopped", () =>
    Effect.gen(function*() {
      let runs = 0
      const worker = Effect.suspend(() => {
        runs++
        return Effect.fail("nope")
      })
      yield* start(Worker.make("limited", worker, { restart: Schedule.spaced("1 second").pipe(Schedule.upTo({ times: 2 })) }))
      yield* TestClock.adjust("1 minute")
      assert.strictEqual(runs, 3)
    }))

  it.effect("the restart schedule gets the run's Exit", () =>
    Effect.gen(function*() {
      let runs = 0
      const worker = Effect.suspend(() => {
        runs++
        return runs < 3 ? Effect.fail("transient") : Effect.fail("fatal")
      })
      // restart only after transient failures
      const restart = Schedule.spaced("1 second").pipe(
        Schedule.setInputType<Exit.Exit<never, string>>(),
        Schedule.while(({ input }) => !(Exit.isFailure(input) && Exit.hasFails(input) && input.cause.reasons.some((r) => r._tag === "Fail" && r.error === "fatal")))
      )
      yield* start(Worker.make("picky", worker, { restart }))
      yield* TestClock.adjust("1 minute")
      assert.strictEqual(runs, 3)
    }))

  it.effect("a run that lasted resetAfter or more starts the restart schedule over", () =>
    Effect.gen(function*() {
      const starts: Array<number> = []
      const worker = Effect.gen(function*() {
        starts.push(yield* Clock.currentTimeMillis)
        // the third run is healthy for a while before it fails
        if (starts.length === 3) yield* Effect.sleep("10 seconds")
        return yield* Effect.fail("nope")
      })
      yield* start(Worker.make("reset", worker, { restart: Schedule.exponential("1 second"), resetAfter: "5 seconds" }))
      yield* TestClock.adjust("30 seconds")
      // 0, +1 s, +2 s, (10 s run) then the schedule starts over: +1 s, +2 s, +4 s, ...
      assert.deepStrictEqual(starts.slice(0, 6), [0, 1000, 3000, 14_000, 16_000, 20_000])
    }))

  it.effect("closing the scope interrupts the worker, and it is not restarted", () =>
    Effect.gen(function*() {
      let runs = 0
      let interrupted = 0
      const worker = Effect.suspend(() => {
        runs++
        return Effect.never
      }).pipe(Effect.onInterrupt(() => Effect.sync(() => interrupted++)))
      const scope = yield* start(Worker.make("forever", worker, { restart: Schedule.spaced("1 millis") }))
      yield* TestClock.adjust("1 second")
      yield* Scope.close(scope, Exit.void)
      yield* TestClock.adjust("1 minute")
      assert.strictEqual(runs, 1)
      assert.strictEqual(interrupted, 1)
    }))

  it.effect("each run has a fresh call context with a worker entry on the call-id stack", () =>
    Effect.gen(function*() {
      const seen: Array<CallContext.CallContext> = []
      const worker = Effect.flatMap(CallContext.CallContext, (c) => Effect.sync(() => void seen.push(c)))
      yield* start(Worker.make("ctx", worker, { restart: Schedule.spaced("1 second") }))
      yield* TestClock.adjust("1 second")
      assert.strictEqual(seen.length, 2)
      assert.notStrictEqual(seen[0].correlationId, seen[1].correlationId)
      assert.match(seen[0].callIdStack[0], /^indexer\.worker:ctx\./)
    }))
})
