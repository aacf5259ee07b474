/**
 * Timers under the TestClock: schedules, no overlap, eager, the catch-up policy, failures and
 * backoff, clean stop, call context and spans. Instance mode needs no broker; the singleton lease is
 * exercised live over both brokers by `test/fixtures/timerSuite.ts` and across processes by
 * `test/timers.faults.test.ts`.
 */
import { assert, describe, it } from "@effect/vitest"
import { Clock, Context, Effect, Exit, Layer, Option, Queue, Schedule, Schema, Scope, Stream, Tracer } from "effect"
import type { Duration } from "effect"
import { Rpc, RpcGroup } from "effect/rpc"
import { TestClock } from "effect/testing"
import { Broker, CallContext, MemoryBroker, Service, ServiceClient, ServiceContract, Timer } from "effect-mesh"
import { captureLogs } from "./fixtures/logs.ts"
import { recordingTracer } from "./fixtures/tracing.ts"

const instance: Service.Instance = { service: "reports", instanceId: "instance-1" }

/** what a timer's runs did: start and end times, and how many ran at once at most */
const makeProbe = Effect.sync(() => {
  const starts: Array<number> = []
  const ends: Array<number> = []
  const contexts: Array<CallContext.CallContext> = []
  let active = 0
  let maxActive = 0
  let interrupted = 0
  /** a run that records itself and lasts `duration` (per run index) */
  const run = (duration: (index: number) => Duration.Input = () => 0, fail: (index: number) => boolean = () => false) =>
    Effect.gen(function*() {
      const index = starts.length
      starts.push(yield* Clock.currentTimeMillis)
      contexts.push(yield* CallContext.CallContext)
      active++
      maxActive = Math.max(maxActive, active)
      yield* Effect.sleep(duration(index)).pipe(
        Effect.onInterrupt(() => Effect.sync(() => interrupted++)),
        Effect.ensuring(Effect.sync(() => active--))
      )
      ends.push(yield* Clock.currentTimeMillis)
      if (fail(index)) return yield* Effect.fail(`run ${index} failed`)
    })
  return {
    starts,
    ends,
    contexts,
    run,
    maxActive: () => maxActive,
    interrupted: () => interrupted
  }
})

/** starts an entrypoint in a scope of its own, so the test can stop it */
const start = (entrypoint: Service.Entrypoint<never, never>) =>
  Effect.gen(function*() {
    const scope = yield* Scope.fork(yield* Scope.Scope)
    yield* Layer.buildWithScope(entrypoint.layer(instance), scope)
    return scope
  })

