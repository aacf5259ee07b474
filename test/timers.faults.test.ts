/**
 * Singleton timers against a real RabbitMQ, across real processes: three instances of a service
 * (`fixtures/programs/singletonTimer.ts`) share a singleton timer every 200 ms. Every process prints
 * a line when a run starts and ends, with a timestamp; the test parses them.
 */
import { assert, describe, it } from "@effect/vitest"
import { Clock, Effect, Layer } from "effect"
import { AmqpBroker, Broker } from "effect-mesh"
import { fileURLToPath } from "node:url"
import * as topology from "../src/internal/topology.ts"
import { amqpUrl } from "./fixtures/amqpUrl.ts"
import { spawnProgram } from "./fixtures/processes.ts"
import { allRuns, assertNoOverlap } from "./fixtures/timerRuns.ts"

const program = fileURLToPath(new URL("./fixtures/programs/singletonTimer.ts", import.meta.url))

describe("singleton timers on RabbitMQ, across processes", () => {
  it.live("three instances, a singleton timer every 200 ms: about 15 runs in 3 s, never overlapping; SIGKILL the one that fires and another resumes within 2 s", () =>
    Effect.gen(function*() {
      const service = `ticker-${crypto.randomUUID().slice(0, 8)}`
      const env = { AMQP_URL: amqpUrl(), SERVICE: service, INTERVAL: "200", RUN: "20" }
      yield* Effect.gen(function*() {
        const procs = yield* Effect.all([spawnProgram(program, env), spawnProgram(program, env), spawnProgram(program, env)])
        yield* Effect.forEach(procs, (p) => p.waitFor(/^ready/), { concurrency: "unbounded", discard: true })
        yield* Effect.raceAll(procs.map((p) => p.waitFor(/^start /, "10 seconds")))

        // -- 3 seconds with all three running --
        const from = yield* Clock.currentTimeMillis
        yield* Effect.sleep("3 seconds")
        const to = yield* Clock.currentTimeMillis
        const window = allRuns(procs).filter((r) => r.start >= from && r.start < to)
        yield* Effect.logInfo(`${window.length} runs in ${to - from} ms, by ${[...new Set(window.map((r) => r.pid))]}`)
        // one run every 200 ms + 20 ms of run: about 13-15 in 3 s; every instance firing would be 40+
        assert.isAtLeast(window.length, 11)
        assert.isAtMost(window.length, 16)
        assertNoOverlap(allRuns(procs), new Map())
        const leaderPid = window[window.length - 1].pid
        assert.isTrue(window.every((r) => r.pid === leaderPid), "one instance fires")

        // -- SIGKILL the instance that fires --
        const leader = procs.find((p) => p.pid === leaderPid)!
        const killedAt = yield* Clock.currentTimeMillis
        yield* leader.kill("SIGKILL")
        yield* leader.exited
        const survivors = procs.filter((p) => p !== leader)
        yield* Effect.raceAll(survivors.map((p) => p.waitFor(/^start /, "5 seconds")))
        const resumed = allRuns(survivors).find((r) => r.start >= killedAt)!
        const failover = resumed.start - killedAt
        yield* Effect.logInfo(`runs resumed on ${resumed.pid} ${failover} ms after the SIGKILL`)
        assert.isBelow(failover, 2000)

        // -- and go on from that one instance, still never overlapping --
        yield* Effect.sleep("1 second")
        const after = allRuns(survivors).filter((r) => r.start >= killedAt)
        assert.isAtLeast(after.length, 4)
        assert.isTrue(after.every((r) => r.pid === resumed.pid), "one survivor fires")
        assertNoOverlap(allRuns(procs), new Map([[leaderPid, killedAt]]))
      }).pipe(
        Effect.scoped,
        Effect.ensuring(
          Effect.flatMap(Broker.Broker, (broker) =>
            Effect.ignore(broker.deleteQueue(topology.leaseQueue(service, "timer", "tick"))))
        )
      )
    }).pipe(Effect.provide(Layer.suspend(() => AmqpBroker.layer({ url: amqpUrl() })))), 120_000)
})
