/**
 * Past one broker node: the mesh on the checkout's private three-node RabbitMQ cluster
 * (`scripts/rabbitmq.sh cluster`, test/fixtures/cluster.ts), every process given the three nodes'
 * URLs. Services take quorum request queues (`MESH_QUEUE_TYPE=quorum`), replicated on the three
 * nodes; event subscriptions are quorum queues by default. SIGKILL the node that leads a service's
 * request queue while 200 calls are in flight and events are published with confirms: every call is
 * answered or fails with `TransportError` (the outcome unknown when it was in flight), none waits past
 * its deadline; every confirmed event is handled. (What takes minutes of node restarts, the rolling
 * restart and a singleton timer's failover, is test/clusterRestarts.test.ts, in `npm run test:cluster`.)
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Layer, Ref, Schedule } from "effect"
import { ServiceClient } from "effect-mesh"
import * as topology from "../src/internal/topology.ts"
import { cluster, useCluster } from "./fixtures/cluster.ts"
import {
  assertDelivered,
  assertOutcomes,
  clientLayer,
  deleteQueues,
  describeOutcomes,
  meshQueues,
  publishTicks,
  startMesh,
  timedCall
} from "./fixtures/clusterMesh.ts"
import { workContract } from "./fixtures/programs/workContract.ts"

const nodes = useCluster()

describe("on a three-node RabbitMQ cluster", () => {
  it.live("SIGKILL the leader of a service's request queue with 200 calls in flight and events published: every call answered or failed typed before its deadline, every confirmed event handled", () =>
    Effect.gen(function*() {
      const mesh = yield* startMesh(nodes.urls())
      yield* mesh.instances[0].waitFor(/^ready/)
      const leader = yield* cluster.leaderOf(topology.rpcQueue(mesh.service))
      yield* Effect.logInfo(`the request queue's leader is node ${leader}`)
      // the caller on the other nodes: what is shown is the service's side of the failover (a caller
      // on the lost node sees its calls in flight fail at once with OutcomeUnknown:
      // test/rpc.connectionLoss.test.ts)
      const survivors = nodes.urls().split(",").filter((_, i) => i + 1 !== leader).join(",")
      yield* Effect.gen(function*() {
        const work = yield* ServiceClient.make(workContract(mesh.service))
        // the queue is served before the load starts
        yield* work.work({ id: -1, millis: 1 }, { timeout: "10 seconds" })
        const stop = yield* Ref.make(false)
        const publisher = yield* Effect.forkChild(publishTicks(mesh.TickEvent, stop))
        // 200 calls in flight: two instances run 64 each at once, 400 ms per call
        const calls = yield* Effect.forkChild(
          Effect.forEach(Array.from({ length: 200 }, (_, id) => id), (id) => timedCall(work, id, 400), {
            concurrency: "unbounded"
          })
        )
        yield* Effect.sleep("300 millis")
        yield* cluster.kill(leader)
        const outcomes = yield* Fiber.join(calls)
        yield* Effect.sleep("2 seconds")
        yield* Ref.set(stop, true)
        const { confirmed, failed } = yield* Fiber.join(publisher)
        yield* Effect.logInfo(`${describeOutcomes(outcomes)}; events: ${confirmed.length} confirmed, ${failed} failed`)
        assertOutcomes(outcomes)
        // the caller kept its connection: its calls were answered, by the instances that kept theirs
        // and by those that reconnected
        assert.isAbove(outcomes.filter((o) => o.answered).length, 150)
        assert.isAbove(confirmed.length, 0)
        yield* assertDelivered(mesh.sub, confirmed)

        // a new leader serves the queue: calls made now are answered
        const again = yield* work.work({ id: 999, millis: 1 }, { timeout: "5 seconds" }).pipe(
          Effect.retry(Schedule.max([Schedule.spaced("250 millis"), Schedule.during("30 seconds")]))
        )
        assert.strictEqual(again.id, 999)
        yield* cluster.startNode(leader)
        yield* deleteQueues(meshQueues(mesh.service, mesh.source))
      }).pipe(Effect.scoped, Effect.provide(Layer.suspend(() => clientLayer(survivors))))
    }).pipe(Effect.scoped), 180_000)
})
