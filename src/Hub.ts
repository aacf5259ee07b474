/**
 * The subscribe/broadcast hub: browsers (over WebSocket or SSE) subscribe to named channels; any
 * service, on any instance, broadcasts to a channel or sends to one socket, and the message reaches
 * every gateway instance that holds a subscriber, through the broker.
 *
 * Services only publish (`Hub.broadcast`, `Hub.unicast`: they need the `Broker`, not this module's
 * Layer). Gateways run `Hub.layer`: one private queue per gateway instance on the `mesh.hub` direct
 * exchange, bound to `channel.<name>` while a local socket listens to that channel, and to
 * `socket.<instance>` for messages sent to one of its sockets. A message for a channel nobody listens
 * to is dropped by the broker.
 *
 * ```ts
 * // in any service
 * yield* Hub.broadcast("orders", "order_placed", { id: "o-1" })
 * yield* Hub.unicast(socketId, "welcome", { text: "hi" })
 * ```
 *
 * @since 0.1.0
 */
import { Context, Effect, Layer, Option, Queue, Schema, Stream } from "effect"
import type { Scope } from "effect"
import { Rpc, RpcGroup } from "effect/rpc"
import { Broker } from "./Broker.ts"
import type { BrokerError } from "./Broker.ts"
import * as wire from "./internal/wire.ts"
import * as ServiceContract from "./ServiceContract.ts"

// ---- models ----

/**
 * A message pushed to sockets: the event's name and its JSON data; `channel` is set for broadcasts.
 *
 * @since 0.1.0
 */
export class Message extends Schema.Class<Message>("effect-mesh/Hub/Message")({
  channel: Schema.optionalKey(Schema.String),
  event: Schema.String,
  data: Schema.Json
}) {}

/**
 * One connected socket as the hub sees it: its id (what `unicast` takes), the messages meant for it
 * (its channels' broadcasts and its unicasts), and its channel subscriptions.
 *
 * @since 0.1.0
 */
export interface Connection {
  readonly socketId: string
  readonly messages: Stream.Stream<Message>
  /** resolves once the broker routes the channel's broadcasts to this instance */
  readonly subscribe: (channel: string) => Effect.Effect<void, BrokerError | InvalidChannel>
  readonly unsubscribe: (channel: string) => Effect.Effect<void, BrokerError>
  readonly channels: Effect.Effect<ReadonlyArray<string>>
}

/**
 * A channel name that cannot be routed: empty, longer than 200 characters, or with a character
 * outside letters, digits, `_`, `-`, `.`, `:`, `/`.
 *
 * @since 0.1.0
 */
export class InvalidChannel extends Schema.TaggedError<InvalidChannel>()("InvalidChannel", {
  channel: Schema.String
}) {
  override get message(): string {
    return `invalid channel name "${this.channel}"`
  }
}

/**
 * The hub as a contract for typed clients: `subscribe` streams a channel's broadcasts. Served by
 * `WebSocketGateway` at `<rpcPath>/hub`, so `ServiceClient.make(Hub.contract)` over
 * `WebSocketGateway.layerClient` gives a typed `Stream` of messages.
 *
 * @since 0.1.0
 */
export class HubRpcs extends RpcGroup.make(
  Rpc.make("subscribe", {
    payload: { channel: Schema.String },
    success: Message,
    error: InvalidChannel,
    stream: true
  })
) {}

/**
 * @since 0.1.0
 */
export const contract = ServiceContract.make("hub", HubRpcs)

/**
 * The hub of one gateway instance.
 *
 * @since 0.1.0
 */
export class Hub extends Context.Service<Hub, {
  /** unique per running hub; socket ids start with it */
  readonly instanceId: string
  /** registers a socket for as long as the scope lives */
  readonly connect: Effect.Effect<Connection, never, Scope.Scope>
  /**
   * listens to a channel for as long as the scope lives; the broadcasts are routed to this instance
   * once it succeeds
   */
  readonly subscribe: (channel: string) => Effect.Effect<Stream.Stream<Message>, BrokerError | InvalidChannel, Scope.Scope>
  /** a channel's broadcasts as a stream (an SSE response, a server-side listener) */
  readonly channel: (channel: string) => Stream.Stream<Message, BrokerError | InvalidChannel>
}>()("effect-mesh/Hub") {}

