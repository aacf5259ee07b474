/**
 * How running instances make themselves known. Every instance a `Service.make` Layer starts binds a
 * private queue to the `mesh.discovery` exchange, answers describe requests with its description
 * (instance id, host, pid, start time, each rpc with the JSON Schema of its payload, success and error,
 * the events it publishes and subscribes to), announces itself when it starts, every `heartbeat` while
 * it runs and when it stops.
 *
 * `describe` asks the cluster and collects the answers that arrive within a short window: only live
 * instances answer, so a dead or hung one is simply absent. `watch` keeps a live table of instances
 * from the announcements for long-running processes; an instance not heard from within its `ttl`
 * expires.
 *
 * ```ts
 * const instances = yield* Discovery.describe({ service: "calculator", window: "500 millis" })
 * ```
 *
 * @since 0.1.0
 */
import { Clock, Context, Duration, Effect, Exit, Fiber, Layer, Option, Schedule, Schema, Stream } from "effect"
import type { Scope } from "effect"
import type { Severity } from "effect/LogLevel"
import type { Rpc } from "effect/rpc"
import { RpcSchema } from "effect/rpc"
import { hostname } from "node:os"
import type { BrokerError, Delivery, Incoming } from "./Broker.ts"
import { Broker } from "./Broker.ts"
import * as topology from "./internal/topology.ts"
import * as wire from "./internal/wire.ts"
import * as Sealed from "./Sealed.ts"
import type { ServiceContract } from "./ServiceContract.ts"

// ---- models ----

/**
 * A JSON Schema (draft 2020-12), standalone: its definitions are under `$defs`.
 *
 * @since 0.1.0
 */
export const JsonSchema = Schema.Record(Schema.String, Schema.Unknown)

/**
 * The type of `JsonSchema`.
 *
 * @since 0.1.0
 */
export type JsonSchema = typeof JsonSchema.Type

/**
 * One rpc of a running service: the JSON Schemas of the payload, of the success (of each element for
 * a streaming rpc) and of the contract's errors, as they look on the wire.
 *
 * @since 0.1.0
 */
export const RpcDescription = Schema.Struct({
  name: Schema.String,
  stream: Schema.Boolean,
  payload: JsonSchema,
  success: JsonSchema,
  error: JsonSchema,
  /** its payload and answers cross the broker sealed (Sealed.ts) */
  sealed: Schema.optionalKey(Schema.Boolean)
})

/**
 * The type of `RpcDescription`.
 *
 * @since 0.1.0
 */
export type RpcDescription = typeof RpcDescription.Type

/**
 * An event a service publishes (with the JSON Schema of its payload, when known) or subscribes to
 * (with its delivery).
 *
 * @since 0.1.0
 */
export const EventDescription = Schema.Struct({
  source: Schema.String,
  type: Schema.String,
  delivery: Schema.optionalKey(Schema.String),
  payload: Schema.optionalKey(JsonSchema)
})

/**
 * The type of `EventDescription`.
 *
 * @since 0.1.0
 */
export type EventDescription = typeof EventDescription.Type

/**
 * Who an instance is: its service, its id, where it runs and since when (epoch milliseconds).
 *
 * @since 0.1.0
 */
export const InstanceInfo = Schema.Struct({
  service: Schema.String,
  instanceId: Schema.String,
  host: Schema.String,
  pid: Schema.Number,
  since: Schema.Number,
  /** the kind of broker it runs on ("amqp", "memory") */
  broker: Schema.String
})

/**
 * The type of `InstanceInfo`.
 *
 * @since 0.1.0
 */
export type InstanceInfo = typeof InstanceInfo.Type

/**
 * What an instance answers to a describe request.
 *
 * @since 0.1.0
 */
export const Description = Schema.Struct({
  ...InstanceInfo.fields,
  rpcs: Schema.Array(RpcDescription),
  /** names of everything else it runs: event subscriptions, timers, workers, routes */
  entrypoints: Schema.Array(Schema.String),
  publishes: Schema.Array(EventDescription),
  subscribes: Schema.Array(EventDescription),
  /** the X25519 public key callers seal requests for (base64url), when it has sealed rpcs (Sealed.ts) */
  sealedKey: Schema.optionalKey(Schema.String)
})