describe("Timer", () => {
  it.effect("spaced: the first run waits one interval, then one run per interval", () =>
    Effect.gen(function*() {
      const probe = yield* makeProbe
      yield* start(Timer.make("tick", Schedule.spaced("1 second"), probe.run()))
      yield* TestClock.adjust("999 millis")
      assert.deepStrictEqual(probe.starts, [])
      yield* TestClock.adjust("4001 millis")
      assert.deepStrictEqual(probe.starts, [1000, 2000, 3000, 4000, 5000])
    }))

  it.effect("eager: runs once at start, then follows the schedule", () =>
    Effect.gen(function*() {
      const probe = yield* makeProbe
      yield* start(Timer.make("tick", Schedule.spaced("1 second"), probe.run(), { eager: true }))
      yield* TestClock.adjust("0 millis")
      assert.deepStrictEqual(probe.starts, [0])
      yield* TestClock.adjust("2 seconds")
      assert.deepStrictEqual(probe.starts, [0, 1000, 2000])
    }))

  it.effect("no overlap: a run longer than the interval is never joined by the next one", () =>
    Effect.gen(function*() {
      const probe = yield* makeProbe
      yield* start(Timer.make("slow", Schedule.fixed("1 second"), probe.run(() => "2500 millis")))
      yield* TestClock.adjust("20 seconds")
      assert.strictEqual(probe.maxActive(), 1)
      assert.isAbove(probe.starts.length, 5)
      // each run starts when (or after) the previous one ended
      for (let i = 1; i < probe.starts.length; i++) assert.isAtLeast(probe.starts[i], probe.ends[i - 1])
    }))

  describe("catch-up policy: missed ticks are skipped, the schedule is stepped when a run ends", () => {
    const overrunFirst = (index: number): Duration.Input => index === 0 ? "2500 millis" : 0

    it.effect("spaced: the full interval after the overrun ended", () =>
      Effect.gen(function*() {
        const probe = yield* makeProbe
        yield* start(Timer.make("t", Schedule.spaced("1 second"), probe.run(overrunFirst)))
        yield* TestClock.adjust("6 seconds")
        assert.deepStrictEqual(probe.starts, [1000, 4500, 5500])
      }))

    it.effect("fixed: one run at once after the overrun, then back on the grid (2000 and 3000 are skipped)", () =>
      Effect.gen(function*() {
        const probe = yield* makeProbe
        yield* start(Timer.make("t", Schedule.fixed("1 second"), probe.run(overrunFirst)))
        yield* TestClock.adjust("6 seconds")
        assert.deepStrictEqual(probe.starts, [1000, 3500, 4000, 5000, 6000])
      }))

    it.effect("cron: the next point after the overrun ended (2000 and 3000 are skipped)", () =>
      Effect.gen(function*() {
        const probe = yield* makeProbe
        yield* start(Timer.make("t", Schedule.cron("* * * * * *", "UTC"), probe.run(overrunFirst)))
        yield* TestClock.adjust("6 seconds")
        assert.deepStrictEqual(probe.starts, [1000, 4000, 5000, 6000])
      }))
  })

  it.effect("a failing run is logged and the timer goes on", () => {
    const logs = captureLogs()
    return Effect.gen(function*() {
      const probe = yield* makeProbe
      yield* start(Timer.make("flaky", Schedule.spaced("1 second"), probe.run(undefined, (i) => i < 2)))
      yield* TestClock.adjust("4 seconds")
      assert.deepStrictEqual(probe.starts, [1000, 2000, 3000, 4000])
      const failures = logs.lines.filter((l) => l.message.includes("the timer's run failed"))
      assert.strictEqual(failures.length, 2)
      assert.strictEqual(failures[0].level, "Warn")
    }).pipe(Effect.provide(logs.layer))
  })

  it.effect("a run that dies is logged too, and the timer goes on", () =>
    Effect.gen(function*() {
      let runs = 0
      yield* start(Timer.make("crashy", Schedule.spaced("1 second"), Effect.suspend(() => {
        runs++
        return runs === 1 ? Effect.die(new Error("boom")) : Effect.void
      })))
      yield* TestClock.adjust("3 seconds")
      assert.strictEqual(runs, 3)
    }))

  it.effect("backoff: after a failure the backoff's delays apply until a success resets it", () =>
    Effect.gen(function*() {
      const probe = yield* makeProbe
      const fails = new Set([0, 1, 2, 4])
      yield* start(Timer.make("backoff", Schedule.spaced("10 seconds"), probe.run(undefined, (i) => fails.has(i)), {
        backoff: Schedule.exponential("1 second")
      }))
      yield* TestClock.adjust("40 seconds")
      // fail, +1 s fail, +2 s fail, +4 s ok, +10 s fail, +1 s (backoff restarted) ok, +10 s
      assert.deepStrictEqual(probe.starts, [10_000, 11_000, 13_000, 17_000, 27_000, 28_000, 38_000])
    }))

  it.effect("backoff: once it has ended, the timer's own schedule resumes", () =>
    Effect.gen(function*() {
      const probe = yield* makeProbe
      yield* start(Timer.make("backoff", Schedule.spaced("10 seconds"), probe.run(undefined, () => true), {
        backoff: Schedule.spaced("1 second").pipe(Schedule.upTo({ times: 2 }))
      }))
      yield* TestClock.adjust("33 seconds")
      assert.deepStrictEqual(probe.starts, [10_000, 11_000, 12_000, 22_000, 32_000])
    }))

  it.effect("clean stop: closing the scope interrupts the run in flight, and no run follows", () =>
    Effect.gen(function*() {
      const probe = yield* makeProbe
      const scope = yield* start(Timer.make("long", Schedule.spaced("1 second"), probe.run(() => "5 seconds")))
      yield* TestClock.adjust("2 seconds")
      assert.deepStrictEqual(probe.starts, [1000])
      yield* Scope.close(scope, Exit.void)
      assert.strictEqual(probe.interrupted(), 1)
      yield* TestClock.adjust("1 minute")
      assert.deepStrictEqual(probe.starts, [1000])
      assert.deepStrictEqual(probe.ends, [])
    }))

  it.effect("clean stop between runs: no run follows", () =>
    Effect.gen(function*() {
      const probe = yield* makeProbe
      const scope = yield* start(Timer.make("tick", Schedule.spaced("1 second"), probe.run()))
      yield* TestClock.adjust("2500 millis")
      yield* Scope.close(scope, Exit.void)
      yield* TestClock.adjust("1 minute")
      assert.deepStrictEqual(probe.starts, [1000, 2000])
      assert.strictEqual(probe.interrupted(), 0)
    }))

  it.effect("a schedule that ends ends the timer", () =>
    Effect.gen(function*() {
      const probe = yield* makeProbe
      yield* start(Timer.make("thrice", Schedule.spaced("1 second").pipe(Schedule.upTo({ times: 3 })), probe.run()))
      yield* TestClock.adjust("1 minute")
      assert.deepStrictEqual(probe.starts, [1000, 2000, 3000])
    }))

  it.effect("each run has a fresh correlation id and a timer entry on the call-id stack", () =>
    Effect.gen(function*() {
      const probe = yield* makeProbe
      yield* start(Timer.make("sweep", Schedule.spaced("1 second"), probe.run()))
      yield* TestClock.adjust("2 seconds")
      const [first, second] = probe.contexts
      assert.notStrictEqual(first.correlationId, "")
      assert.notStrictEqual(first.correlationId, second.correlationId)
      assert.strictEqual(first.callIdStack.length, 1)
      assert.match(first.callIdStack[0], /^reports\.timer:sweep\.[0-9a-f-]+$/)
      assert.notStrictEqual(first.callIdStack[0], second.callIdStack[0])
    }))

  it.effect("each run is a root span named after the service and the timer", () => {
    const { spans, tracer } = recordingTracer()
    return Effect.gen(function*() {
      yield* start(Timer.make("sweep", Schedule.spaced("1 second"), Effect.void))
      yield* TestClock.adjust("2 seconds")
      const runs = spans.filter((s) => s.name === "reports.timer:sweep")
      assert.strictEqual(runs.length, 2)
      assert.notStrictEqual(runs[0].traceId, runs[1].traceId)
      assert.isTrue(runs.every((s) => Option.isNone(s.parent)))
      assert.strictEqual(runs[0].attributes.get("mesh.timer"), "sweep")
    }).pipe(Effect.withSpan("test-root"), Effect.provide(Layer.succeed(Tracer.Tracer)(tracer)))
  })
})

