/**
 * Which type of queue the mesh declares for a service's requests (and commands) and for its event
 * subscriptions: the service's own option, else the configuration's `MESH_QUEUE_TYPE`, else the default
 * (see the README's "Queues" section for what each type survives and costs).
 *
 * - requests: `classic` by default. A request lives as long as its caller waits: replication buys it
 *   little, and on one node a classic queue carried 1.7 to 2.7 times the calls of a quorum one. A
 *   classic queue has no delivery limit: a request that kills its instance each time is redelivered
 *   until its deadline passes.
 * - events: `quorum` by default. An event outlives its publisher's wait, and a quorum queue's delivery
 *   limit stops an event that kills its handler's instance from going round for ever.
 *
 * RabbitMQ will not change a queue's type in place: a declaration of the other type is refused, and
 * the refusal says how to move (`refused`).
 *
 * @internal
 */
import { Config, Effect } from "effect"
import type { QueueOptions, QueueType } from "../Broker.ts"
import { BrokerError } from "../Broker.ts"

/** the configuration key, for every service of the process that sets no type itself */
export const configKey = "MESH_QUEUE_TYPE"

export const defaults = { requests: "classic", events: "quorum" } as const satisfies Record<string, QueueType>

/**
 * The type a service's queue gets: its own, else the configuration's, else `fallback`. Configuration
 * that cannot be read is a defect: the service must not start on a queue type nobody chose.
 */
export const resolve = (own: QueueType | undefined, fallback: QueueType): Effect.Effect<QueueType> =>
  own !== undefined ? Effect.succeed(own) : Effect.gen(function*() {
    return yield* Config.Literals(["classic", "quorum"], configKey).pipe(Config.withDefault(fallback))
  }).pipe(
    Effect.mapError((error) => new Error(`queue type (${configKey}): ${error.message}`)),
    Effect.orDie
  )

/** a queue's options for its type: a quorum queue gets the delivery limit, a classic one cannot */
export const options = (type: QueueType, deliveryLimit: number): Pick<QueueOptions, "type" | "deliveryLimit"> =>
  type === "quorum" ? { type, deliveryLimit } : { type }

/**
 * A declaration of `queue` refused for its arguments: most often a queue of the other type left by an
 * earlier version of the service. Said in full, with the way to move.
 */
export const refused = (queue: string, type: QueueType) => (error: BrokerError): Effect.Effect<never, BrokerError> =>
  Effect.fail(
    error.reason !== "Precondition"
      ? error
      : new BrokerError({
        reason: "Precondition",
        message: `queue '${queue}' exists with other arguments than this service's (type ${type}): ` +
          `RabbitMQ does not change a queue's type in place. Keep the old type (queueType, or ` +
          `${configKey}), or move: stop every instance, let the queue empty, delete it ` +
          `(rabbitmqctl delete_queue ${queue} --if-empty), then start the service. (${error.message})`,
        cause: error
      })
  )
