/**
 * Every name the mesh gives to exchanges, queues and routing keys, in one place, so that a
 * compatibility mode (Nameko's `nameko-rpc` / `rpc-<service>`) could swap them.
 */
import { Effect } from "effect"
import type { Broker, BrokerError, ExchangeType } from "../Broker.ts"

/** requests: a direct exchange, routing key = service name */
export const rpcExchange = "mesh.rpc"
/** interrupts and stream acks: a topic exchange every instance listens to */
export const controlExchange = "mesh.control"
/** messages nobody could handle */
export const deadLetterExchange = "mesh.dlx"

export const rpcQueue = (service: string): string => `mesh.rpc.${service}`
export const rpcDeadLetterQueue = (service: string): string => `mesh.rpc.${service}.dead`
export const rpcRoutingKey = (service: string): string => service
/**
 * where callers publish a request: straight to the service's queue through the default exchange (the
 * broker's cheapest route; a missing queue still returns a mandatory request). The service's queue is
 * also bound to `rpcExchange`, for publishers that route by service name.
 */
export const rpcRequestExchange = ""
export const rpcRequestKey = (service: string): string => rpcQueue(service)
/**
 * the lease of a singleton timer or worker: a single-active-consumer queue per service and entrypoint
 * (`kind` is "timer" or "worker")
 */
export const leaseQueue = (service: string, kind: string, name: string): string => `mesh.lease.${service}.${kind}.${name}`
/** interrupts for any instance of a service */
export const controlServiceKey = (service: string): string => `rpc.${service}`
/** stream acks for one instance */
export const controlInstanceKey = (instance: string): string => `instance.${instance}`

/** the exchanges every participant needs */
export const declareCommon = (broker: Broker["Service"]): Effect.Effect<void, BrokerError> =>
  Effect.all([
    broker.declareExchange(rpcExchange, "direct", { durable: true }),
    broker.declareExchange(controlExchange, "topic", { durable: true }),
    broker.declareExchange(deadLetterExchange, "direct", { durable: true })
  ], { discard: true })

/** exchanges this process declared on a broker: declaring once per broker is enough */
const declared = new WeakMap<object, Set<string>>()

export const isDeclared = (broker: Broker["Service"], exchange: string): boolean =>
  declared.get(broker)?.has(exchange) === true

/** declares an exchange (an event source's: durable, topic), once per broker */
export const ensureExchange = (
  broker: Broker["Service"],
  exchange: string,
  type: ExchangeType = "topic",
  durable = true
): Effect.Effect<void, BrokerError> =>
  Effect.suspend(() => {
    let names = declared.get(broker)
    if (names === undefined) {
      names = new Set()
      declared.set(broker, names)
    }
    if (names.has(exchange)) return Effect.void
    const known = names
    return Effect.tap(
      broker.declareExchange(exchange, type, { durable }),
      () => Effect.sync(() => known.add(exchange))
    )
  })

const commonMarker = "\u0000common"

/** `declareCommon`, once per broker */
export const ensureCommon = (broker: Broker["Service"]): Effect.Effect<void, BrokerError> =>
  Effect.suspend(() => {
    const names = declared.get(broker)
    if (names !== undefined && names.has(commonMarker)) return Effect.void
    return Effect.tap(declareCommon(broker), () =>
      Effect.sync(() => {
        const known = declared.get(broker) ?? new Set<string>()
        known.add(commonMarker)
        declared.set(broker, known)
      }))
  })

// ---- events ----

/** events of one source: a durable topic exchange, routing key = event type */
export const eventExchange = (source: string): string => `mesh.events.${source}`
/**
 * the queue family of one subscription: `pool` per subscribing service, `broadcast` per service (each
 * instance gets a queue under it), `singleton` per event, shared by every subscriber
 */
export const eventSubscription = (
  source: string,
  type: string,
  delivery: "pool" | "broadcast" | "singleton",
  service: string,
  name: string | undefined
): string => {
  const base = `mesh.events.${source}.${type}.${delivery}`
  const owner = delivery === "singleton" ? base : `${base}.${service}`
  return name === undefined ? owner : `${owner}.${name}`
}
/** the queue of one broadcast instance */
export const eventInstanceQueue = (subscription: string, instanceId: string): string =>
  `${subscription}.instance.${instanceId}`
/** where events nobody could handle end up, with the reason in their headers */
export const eventDeadLetterQueue = (subscription: string): string => `${subscription}.dead`
/** holds failed events for `delayMillis`, then dead-letters them back to `queue` */
export const eventRetryQueue = (queue: string, delayMillis: number): string => `${queue}.retry.${delayMillis}`

// ---- discovery ----

/** instances announce themselves and answer describe requests here: a topic exchange */
export const discoveryExchange = "mesh.discovery"
/** describe requests: every instance binds `describeAllKey` and its service's `describeKey` */
export const describeAllKey = "describe"
export const describeKey = (service: string): string => `describe.${service}`
/** announcements (up, heartbeat, down) of one service's instances; `announceAllPattern` matches all */
export const announceKey = (service: string): string => `announce.${service}`
export const announceAllPattern = "announce.*"
