/**
 * The RabbitMQ permissions (configure, write, read: regular expressions over exchange and queue names)
 * that services need, found by running them for a moment on the embedded broker behind a recorder:
 * every declaration, binding, consumer and publish of their start names a resource and what RabbitMQ
 * checks for it. To that come what they do later: calls and commands (the default exchange), interrupts
 * (the control exchange), replies (direct reply-to), event retries, and the events they publish (their
 * own name as source, and what `publishes` declares).
 *
 * @internal
 */
import { Effect, Layer } from "effect"
import { Broker, type BrokerError } from "../Broker.ts"
import * as Discovery from "../Discovery.ts"
import * as MemoryBroker from "../MemoryBroker.ts"
import * as ServiceClient from "../ServiceClient.ts"
import * as topology from "./topology.ts"

/** what a RabbitMQ user needs, as `rabbitmqctl set_permissions` takes it */
export interface Permissions {
  readonly services: ReadonlyArray<string>
  readonly configure: string
  readonly write: string
  readonly read: string
}

type Kind = "configure" | "write" | "read"

const escape = (name: string): string => name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")

/** the default exchange, as RabbitMQ names it in permissions */
const defaultExchange = "amq.default"
const exchangeName = (name: string): string => name === "" ? defaultExchange : name

/**
 * a resource as a pattern: a queue declared without a name (`AmqpBroker` names it `mesh.gen-<uuid>`;
 * exclusive, so no other connection can use it), or one named after an instance, stands for all such
 */
const patternOf = (name: string): string => {
  if (name === "" || name.startsWith("amq.gen-") || name.startsWith("mesh.gen-")) return "mesh\\.gen-.*"
  const instance = name.lastIndexOf(".instance.")
  return instance < 0 ? escape(name) : `${escape(name.slice(0, instance))}\\.instance\\..+`
}

const recording = (inner: Broker["Service"], grant: (kind: Kind, pattern: string) => void): Broker["Service"] =>
  Broker.of({
    ...inner,
    declareExchange: (name, type, options) => {
      grant("configure", patternOf(name))
      return inner.declareExchange(name, type, options)
    },
    declareQueue: (name, options) =>
      Effect.tap(inner.declareQueue(name, options), () =>
        Effect.sync(() => {
          const queue = patternOf(name)
          grant("configure", queue)
          if (name === "") grant("read", queue)
          // RabbitMQ checks a dead-letter exchange at the declaration: write on it, read on the queue
          if (options?.deadLetterExchange !== undefined) {
            grant("write", patternOf(exchangeName(options.deadLetterExchange)))
            grant("read", queue)
          }
        })),
    deleteQueue: (name) => {
      grant("configure", patternOf(name))
      return inner.deleteQueue(name)
    },
    bindQueue: (queue, exchange, pattern) => {
      grant("write", patternOf(queue))
      grant("read", patternOf(exchangeName(exchange)))
      // a subscription's retries wait in queues of their own, declared when an event fails
      if (exchange.startsWith("mesh.events.")) {
        const retries = `${escape(queue)}\\.retry\\.[0-9]+`
        grant("configure", retries)
        grant("read", retries)
      }
      return inner.bindQueue(queue, exchange, pattern)
    },
    unbindQueue: (queue, exchange, pattern) => {
      grant("write", patternOf(queue))
      grant("read", patternOf(exchangeName(exchange)))
      return inner.unbindQueue(queue, exchange, pattern)
    },
    publish: (exchange, routingKey, body, options) => {
      grant("write", patternOf(exchangeName(exchange)))
      return inner.publish(exchange, routingKey, body, options)
    },
    consume: (queue, options) => {
      grant("read", patternOf(queue))
      return inner.consume(queue, options)
    }
  })

/**
 * The permissions the services of these layers need, with the clients they hold. The layers are
 * built on an embedded broker of their own and released at once: their handlers do not run, but their
 * timers' and workers' first runs may.
 */
export const of = <E>(
  layers: ReadonlyArray<Layer.Layer<never, E, Broker | ServiceClient.Transport>>,
  /** the services' names (those with discovery off do not describe themselves) */
  serviceNames: ReadonlyArray<string>
): Effect.Effect<Permissions, E | BrokerError> =>
  Effect.scoped(Effect.gen(function*() {
    const grants: Record<Kind, Set<string>> = { configure: new Set(), write: new Set(), read: new Set() }
    const grant = (kind: Kind, pattern: string) => void grants[kind].add(pattern)
    const inner = yield* MemoryBroker.make
    const services = layers.reduce<Layer.Layer<never, E, Broker | ServiceClient.Transport>>(
      (all, layer) => Layer.merge(all, layer),
      Layer.empty
    ).pipe(Layer.provideMerge(ServiceClient.layer), Layer.provideMerge(Layer.succeed(Broker, recording(inner, grant))))
    yield* Layer.build(services)
    const described = yield* Discovery.describe({ window: "100 millis" }).pipe(
      Effect.provideService(Broker, inner),
      Effect.orDie
    )
    // what every process of the mesh does: calls, commands and replies through the default exchange,
    // interrupts through the control exchange, replies to its calls on direct reply-to
    for (const exchange of [topology.rpcExchange, topology.controlExchange, topology.deadLetterExchange]) {
      grant("configure", escape(exchange))
    }
    grant("write", escape(defaultExchange))
    grant("write", escape(topology.controlExchange))
    grant("read", escape("amq.rabbitmq.reply-to"))
    const names = new Set([...serviceNames, ...described.map((d) => d.service)])
    // the events they publish: under their own names, and what they declare
    const sources = new Set([...names, ...described.flatMap((d) => d.publishes.map((e) => e.source))])
    for (const source of sources) {
      const exchange = escape(topology.eventExchange(source))
      grant("configure", exchange)
      grant("write", exchange)
    }
    const regex = (kind: Kind) => `^(${Array.from(grants[kind]).sort().join("|")})$`
    return { services: Array.from(names).sort(), configure: regex("configure"), write: regex("write"), read: regex("read") }
  }))