/**
 * The type of `Description`.
 *
 * @since 0.1.0
 */
export type Description = typeof Description.Type

/**
 * An instance's announcement: `up` when it starts, `heartbeat` while it runs, `down` when it stops.
 *
 * @since 0.1.0
 */
export const Announcement = Schema.Struct({
  ...InstanceInfo.fields,
  status: Schema.Literals(["up", "heartbeat", "down"])
})

/**
 * The type of `Announcement`.
 *
 * @since 0.1.0
 */
export type Announcement = typeof Announcement.Type

/**
 * An event as `Service.make`'s `publishes` option declares it (an `Event.Event` fits).
 *
 * @since 0.1.0
 */
export interface PublishedEvent {
  readonly source: string
  readonly type: string
  readonly schema: Schema.Top
}

/**
 * The level of the line an instance logs when it starts and stops (`Debug` by default; `mesh run`
 * sets `Info`).
 *
 * @since 0.1.0
 */
export const LogLevel = Context.Reference<Severity>("effect-mesh/Discovery/LogLevel", { defaultValue: () => "Debug" })

/**
 * The default interval of heartbeats.
 *
 * @since 0.1.0
 */
export const defaultHeartbeat: Duration.Duration = Duration.seconds(10)

// ---- constructors ----

/**
 * Describes a contract: each rpc with the JSON Schemas of its payload, success and errors.
 *
 * @since 0.1.0
 */
export const describeContract = (contract: ServiceContract<string, Rpc.Any>): ReadonlyArray<RpcDescription> =>
  Array.from(contract.group.requests.values(), (rpc): RpcDescription => {
    const props = rpc as Rpc.AnyWithProps
    const success = props.successSchema
    const stream = RpcSchema.isStreamSchema(success)
    return {
      name: props._tag,
      stream,
      payload: toJsonSchema(props.payloadSchema),
      success: toJsonSchema(stream ? success.success : success),
      error: toJsonSchema(stream ? Schema.Union([props.errorSchema, success.error]) : props.errorSchema),
      ...(Sealed.isSealed(props) ? { sealed: true } : {})
    }
  })

/**
 * Options of an instance's discovery.
 *
 * @since 0.1.0
 */
export interface Options {
  readonly service: string
  readonly instanceId: string
  readonly contract: ServiceContract<string, Rpc.Any>
  /** names of the instance's other entrypoints */
  readonly entrypoints?: ReadonlyArray<string> | undefined
  readonly publishes?: ReadonlyArray<PublishedEvent> | undefined
  /** how often it announces itself while it runs (default 10 seconds) */
  readonly heartbeat?: Duration.Input | undefined
  /** the public key of its sealed rpcs, announced to callers (Sealed.ts) */
  readonly sealedKey?: string | undefined
}

/**
 * Makes an instance discoverable while the Layer lives: answers describe requests and announces
 * itself. `Service.make` adds it to every service (unless `discovery: false`).
 *
 * @since 0.1.0
 */