// ---- declared in Service.make ----

class Audit extends Context.Service<Audit, { readonly record: (context: CallContext.CallContext) => Effect.Effect<void> }>()(
  "test/Audit"
) {}

const ContextSchema = Schema.Struct({ correlationId: Schema.String, callIdStack: Schema.Array(Schema.String) })

class EchoRpcs extends RpcGroup.make(
  Rpc.make("whoCalls", { success: ContextSchema })
) {}

const Echo = ServiceContract.make("timer-echo", EchoRpcs)

describe("Timer in Service.make", () => {
  it.effect("a timer declared in Service.make runs with the service, and its calls carry the run's context", () =>
    Effect.gen(function*() {
      const seen: Array<{ readonly own: CallContext.CallContext; readonly remote: typeof ContextSchema.Type }> = []
      const EchoLive = Service.make(Echo, {
        handlers: {
          whoCalls: () =>
            Effect.map(CallContext.CallContext, (c) => ({ correlationId: c.correlationId, callIdStack: c.callIdStack }))
        },
        entrypoints: [
          Timer.make(
            "ping",
            Schedule.spaced("1 second"),
            Effect.gen(function*() {
              const echo = yield* ServiceClient.make(Echo)
              const remote = yield* echo.whoCalls()
              const own = yield* CallContext.CallContext
              seen.push({ own, remote })
              yield* (yield* Audit).record(own)
            }).pipe(Effect.orDie)
          )
        ]
      })
      const audited: Array<CallContext.CallContext> = []
      yield* Layer.build(EchoLive.pipe(
        Layer.provideMerge(ServiceClient.layer),
        Layer.provideMerge(Layer.succeed(Audit)({ record: (c) => Effect.sync(() => void audited.push(c)) })),
        Layer.provideMerge(Layer.fresh(MemoryBroker.layer))
      ))
      for (let i = 0; i < 20 && seen.length < 2; i++) yield* TestClock.adjust("1 second")
      assert.isAtLeast(seen.length, 2)
      assert.strictEqual(audited.length, seen.length)
      const { own, remote } = seen[0]
      assert.strictEqual(remote.correlationId, own.correlationId)
      assert.strictEqual(remote.callIdStack.length, 2)
      assert.strictEqual(remote.callIdStack[0], own.callIdStack[0])
      assert.match(remote.callIdStack[1], /^timer-echo\.whoCalls\./)
    }))
})

// ---- the singleton lease when a holder is cut off but lives on ----

/**
 * A broker whose lease consumers can be cut off as a dropped AMQP channel is: the broker requeues what the
 * consumer held (to the next consumer), settling those deliveries does nothing any more, and the
 * consumer comes back on a fresh channel behind the others (as AmqpBroker re-attaches it), its
 * stream never noticing.
 */