// ---- constructors ----

/**
 * Sends a message to every socket subscribed to a channel, on every gateway instance.
 *
 * @since 0.1.0
 */
export const broadcast = (
  channel: string,
  event: string,
  data: Schema.Json
): Effect.Effect<void, BrokerError | InvalidChannel, Broker> =>
  isValidChannel(channel)
    ? publish(channelKey(channel), { channel, event, data })
    : Effect.fail(new InvalidChannel({ channel }))

/**
 * Sends a message to one socket (as `connected` told it its `socket_id`), wherever it is connected.
 * A socket that is gone does not make this fail: the message is dropped.
 *
 * @since 0.1.0
 */
export const unicast = (socketId: string, event: string, data: Schema.Json): Effect.Effect<void, BrokerError, Broker> => {
  const instance = instanceOf(socketId)
  return instance === undefined ? Effect.void : publish(socketKey(instance), { socketId, event, data })
}

/**
 * Builds the hub of a gateway instance on the current broker: its private queue and the consumer
 * that dispatches what arrives to the local sockets.
 *
 * @since 0.1.0
 */
export const make: Effect.Effect<Hub["Service"], BrokerError, Broker | Scope.Scope> = Effect.gen(function*() {
  const broker = yield* Broker
  const instanceId = crypto.randomUUID()
  yield* broker.declareExchange(exchange, "direct", { durable: true })
  const queue = yield* broker.declareQueue("", { exclusive: true, autoDelete: true })
  yield* Effect.addFinalizer(() => Effect.ignore(broker.deleteQueue(queue)))
  yield* broker.bindQueue(queue, exchange, socketKey(instanceId))

  const sockets = new Map<string, Queue.Queue<Message>>()
  /** local listeners per channel: socket mailboxes and channel streams alike */
  const listeners = new Map<string, Set<Queue.Queue<Message>>>()
  let nextSocket = 0

  const dispatch = (envelope: Envelope): Effect.Effect<void> => {
    const message = new Message({
      ...(envelope.channel === undefined ? {} : { channel: envelope.channel }),
      event: envelope.event,
      data: envelope.data
    })
    if (envelope.socketId !== undefined) {
      const mailbox = sockets.get(envelope.socketId)
      return mailbox === undefined ? Effect.void : Effect.asVoid(Queue.offer(mailbox, message))
    }
    const targets = envelope.channel === undefined ? undefined : listeners.get(envelope.channel)
    return targets === undefined
      ? Effect.void
      : Effect.forEach(targets, (mailbox) => Queue.offer(mailbox, message), { discard: true })
  }

  const consumer = yield* broker.consume(queue, { prefetch: 256, tag: `hub-${instanceId}` })
  yield* consumer.deliveries.pipe(
    Stream.runForEach((delivery) =>
      Effect.andThen(
        Option.match(Option.flatMap(wire.decodeJson(delivery.body), decodeEnvelope), {
          onNone: () => Effect.logWarning("a hub message was not a valid envelope; dropped"),
          onSome: dispatch
        }),
        delivery.ack
      )
    ),
    Effect.catchCause((cause) => Effect.logError("the hub consumer stopped", cause)),
    Effect.forkScoped
  )

  // bindings follow the local listeners: bound with the first, unbound with the last
  const listen = (channel: string, mailbox: Queue.Queue<Message>): Effect.Effect<void, BrokerError | InvalidChannel> => {
    if (!isValidChannel(channel)) return Effect.fail(new InvalidChannel({ channel }))
    const existing = listeners.get(channel)
    if (existing !== undefined) {
      existing.add(mailbox)
      return Effect.void
    }
    const set = new Set([mailbox])
    listeners.set(channel, set)
    return broker.bindQueue(queue, exchange, channelKey(channel)).pipe(
      Effect.tapError(() => Effect.sync(() => listeners.delete(channel)))
    )
  }
  const unlisten = (channel: string, mailbox: Queue.Queue<Message>): Effect.Effect<void, BrokerError> => {
    const set = listeners.get(channel)
    if (set === undefined || !set.delete(mailbox)) return Effect.void
    if (set.size > 0) return Effect.void
    listeners.delete(channel)
    return broker.unbindQueue(queue, exchange, channelKey(channel))
  }

  const connect = Effect.gen(function*() {
    const socketId = `${instanceId}.${nextSocket++}`
    const mailbox = yield* Queue.unbounded<Message>()
    const own = new Set<string>()
    sockets.set(socketId, mailbox)
    yield* Effect.addFinalizer(() =>
      Effect.suspend(() => {
        sockets.delete(socketId)
        return Effect.forEach(own, (channel) => Effect.ignore(unlisten(channel, mailbox)), { discard: true })
      }).pipe(Effect.andThen(Queue.shutdown(mailbox)))
    )
    const connection: Connection = {
      socketId,
      messages: Stream.fromQueue(mailbox),
      subscribe: (channel) =>
        own.has(channel)
          ? Effect.void
          : Effect.tap(listen(channel, mailbox), () => Effect.sync(() => own.add(channel))),
      unsubscribe: (channel) =>
        Effect.suspend(() => own.delete(channel) ? unlisten(channel, mailbox) : Effect.void),
      channels: Effect.sync(() => Array.from(own))
    }
    return connection
  })

  const subscribe = (name: string) =>
    Effect.gen(function*() {
      const mailbox = yield* Effect.acquireRelease(
        Queue.unbounded<Message>(),
        (mailbox) => Effect.andThen(Effect.ignore(unlisten(name, mailbox)), Queue.shutdown(mailbox))
      )
      yield* listen(name, mailbox)
      return Stream.fromQueue(mailbox)
    })

  const channel = (name: string): Stream.Stream<Message, BrokerError | InvalidChannel> => Stream.unwrap(subscribe(name))

  return Hub.of({ instanceId, connect, subscribe, channel })
})