export const layer = (options: Options): Layer.Layer<never, BrokerError, Broker> =>
  Layer.effectDiscard(Effect.gen(function*() {
    const broker = yield* Broker
    const level = yield* LogLevel
    const info: InstanceInfo = {
      service: options.service,
      instanceId: options.instanceId,
      host: hostname(),
      pid: process.pid,
      since: yield* Clock.currentTimeMillis,
      broker: broker.kind
    }
    // made on the first request: most instances are never described
    let body: Uint8Array | undefined
    const describeBody = () => {
      if (body === undefined) {
        const description: Description = {
          ...info,
          rpcs: describeContract(options.contract),
          entrypoints: options.entrypoints ?? [],
          publishes: (options.publishes ?? []).map((event) => ({
            source: event.source,
            type: event.type,
            payload: toJsonSchema(event.schema)
          })),
          subscribes: (options.entrypoints ?? []).flatMap(subscriptionOf),
          ...(options.sealedKey === undefined ? {} : { sealedKey: options.sealedKey })
        }
        body = wire.encodeJson(description)
      }
      return body
    }

    yield* declareExchange(broker)
    const queue = yield* broker.declareQueue("", { exclusive: true, autoDelete: true })
    yield* broker.bindQueue(queue, topology.discoveryExchange, topology.describeAllKey)
    yield* broker.bindQueue(queue, topology.discoveryExchange, topology.describeKey(options.service))
    const consumer = yield* broker.consume(queue, { prefetch: 16, tag: `${options.service}.discovery` })

    const answer = (delivery: Delivery): Effect.Effect<void> => {
      const { correlationId, replyTo } = delivery.properties
      if (replyTo === undefined || replyTo === "") return delivery.ack
      return broker.publish("", replyTo, describeBody(), { correlationId, contentType: wire.contentType }).pipe(
        Effect.ignore,
        Effect.andThen(delivery.ack)
      )
    }
    yield* consumer.deliveries.pipe(
      Stream.runForEach((delivery) =>
        Effect.catchCause(answer(delivery), (cause) => Effect.logDebug("a describe request could not be answered", cause))
      ),
      Effect.forkScoped
    )

    const announce = (status: Announcement["status"]) =>
      broker.publish(
        topology.discoveryExchange,
        topology.announceKey(options.service),
        wire.encodeJson({ ...info, status } satisfies Announcement),
        { contentType: wire.contentType }
      ).pipe(Effect.timeout("2 seconds"), Effect.ignore)
    yield* announce("up")
    yield* announce("heartbeat").pipe(
      Effect.repeat(Schedule.spaced(options.heartbeat ?? defaultHeartbeat)),
      Effect.delay(options.heartbeat ?? defaultHeartbeat),
      Effect.forkScoped
    )
    const where = `host ${info.host}, pid ${info.pid}, broker ${info.broker}`
    yield* Effect.logWithLevel(level)(`${options.service}: instance ${options.instanceId} started (${where})`)
    yield* Effect.addFinalizer(() =>
      Effect.andThen(
        announce("down"),
        Effect.logWithLevel(level)(`${options.service}: instance ${options.instanceId} stopping`)
      )
    )
  }))

/**
 * Options of `describe`.
 *
 * @since 0.1.0
 */
export interface DescribeOptions {
  /** only this service's instances (all services by default) */
  readonly service?: string | undefined
  /** how long to collect answers (default 1 second) */
  readonly window?: Duration.Input | undefined
}

/**
 * Asks every live instance (or every instance of one service) to describe itself; returns the
 * answers that arrived within the window, by service, oldest instance first.
 *
 * @since 0.1.0
 */
export const describe = (options?: DescribeOptions): Effect.Effect<ReadonlyArray<Description>, BrokerError, Broker> =>
  Effect.scoped(Effect.gen(function*(): Effect.fn.Return<ReadonlyArray<Description>, BrokerError, Broker | Scope.Scope> {
    const broker = yield* Broker
    yield* declareExchange(broker)
    const replies = yield* broker.replyQueue()
    const correlationId = crypto.randomUUID()
    const found = new Map<string, Description>()
    const collect = (incoming: Incoming) =>
      Effect.sync(() => {
        if (incoming._tag !== "Reply" || incoming.message.properties.correlationId !== correlationId) return
        const decoded = Option.flatMap(wire.decodeJson(incoming.message.body), decodeDescription)
        if (Option.isSome(decoded)) found.set(decoded.value.instanceId, decoded.value)
      })
    const collector = yield* replies.incoming.pipe(Stream.runForEach(collect), Effect.forkScoped)
    const key = options?.service === undefined ? topology.describeAllKey : topology.describeKey(options.service)
    yield* replies.publish(topology.discoveryExchange, key, wire.encodeJson({}), {
      correlationId,
      contentType: wire.contentType
    })
    yield* Effect.sleep(options?.window ?? Duration.seconds(1))
    yield* Fiber.interrupt(collector)
    return Array.from(found.values()).sort((a, b) =>
      a.service === b.service ? a.since - b.since : a.service < b.service ? -1 : 1
    )
  }))

