/**
 * `node bench/scaleCleanup.ts <amqpUrls> <runId>`: deletes the queues a run of bench/scale.ts or
 * bench/soak.ts declared (its services' request and dead-letter queues, its subscriptions'), so the
 * broker stays as clean as a fresh one.
 */
import { Effect } from "effect"
import { AmqpBroker } from "effect-mesh"
import * as topology from "../src/internal/topology.ts"

const [url = "", runId = ""] = process.argv.slice(2)

const services = [
  `scale-${runId}-1q-0`,
  ...[0, 1, 2, 3].map((i) => `scale-${runId}-4q-${i}`),
  ...[1, 2, 3, 4].map((n) => `scale-${runId}-ev${n}-sub`),
  `soak-${runId}`
]
const subscriptions = [1, 2, 3, 4].map((n) =>
  topology.eventSubscription(`scale-${runId}-ev${n}`, "tick", "pool", `scale-${runId}-ev${n}-sub`, undefined)
)
const queues = [
  ...services.flatMap((s) => [topology.rpcQueue(s), topology.rpcDeadLetterQueue(s)]),
  ...subscriptions.flatMap((q) => [q, topology.eventDeadLetterQueue(q)])
]

await Effect.runPromise(
  Effect.gen(function*() {
    const broker = yield* AmqpBroker.make({ url })
    yield* Effect.forEach(queues, (q) => Effect.ignore(broker.deleteQueue(q)), { discard: true })
  }).pipe(Effect.scoped)
)