/**
 * Whether a channel name can be routed (see `InvalidChannel`).
 *
 * @since 0.1.0
 */
export const isValidChannel = (channel: string): boolean => channelPattern.test(channel)

/**
 * The hub as a Layer, for gateway processes.
 *
 * @since 0.1.0
 */
export const layer: Layer.Layer<Hub, BrokerError, Broker> = Layer.effect(Hub, make)

// ---- internal ----

const exchange = "mesh.hub"
const channelKey = (channel: string): string => `channel.${channel}`
const socketKey = (instance: string): string => `socket.${instance}`

const channelPattern = /^[A-Za-z0-9_\-.:/]{1,200}$/

/** a socket id is `<hub instance>.<n>` */
const instanceOf = (socketId: string): string | undefined => {
  const dot = socketId.lastIndexOf(".")
  return dot <= 0 ? undefined : socketId.slice(0, dot)
}

interface Envelope {
  readonly channel?: string | undefined
  readonly socketId?: string | undefined
  readonly event: string
  readonly data: Schema.Json
}

const EnvelopeSchema = Schema.Struct({
  channel: Schema.optionalKey(Schema.String),
  socketId: Schema.optionalKey(Schema.String),
  event: Schema.String,
  data: Schema.Json
})

const decodeEnvelope = (u: unknown): Option.Option<Envelope> => Schema.decodeUnknownOption(EnvelopeSchema)(u)

/** brokers on which this process has declared the exchange (publishing to a missing one is an error) */
const declared = new WeakSet<object>()

const publish = (routingKey: string, envelope: Envelope): Effect.Effect<void, BrokerError, Broker> =>
  Effect.flatMap(Broker, (broker) => {
    const send = broker.publish(exchange, routingKey, wire.encodeJson(envelope), { contentType: wire.contentType })
    if (declared.has(broker)) return send
    return broker.declareExchange(exchange, "direct", { durable: true }).pipe(
      Effect.tap(() => Effect.sync(() => declared.add(broker))),
      Effect.andThen(send)
    )
  })