/**
 * A live table of instances, kept from their announcements.
 *
 * @since 0.1.0
 */
export interface Registry {
  /** the instances heard from within their ttl, by service, oldest first */
  readonly instances: Effect.Effect<ReadonlyArray<InstanceInfo>>
}

/**
 * Options of `watch`.
 *
 * @since 0.1.0
 */
export interface WatchOptions {
  /** an instance not heard from for this long is gone (default three default heartbeats) */
  readonly ttl?: Duration.Input | undefined
}

/**
 * Listens to announcements while the scope lives. Instances that said `down`, and instances not heard
 * from within `ttl`, are left out.
 *
 * @since 0.1.0
 */
export const watch = (options?: WatchOptions): Effect.Effect<Registry, BrokerError, Broker | Scope.Scope> =>
  Effect.gen(function*() {
    const broker = yield* Broker
    const ttl = Duration.toMillis(Duration.fromInputUnsafe(options?.ttl ?? Duration.times(defaultHeartbeat, 3)))
    const table = new Map<string, { readonly info: InstanceInfo; readonly seen: number }>()
    yield* declareExchange(broker)
    const queue = yield* broker.declareQueue("", { exclusive: true, autoDelete: true })
    yield* broker.bindQueue(queue, topology.discoveryExchange, topology.announceAllPattern)
    const consumer = yield* broker.consume(queue, { prefetch: 64, tag: "discovery.watch" })
    const onAnnouncement = (delivery: Delivery) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        const decoded = Option.flatMap(wire.decodeJson(delivery.body), decodeAnnouncement)
        if (Option.isSome(decoded)) {
          const { status, ...info } = decoded.value
          if (status === "down") table.delete(info.instanceId)
          else table.set(info.instanceId, { info, seen: now })
        }
        return delivery.ack
      })
    yield* consumer.deliveries.pipe(Stream.runForEach(onAnnouncement), Effect.forkScoped)
    return {
      instances: Effect.map(Clock.currentTimeMillis, (now) => {
        const live: Array<InstanceInfo> = []
        for (const [id, entry] of table) {
          if (now - entry.seen > ttl) table.delete(id)
          else live.push(entry.info)
        }
        return live.sort((a, b) => a.service === b.service ? a.since - b.since : a.service < b.service ? -1 : 1)
      })
    }
  })

// ---- internal ----

const declareExchange = (broker: Broker["Service"]) =>
  broker.declareExchange(topology.discoveryExchange, "topic", { durable: true })

const decodeDescriptionExit = Schema.decodeUnknownExit(Description)
const decodeDescription = (u: unknown): Option.Option<Description> => Exit.getSuccess(decodeDescriptionExit(u))
const decodeAnnouncementExit = Schema.decodeUnknownExit(Announcement)
const decodeAnnouncement = (u: unknown): Option.Option<Announcement> => Exit.getSuccess(decodeAnnouncementExit(u))

/** a standalone JSON Schema of a schema's JSON form; an unconstrained one when it cannot be made */
const toJsonSchema = (schema: Schema.Top): JsonSchema =>
  Option.getOrElse(jsonSchemaOf(schema), (): JsonSchema => ({}))

const jsonSchemaOf = Option.liftThrowable((schema: Schema.Top): JsonSchema => {
  const document = Schema.toJsonSchemaDocument(schema)
  const root = document.schema as JsonSchema
  return Object.keys(document.definitions).length === 0 ? root : { ...root, $defs: document.definitions }
})

// the entrypoint names of `Event.handle` / `Event.subscribe`: "event <source>.<type> (<delivery>[ <name>])"
const subscriptionPattern = /^event ([A-Za-z0-9_-]+)\.(\S+) \((pool|broadcast|singleton)\b/

const subscriptionOf = (name: string): ReadonlyArray<EventDescription> => {
  const match = subscriptionPattern.exec(name)
  return match === null ? [] : [{ source: match[1], type: match[2], delivery: match[3] }]
}
