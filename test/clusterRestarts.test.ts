/**
 * Nodes of the checkout's private RabbitMQ cluster going and coming back (a node restarts in 20 to 60 s
 * on a small shared machine, so these run in `npm run test:cluster`, not in `npm test`):
 *
 * - A rolling restart of the three nodes, one at a time, under steady calls and events (the mesh of
 *   test/fixtures/clusterMesh.ts): every call is answered or fails with `TransportError` (the outcome
 *   unknown when it was in flight), none waits past its deadline; every confirmed event is handled.
 * - A singleton timer (three instances, a lease on a quorum queue) whose holder's node is SIGKILLed:
 *   runs resume on one instance, never two at once.
 */
import { assert, describe, it } from "@effect/vitest"
import { Clock, Effect, Fiber, Layer, Ref, Schedule } from "effect"
import { ServiceClient } from "effect-mesh"
import { cluster, useCluster } from "./fixtures/cluster.ts"
import {
  assertDelivered,
  assertOutcomes,
  clientLayer,
  deleteQueues,
  describeOutcomes,
  meshQueues,
  type Outcome,
  publishTicks,
  startMesh,
  timedCall
} from "./fixtures/clusterMesh.ts"
import { workContract } from "./fixtures/programs/workContract.ts"
import { spawnProgram } from "./fixtures/processes.ts"
import { allRuns, assertNoOverlap } from "./fixtures/timerRuns.ts"
import { fileURLToPath } from "node:url"
import * as topology from "../src/internal/topology.ts"

const singletonTimer = fileURLToPath(new URL("./fixtures/programs/singletonTimer.ts", import.meta.url))
const nodes = useCluster()
const suffix = () => crypto.randomUUID().slice(0, 8)

describe("on a three-node RabbitMQ cluster", () => {
  it.live("a rolling restart of the three nodes under steady calls and events: every call answered or failed typed before its deadline, every confirmed event handled", () =>
    Effect.gen(function*() {
      const mesh = yield* startMesh(nodes.urls())
      const work = yield* ServiceClient.make(workContract(mesh.service))
      yield* work.work({ id: -1, millis: 1 }, { timeout: "10 seconds" })

      const stop = yield* Ref.make(false)
      const publisher = yield* Effect.forkChild(publishTicks(mesh.TickEvent, stop))
      // steady load: 16 callers, each making one call after another
      const next = yield* Ref.make(0)
      const caller = Effect.gen(function*() {
        const outcomes: Array<Outcome> = []
        while (!(yield* Ref.get(stop))) {
          const outcome = yield* timedCall(work, yield* Ref.getAndUpdate(next, (n) => n + 1), 20)
          outcomes.push(outcome)
          // a caller whose call could not be sent waits a moment, as a client's retry would
          if (!outcome.answered) yield* Effect.sleep("100 millis")
        }
        return outcomes
      })
      const callers = yield* Effect.forkChild(Effect.all(Array.from({ length: 16 }, () => caller), { concurrency: "unbounded" }))
      const restarts: Array<string> = []
      for (const n of [1, 2, 3]) {
        yield* Effect.sleep("1 second")
        const from = yield* Clock.currentTimeMillis
        yield* cluster.restart(n)
        restarts.push(`node ${n} ${from}-${yield* Clock.currentTimeMillis}`)
      }
      yield* Effect.sleep("2 seconds")
      yield* Ref.set(stop, true)
      const outcomes = (yield* Fiber.join(callers)).flat()
      const { confirmed, failed } = yield* Fiber.join(publisher)
      yield* Effect.logInfo(`${describeOutcomes(outcomes)}; events: ${confirmed.length} confirmed, ${failed} failed`)
      if (process.env["MESH_TEST_VERBOSE"] !== undefined) {
        yield* Effect.logInfo(`restarts: ${restarts.join(", ")}`)
        for (const o of outcomes.filter((o) => !o.answered && !o.error!.startsWith("TransportError"))) {
          const served = mesh.instances.map((p) => p.output().filter((l) => l === `served ${o.id}`).length)
          yield* Effect.logInfo(`call ${o.id} ended ${o.endedAt} after ${o.millis}: ${o.error}; served ${served}`)
        }
      }
      assertOutcomes(outcomes)
      // the load went on through the restarts: most calls were answered
      assert.isAbove(outcomes.filter((o) => o.answered).length, outcomes.length / 2)
      yield* assertDelivered(mesh.sub, confirmed)
      yield* deleteQueues(meshQueues(mesh.service, mesh.source))
    }).pipe(Effect.scoped, Effect.provide(Layer.suspend(() => clientLayer(nodes.urls())))), 480_000)


  it.live("a singleton timer whose holder's node dies: runs resume on one instance, never two at once", () =>
    Effect.gen(function*() {
      const service = `ticker-${suffix()}`
      const lease = topology.leaseQueue(service, "timer", "tick")
      const env = { AMQP_URL: nodes.urls(), SERVICE: service, INTERVAL: "200", RUN: "20" }
      const procs = yield* Effect.all([spawnProgram(singletonTimer, env), spawnProgram(singletonTimer, env), spawnProgram(singletonTimer, env)])
      yield* Effect.forEach(procs, (p) => p.waitFor(/^ready/, "60 seconds"), { concurrency: "unbounded", discard: true })
      yield* Effect.raceAll(procs.map((p) => p.waitFor(/^start /, "20 seconds")))
      yield* Effect.sleep("1 second")

      const holderNode = yield* cluster.activeConsumerNode(lease)
      const before = allRuns(procs)
      const holderPid = before[before.length - 1].pid
      yield* Effect.logInfo(`instance ${holderPid} holds the lease, connected to node ${holderNode}`)
      const killedAt = yield* Clock.currentTimeMillis
      yield* cluster.kill(holderNode)

      // runs resume, then go on from one instance
      yield* Effect.sleep("200 millis").pipe(
        Effect.repeat({
          until: () => allRuns(procs).filter((r) => r.start > killedAt + 1500).length >= 5,
          schedule: Schedule.during("40 seconds")
        })
      )
      const after = allRuns(procs).filter((r) => r.start >= killedAt)
      const resumed = after.find((r) => r.start > killedAt + 1500)
      assert.isDefined(resumed, "runs resumed after the node died")
      const settled = after.filter((r) => r.start >= resumed!.start)
      yield* Effect.logInfo(
        `runs resumed on ${resumed!.pid} ${resumed!.start - killedAt} ms after the node died; ${settled.length} runs since, by ${[...new Set(settled.map((r) => r.pid))]}`
      )
      assert.isTrue(settled.every((r) => r.pid === resumed!.pid), "one instance fires")
      // never two at once, before, during and after the failover
      assertNoOverlap(allRuns(procs), new Map())
      yield* cluster.startNode(holderNode)
      yield* deleteQueues([lease])
    }).pipe(Effect.scoped, Effect.provide(Layer.suspend(() => clientLayer(nodes.urls())))), 180_000)
})