const severable = (broker: Broker.Broker["Service"]) =>
  Effect.gen(function*() {
    const attached: Array<Effect.Effect<void>> = []
    const consume = (queue: string, options: Broker.ConsumeOptions) =>
      !queue.startsWith("mesh.lease.") ? broker.consume(queue, options) : Effect.gen(function*() {
        const outer = yield* Scope.Scope
        const mailbox = yield* Queue.unbounded<Broker.Delivery>()
        let generation = 0
        const attach: Effect.Effect<void, Broker.BrokerError> = Effect.gen(function*() {
          const mine = ++generation
          const channel = yield* Scope.fork(outer)
          const inner = yield* broker.consume(queue, options).pipe(Scope.provide(channel))
          const live = <A>(effect: Effect.Effect<A>) => Effect.suspend(() => mine === generation ? effect : Effect.void)
          yield* inner.deliveries.pipe(
            Stream.runForEach((d) =>
              Queue.offer(mailbox, {
                body: d.body,
                exchange: d.exchange,
                routingKey: d.routingKey,
                properties: d.properties,
                redelivered: d.redelivered,
                deliveryCount: d.deliveryCount,
                ack: live(d.ack),
                nack: (requeue: boolean) => live(d.nack(requeue))
              })
            ),
            Effect.forkIn(channel)
          )
          attached.push(Effect.andThen(Scope.close(channel, Exit.void), Effect.orDie(attach)))
        })
        yield* attach
        return { deliveries: Stream.fromQueue(mailbox), cancel: Effect.void } satisfies Broker.Consumer
      })
    return {
      broker: Broker.Broker.of({ ...broker, consume }),
      /** drops the channel of every lease consumer made so far and attaches them again */
      sever: Effect.suspend(() => Effect.all(attached.splice(0), { discard: true }))
    }
  })

describe("Timer singleton lease", () => {
  it.live("a holder cut off from the broker but alive stops firing before another instance starts", () =>
    Effect.gen(function*() {
      const base = yield* Layer.build(Layer.fresh(MemoryBroker.layer))
      const runs: Array<{ readonly label: string; readonly start: number; end: number | undefined }> = []
      let active = 0
      let maxActive = 0
      const run = (label: string) =>
        Effect.gen(function*() {
          const record = { label, start: yield* Clock.currentTimeMillis, end: undefined as number | undefined }
          runs.push(record)
          active++
          maxActive = Math.max(maxActive, active)
          // a run the lost lease interrupts ends there too
          yield* Effect.sleep("60 millis").pipe(Effect.ensuring(Effect.flatMap(Clock.currentTimeMillis, (now) =>
            Effect.sync(() => {
              active--
              record.end = now
            }))))
        })
      const c = ServiceContract.make(`lease-${crypto.randomUUID().slice(0, 8)}`, EchoRpcs)
      const instances = yield* Effect.forEach(["a", "b", "c"], (label) =>
        Effect.gen(function*() {
          const wrapped = yield* severable(Context.get(base, Broker.Broker))
          const layer = Service.make(c, {
            handlers: { whoCalls: () => Effect.succeed({ correlationId: label, callIdStack: [] }) },
            entrypoints: [
              Timer.make("tick", Schedule.spaced("20 millis"), run(label), { mode: "singleton", lease: "400 millis" })
            ]
          })
          yield* Layer.build(layer.pipe(Layer.provide(Layer.succeed(Broker.Broker)(wrapped.broker))))
          return { label, sever: wrapped.sever }
        }))
      while (runs.length < 3) yield* Effect.sleep("10 millis")
      const leader = runs[0].label
      const severedAt = yield* Clock.currentTimeMillis
      yield* instances.find((i) => i.label === leader)!.sever
      while (!runs.some((r) => r.label !== leader)) yield* Effect.sleep("10 millis")
      yield* Effect.sleep("300 millis")

      const fromLeader = runs.filter((r) => r.label === leader)
      const lastOfLeader = fromLeader[fromLeader.length - 1]
      const firstOfNext = runs.find((r) => r.label !== leader)!
      // the cut-off holder notices within 3/4 of the lease; the next one waits out the whole lease
      assert.isDefined(lastOfLeader.end)
      assert.isBelow(lastOfLeader.start - severedAt, 400 * 0.75 + 50)
      assert.isAtLeast(firstOfNext.start, lastOfLeader.end!)
      assert.isAtLeast(firstOfNext.start - severedAt, 400)
      assert.isBelow(firstOfNext.start - severedAt, 400 + 300)
      assert.strictEqual(maxActive, 1)
      // after the takeover, only the new holder fires (the old one, re-attached, stays a follower)
      assert.isTrue(runs.filter((r) => r.start > firstOfNext.start).every((r) => r.label === firstOfNext.label))
    }))
})
