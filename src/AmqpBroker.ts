/**
 * The RabbitMQ `Broker`, over amqplib (wrapped in `internal/amqplib.ts`).
 *
 * One connection per broker, with `noDelay` always on (Nagle would stall every reply + ack pair) and
 * heartbeats. Channels: one for declarations, one for plain publishes, one in confirm mode for
 * `confirm` publishes, one per consumer (so prefetch is per consumer and closing it requeues its
 * unacked deliveries) and one per reply queue (RabbitMQ's direct reply-to, consumed and published on
 * the same channel; a second one in confirm mode once the reply queue makes a `confirm` publish). A
 * channel that a channel error closed (404, 406, ...) is opened again for the next operation.
 *
 * Several nodes of a cluster may be given (`url` a list, or URLs separated by commas): the broker
 * connects to the first that answers, starting from one picked at random (so that a fleet of
 * processes spreads over the nodes), and after losing a node tries the next ones in turn.
 *
 * amqplib does not recover from a lost connection, so this module does: when the connection drops,
 * it reconnects on a `Schedule` (to any of the nodes), declares again every exchange, queue and binding declared through
 * it, and re-attaches every consumer and reply queue, so their streams keep flowing. While the
 * connection is down, operations fail at once with `BrokerError` reason `Closed` (they do not wait),
 * but for a reply to a caller's direct reply-to address: it waits for the reconnection (up to the
 * connect timeout) and goes out on the new connection, since its caller still waits for it and the
 * address stays valid across a cluster as long as the caller's channel lives. On a cluster, the
 * request a reply answers may not come back to another instance until the lost node is back (a
 * quorum queue keeps what it delivered over a connection to a node it lost sight of):
 * without the reply, its caller would wait out its deadline;
 * deliveries received before the drop can no longer be settled (the broker redelivers them) and
 * replies in flight are lost: a reply queue says so with `Lost` when its channel closes. When the
 * schedule gives up, every stream fails with `Closed`.
 *
 * @since 0.1.0
 */
import { Cause, Channel, Config, Deferred, Duration, Effect, Exit, FiberSet, Layer, Metric, Queue, Redacted, Schedule, Scheduler, Schema, Semaphore, Stream } from "effect"
import type { Scope } from "effect"
import { identity } from "effect/Function"
import { isArrayNonEmpty as isNonEmpty, type NonEmptyReadonlyArray } from "effect/Array"
import type { ConnectionOptions } from "node:tls"
import {
  type BindingArguments,
  type Body,
  Broker,
  BrokerError,
  bytesOf,
  type ConsumeOptions,
  type Consumer,
  deathReasonHeader,
  deathTimeHeader,
  type Delivery,
  type ExchangeOptions,
  type ExchangeType,
  type HeaderValue,
  headersOf,
  invalidQueueOptions,
  type Incoming,
  type Properties,
  type PublishOptions,
  type QueueOptions,
  type ReplyQueue,
  type ReplyQueueOptions,
  type Returned
} from "./Broker.ts"
import * as Amqp from "./internal/amqplib.ts"
import * as Metrics from "./internal/metrics.ts"
import { redactUrl, splitUrls } from "./internal/redact.ts"
import * as Tls from "./internal/tls.ts"

/**
 * Options of the RabbitMQ broker.
 *
 * @since 0.1.0
 */
export interface Options {
  /**
   * `amqp://user:password@host:port/vhost` (or `amqps://`); for a cluster, one URL per node, as a list
   * or separated by commas (`amqp://...@rabbit-1,amqp://...@rabbit-2`)
   */
  readonly url: string | Redacted.Redacted<string> | NonEmptyReadonlyArray<string | Redacted.Redacted<string>>
  /** heartbeat interval in seconds (default: the URL's `heartbeat` parameter, else 10) */
  readonly heartbeat?: number | undefined
  /** TLS and socket options passed to the socket as they are (`noDelay` is always set) */
  readonly socketOptions?: ConnectionOptions | undefined
  /** how long a connection attempt may take (default 10 seconds) */
  readonly connectTimeout?: Duration.Input | undefined
  /** the connection's name in RabbitMQ's management UI (default "effect-mesh") */
  readonly connectionName?: string | undefined
  /**
   * retries of a lost connection (default: exponential from 100 ms, capped at 5 s, jittered,
   * forever); when it ends, the broker is closed for good
   */
  readonly reconnect?: Schedule.Schedule<unknown, BrokerError> | undefined
  /** retries of the first connection before `make` fails (default: the reconnect delays for 30 s) */
  readonly initialConnect?: Schedule.Schedule<unknown, BrokerError> | undefined
}

/**
 * Connects to RabbitMQ and builds the broker; it lives (and reconnects) until the scope closes.
 *
 * @since 0.1.0
 */
export const make = (options: Options): Effect.Effect<Broker["Service"], BrokerError, Scope.Scope> =>
  Effect.gen(function*() {
    const given: ReadonlyArray<string | Redacted.Redacted<string>> = typeof options.url === "string" || Redacted.isRedacted(options.url)
      ? [options.url]
      : options.url
    const rawUrls = given.flatMap((url) => splitUrls(Redacted.isRedacted(url) ? Redacted.value(url) : url))
    const nodes = yield* Effect.forEach(rawUrls, (url) => connectionUrl(url, options.heartbeat))
    if (!isNonEmpty(nodes)) {
      return yield* new BrokerError({ reason: "Transport", message: "no AMQP URL given" })
    }
    const heartbeat = Math.max(...nodes.map((node) => node.heartbeat))
    // every publish says who sends it (AMQP user_id), which RabbitMQ checks against the login; not
    // where the login is not the URL's (EXTERNAL credentials in the socket options)
    const external = options.socketOptions !== undefined && "credentials" in options.socketOptions
    const safeUrl = rawUrls.map(redactUrl).join(",")
    const socketOptions: Amqp.SocketOptions = {
      ...options.socketOptions,
      noDelay: true,
      timeout: Duration.toMillis(Duration.fromInputUnsafe(options.connectTimeout ?? "10 seconds")),
      clientProperties: { connection_name: options.connectionName ?? "effect-mesh" }
    }
    const reconnect = options.reconnect ?? defaultReconnect
    const replyGrace = Duration.fromInputUnsafe(options.connectTimeout ?? "10 seconds")
    /** several nodes: what only happens on a cluster is guarded against */
    const cluster = nodes.length > 1
    const initialConnect = options.initialConnect ?? Schedule.max([defaultReconnect, Schedule.during("30 seconds")])
    const run = yield* FiberSet.makeRuntime<never, unknown, unknown>()
    const state = new State()
    // the node of the first attempt, at random; after it, each attempt starts from the node after the last one
    state.next = Math.floor(Math.random() * nodes.length)
    let publisher: string | undefined = external ? undefined : nodes[state.next].user
    const log = (effect: Effect.Effect<void>) => {
      run(Effect.annotateLogs(effect, { broker: "amqp", url: safeUrl }))
    }

    // -- sessions (one per connection) --

    /** a connection to the first node that answers, trying each once from `state.next` */
    const connectAny: Effect.Effect<{ readonly connection: Amqp.Connection; readonly node: number }, BrokerError> = Effect
      .suspend(() => {
        const start = state.next
        const attempt = (i: number): Effect.Effect<{ readonly connection: Amqp.Connection; readonly node: number }, BrokerError> => {
          const node = (start + i) % nodes.length
          return Amqp.connect(nodes[node].url, socketOptions).pipe(
            Effect.map((connection) => ({ connection, node })),
            Effect.catch((error) =>
              i + 1 < nodes.length
                ? Effect.andThen(
                  Effect.logDebug(`could not connect to ${redactUrl(rawUrls[node])}: ${error.message}; trying the next node`),
                  attempt(i + 1)
                )
                : Effect.fail(error)
            )
          )
        }
        return attempt(0)
      })

    const openSession = Effect.gen(function*() {
      const { connection, node } = yield* connectAny
      // the next connection after this one is lost goes to the next node first
      state.next = (node + 1) % nodes.length
      if (!external) publisher = nodes[node].user
      const session = new Session(++state.sessions, connection, redactUrl(rawUrls[node]))
      yield* Amqp.onConnectionClose(connection, (error) => {
        session.down = true
        session.error = error
        if (state.session === session) state.ready = false
        Deferred.doneUnsafe(session.closed, Effect.void)
      })
      yield* Amqp.onBlocked(connection, (blocked, reason) =>
        log(
          blocked
            ? Effect.logWarning(`RabbitMQ blocked the connection (${reason}): publishes wait`)
            : Effect.logInfo("RabbitMQ unblocked the connection")
        ))
      return session
    })

    const readySession: Effect.Effect<Session, BrokerError> = Effect.suspend(() => {
      const session = state.session
      if (state.ready && session !== undefined && !session.down) return Effect.succeed(session)
      return Effect.fail(state.closedError())
    })

    /** the session; for a reply to a direct reply-to address, after the reconnection when it is under way */
    const awaitReady = (exchange: string, routingKey: string): Effect.Effect<Session, BrokerError> =>
      Effect.suspend(() => {
        if (state.ready || state.shutdown || state.fatal !== undefined || exchange !== "" || !routingKey.startsWith(directReplyPrefix)) {
          return readySession
        }
        return Deferred.await(state.recovered).pipe(
          Effect.timeoutOrElse({ duration: replyGrace, orElse: () => Effect.void }),
          Effect.andThen(readySession)
        )
      })

    const isCurrent = (session: Session): boolean => state.session === session && !session.down && !state.shutdown

    /** runs `f` on the declarations channel, once more on a fresh channel if a neighbour's error closed it */
    const opsOn = <A>(session: Session, f: (channel: Amqp.Channel) => Effect.Effect<A, BrokerError>) => {
      const attempt = Effect.flatMap(state.ops.get(session), f)
      return Effect.catch(
        attempt,
        (error) => error.reason === "Closed" && isCurrent(session) ? attempt : Effect.fail(error)
      )
    }
    const ops = <A>(f: (channel: Amqp.Channel) => Effect.Effect<A, BrokerError>): Effect.Effect<A, BrokerError> =>
      Effect.flatMap(readySession, (session) => opsOn(session, f))

    // -- topology --

    const declareExchangeOn = (session: Session, name: string, type: ExchangeType, options?: ExchangeOptions) =>
      opsOn(session, (channel) =>
        Amqp.assertExchange(channel, name, type, {
          durable: options?.durable === true,
          autoDelete: options?.autoDelete === true
        }))

    const declareQueueOn = (session: Session, name: string, options?: QueueOptions) =>
      opsOn(session, (channel) => Amqp.assertQueue(channel, name, queueArguments(options)))

    const bindOn = (session: Session, binding: Binding) =>
      opsOn(session, (channel) => Amqp.bindQueue(channel, binding.queue, binding.exchange, binding.pattern, binding.args))

    const declareExchange = (name: string, type: ExchangeType, options?: ExchangeOptions) =>
      Effect.flatMap(readySession, (session) =>
        Effect.tap(
          declareExchangeOn(session, name, type, options),
          () => Effect.sync(() => state.exchanges.set(name, { type, options }))
        ))

    const declareQueue = (name: string, options?: QueueOptions) =>
      Effect.flatMap(readySession, (session) => {
        const invalid = invalidQueueOptions(name, options)
        if (invalid !== undefined) return Effect.fail(new BrokerError({ reason: "Precondition", message: invalid }))
        // named here rather than by the broker: RabbitMQ refuses to declare its `amq.gen-` names again
        // after a reconnect, and ours can be
        const actual = name === "" ? `mesh.gen-${globalThis.crypto.randomUUID()}` : name
        return Effect.as(
          Effect.tap(declareQueueOn(session, actual, options), () => Effect.sync(() => state.queues.set(actual, options))),
          actual
        )
      })

    const deleteQueue = (name: string) =>
      Effect.tap(
        ops((channel) => Amqp.deleteQueue(channel, name)),
        () => Effect.sync(() => state.forgetQueue(name))
      )

    const checkQueue = (name: string) => ops((channel) => Amqp.checkQueue(channel, name))

    const bindQueue = (queue: string, exchange: string, pattern: string, args?: BindingArguments) =>
      Effect.flatMap(readySession, (session) => {
        const binding: Binding = { queue, exchange, pattern, args }
        return Effect.tap(bindOn(session, binding), () => Effect.sync(() => state.bindings.set(bindingKey(binding), binding)))
      })

    const unbindQueue = (queue: string, exchange: string, pattern: string, args?: BindingArguments) =>
      Effect.tap(
        ops((channel) => Amqp.unbindQueue(channel, queue, exchange, pattern, args)),
        () => Effect.sync(() => state.bindings.delete(bindingKey({ queue, exchange, pattern, args })))
      )

    // -- publishing --

    const publishPlain = (
      channel: Amqp.Channel,
      exchange: string,
      routingKey: string,
      body: Body,
      options: PublishOptions | undefined,
      replyTo: string | undefined
    ): Effect.Effect<void, BrokerError> =>
      Effect.flatMap(
        Amqp.publish(channel, exchange, routingKey, toBuffer(body), publishOptions(options, replyTo, body, publisher)),
        (written) => written ? Effect.void : Amqp.waitDrain(channel)
      )

    const publishConfirmed = (
      channel: Amqp.ConfirmChannel,
      trackers: Map<string, ReturnTracker>,
      exchange: string,
      routingKey: string,
      body: Body,
      options: PublishOptions,
      replyTo: string | undefined
    ): Effect.Effect<void, BrokerError> =>
      Effect.suspend(() => {
        const properties = publishOptions(options, replyTo, body, publisher)
        if (options.mandatory !== true) {
          // nothing can come back: the confirm alone says how it went
          return Amqp.publishConfirm(channel, exchange, routingKey, toBuffer(body), properties)
        }
        // the broker's basic.return comes before its confirm; the message id tells which publish it was
        let id = properties.messageId
        if (id === undefined) {
          id = globalThis.crypto.randomUUID()
          properties.messageId = id
        }
        const tracker: ReturnTracker = { returned: false }
        trackers.set(id, tracker)
        const untrack = Effect.sync(() => {
          if (trackers.get(id) === tracker) trackers.delete(id)
        })
        return Amqp.publishConfirm(channel, exchange, routingKey, toBuffer(body), properties).pipe(
          Effect.flatMap(() =>
            tracker.returned
              ? Effect.fail(
                new BrokerError({
                  reason: "Unroutable",
                  message: `no queue is bound for '${routingKey}' on exchange '${exchange}'`
                })
              )
              : Effect.void
          ),
          Effect.ensuring(untrack)
        )
      })

    const publish = (exchange: string, routingKey: string, body: Body, options?: PublishOptions): Effect.Effect<void, BrokerError> =>
      Effect.suspend(() => {
        // the common cases first, in as few steps as they take: connected, the channel open
        const session = state.session
        if (options?.confirm !== true && cluster && exchange === "" && routingKey.startsWith(directReplyPrefix)) {
          // on a cluster, a reply is confirmed before it counts as sent (and its request is acked):
          // RabbitMQ 3.10 closes the whole connection of a publisher that replies to a caller on a
          // node that is down (a crash in its direct reply-to), dropping the replies behind it on
          // other channels, while the acks of their requests may still go through; unconfirmed, the
          // request stays unacked and is redelivered
          return publish(exchange, routingKey, body, { ...options, confirm: true })
        }
        if (options?.confirm === true) {
          const confirms = state.confirms.channel
          if (
            state.ready && session !== undefined && !session.down && confirms !== undefined &&
            state.confirms.session === session && !Amqp.isClosed(confirms)
          ) {
            // no second try: a confirm lost with its channel leaves unknown whether the message went out
            return publishConfirmed(confirms, state.trackers, exchange, routingKey, body, options, undefined)
          }
          return publishSlow(exchange, routingKey, body, options)
        }
        const channel = state.plain.channel
        if (
          state.ready && session !== undefined && !session.down && channel !== undefined &&
          state.plain.session === session && !Amqp.isClosed(channel)
        ) {
          // a plain publish fails only before anything was written: safe to try once more on a fresh channel
          return Effect.catch(
            publishPlain(channel, exchange, routingKey, body, options, undefined),
            (error) =>
              error.reason === "Closed" && isCurrent(session)
                ? Effect.flatMap(state.plain.get(session), (fresh) => publishPlain(fresh, exchange, routingKey, body, options, undefined))
                : Effect.fail(error)
          )
        }
        return publishSlow(exchange, routingKey, body, options)
      })

    const publishSlow = (exchange: string, routingKey: string, body: Body, options?: PublishOptions) =>
      Effect.flatMap(awaitReady(exchange, routingKey), (session) => {
        if (options?.confirm === true) {
          // no second try here: a confirm lost with its channel leaves unknown whether the message went out
          return Effect.flatMap(
            state.confirms.get(session),
            (channel) => publishConfirmed(channel, state.trackers, exchange, routingKey, body, options, undefined)
          )
        }
        const attempt = Effect.flatMap(
          state.plain.get(session),
          (channel) => publishPlain(channel, exchange, routingKey, body, options, undefined)
        )
        // a plain publish fails only before anything was written: safe to try once more on a fresh channel
        return Effect.catch(
          attempt,
          (error) => error.reason === "Closed" && isCurrent(session) ? attempt : Effect.fail(error)
        )
      })

    // -- consumers --

    const failConsumer = (consumer: ConsumerState, error: BrokerError) =>
      Effect.sync(() => {
        consumer.cancelled = true
        Queue.failCauseUnsafe(consumer.mailbox, Cause.fail(error))
      })

    const onConsumerMessage = (consumer: ConsumerState, channel: Amqp.Channel, raw: Amqp.RawMessage | null) => {
      if (raw === null) {
        // the broker cancelled the consumer (its queue was deleted): the stream ends after what it holds
        consumer.cancelled = true
        Queue.endUnsafe(consumer.mailbox)
        return
      }
      if (consumer.closed) return
      const delivery = new AmqpDelivery(channel, raw)
      if (delivery.redelivered) consumer.redelivered()
      if (!consumer.cancelled && consumer.options.take?.(delivery) === true) return
      if (!Queue.offerUnsafe(consumer.mailbox, [delivery])) {
        // arrived after a cancel: hand it back at once rather than hold it until the scope closes
        Amqp.requeueUnsafe(channel, raw)
      }
    }

    const attachConsumer = (consumer: ConsumerState, session: Session): Effect.Effect<void, BrokerError> =>
      consumer.lock.withPermit(Effect.suspend(() => {
        if (consumer.cancelled || consumer.closed) return Effect.void
        const current = consumer.channel
        if (consumer.session === session && current !== undefined && !Amqp.isClosed(current)) return Effect.void
        return Effect.gen(function*() {
          // deliveries of a lost channel can no longer be settled: the broker redelivers them
          yield* Effect.ignore(Queue.clear(consumer.mailbox))
          const channel = yield* Amqp.createChannel(session.connection)
          yield* Effect.gen(function*() {
            yield* Amqp.prefetch(channel, consumer.options.prefetch)
            const tag = yield* Amqp.consume(
              channel,
              consumer.queue,
              (raw) => onConsumerMessage(consumer, channel, raw),
              { noAck: false, consumerTag: consumer.options.tag }
            )
            if (consumer.closed || consumer.cancelled) {
              // the scope closed (or cancel ran) while this re-attach was under way
              yield* closeQuietly(channel)
              return
            }
            consumer.channel = channel
            consumer.session = session
            consumer.tag = tag
            yield* Amqp.onChannelClose(channel, (error) => onConsumerChannelClose(consumer, channel, session, error))
          }).pipe(Effect.onError(() => Effect.ignore(Amqp.closeChannel(channel))))
        })
      }))

    const onConsumerChannelClose = (
      consumer: ConsumerState,
      channel: Amqp.Channel,
      session: Session,
      error: Error | undefined
    ) => {
      if (consumer.channel !== channel) return
      consumer.channel = undefined
      consumer.tag = undefined
      if (consumer.closed || consumer.cancelled || !isCurrent(session)) return
      // the connection closes its channels before it reports its own closure: look again a moment later
      run(Effect.andThen(
        Effect.yieldNow,
        Effect.suspend(() => {
          if (consumer.closed || consumer.cancelled || !isCurrent(session)) return Effect.void
          return Effect.logWarning(
            `the channel of the consumer of '${consumer.queue}' closed (${error?.message ?? "no reason"}): re-attaching`
          ).pipe(
            Effect.andThen(attachConsumer(consumer, session)),
            Effect.catch((e) => isCurrent(session) ? failConsumer(consumer, e) : Effect.void),
            Effect.annotateLogs({ broker: "amqp" })
          )
        })
      ))
    }

    const closeConsumer = (consumer: ConsumerState) =>
      Effect.suspend(() => {
        consumer.closed = true
        state.consumers.delete(consumer)
        state.forgetIfAutoDeleted(consumer.queue)
        Queue.endUnsafe(consumer.mailbox)
        const channel = consumer.channel
        consumer.channel = undefined
        // closing the channel makes RabbitMQ requeue what the consumer had not settled
        return channel === undefined ? Effect.void : closeQuietly(channel)
      })

    const cancelConsumer = (consumer: ConsumerState) =>
      Effect.suspend(() => {
        if (consumer.cancelled || consumer.closed) return Effect.void
        consumer.cancelled = true
        Queue.endUnsafe(consumer.mailbox)
        const channel = consumer.channel
        const tag = consumer.tag
        if (channel === undefined || tag === undefined) return Effect.void
        // basic.cancel only: the channel stays open so that deliveries already received can be settled
        return Effect.ignore(Effect.timeout(Amqp.cancel(channel, tag), "5 seconds"))
      })

    const consume = (queue: string, options: ConsumeOptions): Effect.Effect<Consumer, BrokerError, Scope.Scope> =>
      Effect.gen(function*() {
        const session = yield* readySession
        const mailbox = yield* Queue.unbounded<NonEmptyReadonlyArray<Delivery>, BrokerError | Cause.Done>().pipe(
          Effect.provideService(Scheduler.Scheduler, wakeInline)
        )
        const consumer = new ConsumerState(queue, options, mailbox, Metrics.redelivery("rabbitmq", queue, yield* Effect.context()))
        yield* Effect.acquireRelease(
          Effect.sync(() => state.consumers.add(consumer)).pipe(
            Effect.andThen(attachConsumer(consumer, session)),
            Effect.tapError(() => Effect.sync(() => state.consumers.delete(consumer)))
          ),
          () => closeConsumer(consumer)
        )
        return {
          // one delivery per pull, so `Stream.take(n)` never swallows buffered deliveries
          deliveries: Stream.fromChannel(Channel.fromQueue(mailbox)),
          cancel: cancelConsumer(consumer)
        }
      })

    // -- reply queues --

    const failReply = (reply: ReplyState, error: BrokerError) =>
      Effect.sync(() => {
        reply.closed = true
        Queue.failCauseUnsafe(reply.mailbox, Cause.fail(error))
      })

    const onReplyReturn = (reply: ReplyState, raw: Amqp.RawMessage) => {
      const id = raw.properties.messageId
      const tracker = typeof id === "string" ? reply.trackers.get(id) : undefined
      if (tracker !== undefined) {
        tracker.returned = true
        return
      }
      offerIncoming(reply, { _tag: "Returned", message: toReturned(raw) })
    }

    const offerIncoming = (reply: ReplyState, incoming: Incoming) => {
      if (reply.closed || reply.take?.(incoming) !== true) Queue.offerUnsafe(reply.mailbox, [incoming])
    }

    const attachReply = (reply: ReplyState, session: Session): Effect.Effect<void, BrokerError> =>
      reply.lock.withPermit(Effect.suspend(() => {
        if (reply.closed) return Effect.void
        const current = reply.channel
        if (reply.session === session && current !== undefined && !Amqp.isClosed(current)) return Effect.void
        return Effect.gen(function*() {
          const channel = yield* Amqp.createChannel(session.connection)
          yield* Effect.gen(function*() {
            yield* listenForReplies(reply, channel)
            if (reply.closed) {
              yield* closeQuietly(channel)
              return
            }
            reply.channel = channel
            reply.session = session
            yield* Amqp.onChannelClose(channel, (error) => onReplyChannelClose(reply, channel, session, error))
          }).pipe(Effect.onError(() => Effect.ignore(Amqp.closeChannel(channel))))
        })
      }))

    // direct reply-to: consume (no acks) before the first publish, on the channel that publishes
    const listenForReplies = (reply: ReplyState, channel: Amqp.Channel) =>
      Effect.andThen(
        Amqp.onReturn(channel, (raw) => onReplyReturn(reply, raw)),
        Amqp.consume(channel, directReplyTo, (raw) => {
          if (raw !== null) offerIncoming(reply, { _tag: "Reply", message: toMessage(raw) })
        }, { noAck: true })
      )

    /**
     * The reply queue's confirm channel, opened at its first confirmed publish: the reply queue's own
     * channel is a plain one, because in confirm mode the broker answers every request with a
     * `basic.ack` as well (one more wake-up of the caller per call, ~30% more client CPU at one call
     * in flight). It has a direct reply-to consumer of its own, into the same mailbox: replies go to
     * the channel that published the request.
     */
    const replyConfirms = (reply: ReplyState) =>
      new Slot((session) =>
        Effect.gen(function*() {
          const channel = yield* Amqp.createConfirmChannel(session.connection)
          yield* listenForReplies(reply, channel).pipe(Effect.onError(() => Effect.ignore(Amqp.closeChannel(channel))))
          if (reply.closed) {
            yield* closeQuietly(channel)
            return yield* Effect.fail(state.closedError())
          }
          return channel
        })
      )

    const onReplyChannelClose = (reply: ReplyState, channel: Amqp.Channel, session: Session, error: Error | undefined) => {
      if (reply.channel !== channel) return
      reply.channel = undefined
      if (reply.closed) return
      // said in the close callback itself, before anything can publish on a channel attached after it
      // (amqplib closes every channel of a lost connection this way, before the connection's own close)
      offerIncoming(reply, lost)
      if (!isCurrent(session)) return
      run(Effect.andThen(
        Effect.yieldNow,
        Effect.suspend(() => {
          if (reply.closed || !isCurrent(session)) return Effect.void
          return Effect.logWarning(
            `the reply queue's channel closed (${error?.message ?? "no reason"}): re-attaching; replies in flight are lost`
          ).pipe(
            Effect.andThen(attachReply(reply, session)),
            Effect.catch((e) => isCurrent(session) ? failReply(reply, e) : Effect.void),
            Effect.annotateLogs({ broker: "amqp" })
          )
        })
      ))
    }

    const closeReply = (reply: ReplyState) =>
      Effect.suspend(() => {
        reply.closed = true
        state.replies.delete(reply)
        Queue.endUnsafe(reply.mailbox)
        const channel = reply.channel
        const confirms = reply.confirms.channel
        reply.channel = undefined
        return Effect.andThen(
          channel === undefined ? Effect.void : closeQuietly(channel),
          confirms === undefined ? Effect.void : closeQuietly(confirms)
        )
      })

    const replyPublish = (reply: ReplyState) =>
    (
      exchange: string,
      routingKey: string,
      body: Body,
      options?: PublishOptions
    ): Effect.Effect<void, BrokerError> =>
      Effect.suspend(() => {
        const channel = reply.channel
        const session = reply.session
        if (reply.closed || channel === undefined || session === undefined || !isCurrent(session) || !state.ready) {
          return Effect.fail(state.closedError())
        }
        return options?.confirm === true
          ? Effect.flatMap(
            reply.confirms.get(session),
            (confirms) => publishConfirmed(confirms, reply.trackers, exchange, routingKey, body, options, directReplyTo)
          )
          : publishPlain(channel, exchange, routingKey, body, options, directReplyTo)
      })

    const replyQueue = (options?: ReplyQueueOptions): Effect.Effect<ReplyQueue, BrokerError, Scope.Scope> =>
      Effect.gen(function*() {
        const session = yield* readySession
        const mailbox = yield* Queue.unbounded<NonEmptyReadonlyArray<Incoming>, BrokerError | Cause.Done>().pipe(
          Effect.provideService(Scheduler.Scheduler, wakeInline)
        )
        const reply: ReplyState = new ReplyState(mailbox, (self) => replyConfirms(self), options?.take)
        yield* Effect.acquireRelease(
          Effect.sync(() => state.replies.add(reply)).pipe(
            Effect.andThen(attachReply(reply, session)),
            Effect.tapError(() => Effect.sync(() => state.replies.delete(reply)))
          ),
          () => closeReply(reply)
        )
        return {
          address: directReplyTo,
          publish: replyPublish(reply),
          incoming: Stream.fromChannel(Channel.fromQueue(mailbox))
        }
      })

    // -- recovery --

    const recover = (session: Session) =>
      Effect.gen(function*() {
        const warn = (what: string) => (error: BrokerError) =>
          Effect.logWarning(`after reconnecting, ${what} failed: ${error.message}`)
        for (const [name, exchange] of state.exchanges) {
          yield* declareExchangeOn(session, name, exchange.type, exchange.options).pipe(
            Effect.catch(warn(`declaring exchange '${name}'`))
          )
        }
        for (const [name, options] of state.queues) {
          yield* declareQueueOn(session, name, options).pipe(
            // an exclusive queue stays locked by the old connection until RabbitMQ notices it is gone
            // (at once after a clean close, within two heartbeats after a lost network)
            options?.exclusive === true
              ? Effect.retry({
                schedule: Schedule.max([Schedule.spaced("500 millis"), Schedule.during(Duration.seconds(3 * heartbeat + 5))]),
                while: (error) => error.reason === "Precondition"
              })
              : identity,
            Effect.catch(warn(`declaring queue '${name}'`))
          )
        }
        for (const binding of state.bindings.values()) {
          yield* bindOn(session, binding).pipe(
            Effect.catch(warn(`binding '${binding.queue}' to '${binding.exchange}'`))
          )
        }
        for (const reply of state.replies) {
          yield* attachReply(reply, session).pipe(
            Effect.catch((error) => session.down ? Effect.fail(error) : failReply(reply, error))
          )
        }
        for (const consumer of state.consumers) {
          yield* attachConsumer(consumer, session).pipe(
            Effect.catch((error) => session.down ? Effect.fail(error) : failConsumer(consumer, error))
          )
        }
        if (session.down) {
          return yield* new BrokerError({
            reason: "Closed",
            message: "the connection dropped while recovering",
            cause: session.error
          })
        }
        state.ready = true
        Deferred.doneUnsafe(state.recovered, Effect.void)
      })

    const giveUp = (error: BrokerError) =>
      Effect.gen(function*() {
        state.fatal = new BrokerError({
          reason: "Closed",
          message: `gave up reconnecting to RabbitMQ at ${safeUrl}: ${error.message}`,
          cause: error
        })
        state.ready = false
        Deferred.doneUnsafe(state.recovered, Effect.void)
        yield* Effect.logError(state.fatal.message)
        for (const consumer of state.consumers) yield* failConsumer(consumer, state.fatal)
        for (const reply of state.replies) yield* failReply(reply, state.fatal)
      })

    const supervise = (first: Session): Effect.Effect<void> =>
      Effect.gen(function*() {
        let session = first
        while (true) {
          yield* Deferred.await(session.closed)
          state.ready = false
          state.recovered = Deferred.makeUnsafe<void>()
          yield* Effect.logWarning(
            `lost the connection to RabbitMQ (${session.error?.message ?? "closed"}): reconnecting`
          )
          const next = yield* openSession.pipe(
            Effect.tapError((error) => Effect.logDebug(`reconnect attempt failed: ${error.message}`)),
            Effect.retry(reconnect)
          )
          state.session = next
          const recovered = yield* Effect.exit(recover(next))
          if (Exit.isSuccess(recovered)) {
            yield* Metric.update(Metrics.reconnects, 1)
            yield* Effect.logInfo(`reconnected to RabbitMQ at ${next.node}; topology, consumers and reply queues restored`)
          } else if (!next.down) {
            // something other than the connection failed: start over on a fresh connection
            yield* Effect.logWarning(`recovery failed (${Cause.pretty(recovered.cause)}): reconnecting again`)
            yield* Effect.ignore(Effect.timeout(Amqp.closeConnection(next.connection), "5 seconds"))
          }
          session = next
        }
      }).pipe(
        Effect.catch(giveUp),
        Effect.annotateLogs({ broker: "amqp", url: safeUrl })
      )

    // -- lifecycle --

    const first = yield* openSession.pipe(
      Effect.tapError((error) => Effect.logDebug(`connect attempt failed: ${error.message}`)),
      // a refused login or TLS handshake does not mend by itself: said at once
      Effect.retry({ schedule: initialConnect, while: (error) => error.reason !== "Tls" && error.reason !== "AccessRefused" }),
      Effect.mapError((error) =>
        new BrokerError({
          reason: error.reason,
          message: `could not connect to ${safeUrl}: ${error.message}`,
          cause: error.cause
        })
      )
    )
    state.session = first
    state.ready = true
    yield* Effect.addFinalizer(() =>
      Effect.suspend(() => {
        state.shutdown = true
        state.ready = false
        Deferred.doneUnsafe(state.recovered, Effect.void)
        for (const consumer of state.consumers) Queue.endUnsafe(consumer.mailbox)
        for (const reply of state.replies) Queue.endUnsafe(reply.mailbox)
        const session = state.session
        return session === undefined || session.down
          ? Effect.void
          : Effect.ignore(Effect.timeout(Amqp.closeConnection(session.connection), "5 seconds"))
      })
    )
    yield* Effect.forkScoped(supervise(first))

    return Broker.of({
      kind: "amqp",
      ready: Effect.sync(() => state.ready),
      declareExchange,
      declareQueue,
      deleteQueue,
      checkQueue,
      bindQueue,
      unbindQueue,
      publish,
      consume,
      replyQueue
    })
  })

/**
 * The RabbitMQ broker as a layer.
 *
 * @since 0.1.0
 */
export const layer = (options: Options): Layer.Layer<Broker, BrokerError> => Layer.effect(Broker, make(options))

/**
 * Where RabbitMQ is, from the configuration: `AMQP_URLS` (a list in a config file, `amqp.urls`, or
 * URLs separated by commas in the environment), else `AMQP_URL` (one URL, or several separated by
 * commas), one URL per node of a cluster. Redacted; the nodes' URLs as one comma-separated list.
 *
 * @since 0.1.0
 */
export const urlConfig: Config.Config<Redacted.Redacted<string>> = Config.Array(Schema.String, "AMQP_URLS").pipe(
  Config.map((urls) => Redacted.make(urls.join(","))),
  Config.orElse(() => Config.Redacted("AMQP_URL"))
)

/**
 * The RabbitMQ broker configured from `AMQP_URL` or `AMQP_URLS` (`urlConfig`: required, redacted; a
 * cluster's nodes), `AMQP_HEARTBEAT` (seconds,
 * default 10), `AMQP_CONNECTION_NAME`, `AMQP_CONNECT_TIMEOUT` (default 10 seconds) and
 * `AMQP_RECONNECT_MAX_DELAY` (the cap of the exponential reconnect delays, default 5 seconds). TLS, for
 * an `amqps://` URL: `AMQP_TLS_CA` (the CA certificate file the broker's certificate must be signed
 * by; default: node's trusted CAs), `AMQP_TLS_CERT` and `AMQP_TLS_KEY` (a client certificate and its
 * key, files, for mutual TLS), `AMQP_TLS_KEY_PASSPHRASE` (redacted) and `AMQP_TLS_SERVER_NAME` (the
 * name the broker's certificate must be for, when not the URL's host). A TLS setting with an
 * `amqp://` URL, an unreadable file or a failed handshake is a `BrokerError` with reason `Tls`.
 *
 * @since 0.1.0
 */
export const layerConfig: Layer.Layer<Broker, BrokerError | Config.ConfigError> = Layer.effect(
  Broker,
  Effect.gen(function*() {
    const url = yield* urlConfig
    const heartbeat = yield* Config.Int("AMQP_HEARTBEAT").pipe(Config.withDefault(10))
    const connectionName = yield* Config.String("AMQP_CONNECTION_NAME").pipe(Config.withDefault("effect-mesh"))
    const connectTimeout = yield* Config.Duration("AMQP_CONNECT_TIMEOUT").pipe(
      Config.withDefault(Duration.seconds(10))
    )
    const maxDelay = yield* Config.Duration("AMQP_RECONNECT_MAX_DELAY").pipe(Config.withDefault(Duration.seconds(5)))
    const socketOptions = yield* Tls.socketOptions(yield* Tls.config, Redacted.value(url))
    return yield* make({ url, heartbeat, connectionName, connectTimeout, socketOptions, reconnect: reconnectSchedule(maxDelay) })
  })
)

/**
 * Exponential reconnect delays from 100 ms, capped at `maxDelay`, jittered, forever.
 *
 * @since 0.1.0
 */
export const reconnectSchedule = (maxDelay: Duration.Input): Schedule.Schedule<Duration.Duration> =>
  Schedule.jittered(Schedule.min([Schedule.exponential("100 millis"), Schedule.spaced(maxDelay)]))

// ---- internal ----

const defaultReconnect = reconnectSchedule("5 seconds")

/**
 * The dispatcher of the consumer and reply mailboxes: a message offered from amqplib's callback wakes
 * the fiber waiting for it in a microtask, in the same turn of the event loop, rather than in a
 * `setImmediate` one turn later (the default). Only wake-ups go through it; the fibers themselves keep
 * the default scheduler, so they still yield to I/O after their usual budget of steps.
 */
const wakeInline = new Scheduler.MixedScheduler("sync")

const directReplyTo = "amq.rabbitmq.reply-to"

/** where a reply to a direct reply-to address goes: RabbitMQ's name of the caller's channel after this */
const directReplyPrefix = `${directReplyTo}.`

const lost: Incoming = { _tag: "Lost" }

type MutableProperties = { -readonly [K in keyof Properties]: Properties[K] }

interface Binding {
  readonly queue: string
  readonly exchange: string
  readonly pattern: string
  readonly args?: BindingArguments | undefined
}

/** a binding's identity: its queue, exchange, pattern and arguments (two differing in them are two, as in RabbitMQ) */
const bindingKey = (binding: Binding): string => {
  const args = binding.args
  const argsKey = args === undefined ? "" : JSON.stringify(Object.keys(args).sort().map((key) => [key, args[key]]))
  return `${binding.queue}\u0000${binding.exchange}\u0000${binding.pattern}\u0000${argsKey}`
}

interface ReturnTracker {
  returned: boolean
}

class Session {
  readonly closed = Deferred.makeUnsafe<void>()
  down = false
  error: Error | undefined = undefined
  readonly id: number
  readonly connection: Amqp.Connection
  /** the node's URL, its password masked */
  readonly node: string
  constructor(id: number, connection: Amqp.Connection, node: string) {
    this.id = id
    this.connection = connection
    this.node = node
  }
}

/** a lazily opened channel per session, opened again after it closed */
class Slot<C extends Amqp.Channel> {
  channel: C | undefined = undefined
  session: Session | undefined = undefined
  opening: Deferred.Deferred<C, BrokerError> | undefined = undefined
  openingSession: Session | undefined = undefined
  readonly open: (session: Session) => Effect.Effect<C, BrokerError>
  constructor(open: (session: Session) => Effect.Effect<C, BrokerError>) {
    this.open = open
  }

  get(session: Session): Effect.Effect<C, BrokerError> {
    const channel = this.channel
    if (channel !== undefined && this.session === session && !Amqp.isClosed(channel)) return Effect.succeed(channel)
    return Effect.suspend(() => {
      if (this.opening !== undefined && this.openingSession === session) return Deferred.await(this.opening)
      const deferred = Deferred.makeUnsafe<C, BrokerError>()
      this.opening = deferred
      this.openingSession = session
      return Effect.uninterruptible(Effect.onExit(this.open(session), (exit) =>
        Effect.sync(() => {
          if (this.opening === deferred) this.opening = undefined
          if (Exit.isSuccess(exit)) {
            this.channel = exit.value
            this.session = session
          }
          Deferred.doneUnsafe(deferred, exit)
        })))
    })
  }
}

class ConsumerState {
  channel: Amqp.Channel | undefined = undefined
  session: Session | undefined = undefined
  tag: string | undefined = undefined
  cancelled = false
  closed = false
  readonly lock = Semaphore.makeUnsafe(1)
  readonly queue: string
  readonly options: ConsumeOptions
  readonly mailbox: Queue.Queue<NonEmptyReadonlyArray<Delivery>, BrokerError | Cause.Done>
  /** counts a redelivered delivery (internal/metrics.ts) */
  readonly redelivered: () => void
  constructor(
    queue: string,
    options: ConsumeOptions,
    mailbox: Queue.Queue<NonEmptyReadonlyArray<Delivery>, BrokerError | Cause.Done>,
    redelivered: () => void
  ) {
    this.queue = queue
    this.options = options
    this.mailbox = mailbox
    this.redelivered = redelivered
  }
}

class ReplyState {
  channel: Amqp.Channel | undefined = undefined
  session: Session | undefined = undefined
  closed = false
  readonly lock = Semaphore.makeUnsafe(1)
  readonly trackers = new Map<string, ReturnTracker>()
  readonly mailbox: Queue.Queue<NonEmptyReadonlyArray<Incoming>, BrokerError | Cause.Done>
  readonly confirms: Slot<Amqp.ConfirmChannel>
  readonly take: ((incoming: Incoming) => boolean) | undefined
  constructor(
    mailbox: Queue.Queue<NonEmptyReadonlyArray<Incoming>, BrokerError | Cause.Done>,
    confirms: (self: ReplyState) => Slot<Amqp.ConfirmChannel>,
    take: ((incoming: Incoming) => boolean) | undefined
  ) {
    this.mailbox = mailbox
    this.confirms = confirms(this)
    this.take = take
  }
}

class State {
  sessions = 0
  /** the node the next connection attempt starts from */
  next = 0
  session: Session | undefined = undefined
  /** connected, with topology, consumers and reply queues restored */
  ready = false
  /** done when `ready` is true again after a lost connection (or the broker gave up or shut down) */
  recovered = Deferred.makeUnsafe<void>()
  shutdown = false
  fatal: BrokerError | undefined = undefined
  readonly exchanges = new Map<string, { readonly type: ExchangeType; readonly options: ExchangeOptions | undefined }>()
  readonly queues = new Map<string, QueueOptions | undefined>()
  readonly bindings = new Map<string, Binding>()
  readonly consumers = new Set<ConsumerState>()
  readonly replies = new Set<ReplyState>()
  readonly trackers = new Map<string, ReturnTracker>()
  readonly ops = new Slot((session) => Amqp.createChannel(session.connection))
  readonly plain = new Slot((session) => Amqp.createChannel(session.connection))
  readonly confirms = new Slot((session) =>
    Effect.tap(Amqp.createConfirmChannel(session.connection), (channel) =>
      Amqp.onReturn(channel, (raw) => {
        const id = raw.properties.messageId
        const tracker = typeof id === "string" ? this.trackers.get(id) : undefined
        if (tracker !== undefined) tracker.returned = true
      }))
  )

  forgetQueue(name: string): void {
    this.queues.delete(name)
    for (const [key, binding] of this.bindings) {
      if (binding.queue === name) this.bindings.delete(key)
    }
  }

  /**
   * RabbitMQ deletes an auto-delete queue with its last consumer: once ours are gone, do not declare
   * it again after a reconnect (consumers on other connections declare it themselves)
   */
  forgetIfAutoDeleted(queue: string): void {
    if (this.queues.get(queue)?.autoDelete !== true) return
    for (const consumer of this.consumers) {
      if (consumer.queue === queue) return
    }
    this.forgetQueue(queue)
  }

  closedError(): BrokerError {
    if (this.fatal !== undefined) return this.fatal
    if (this.shutdown) return new BrokerError({ reason: "Closed", message: "the RabbitMQ broker is shut down" })
    return new BrokerError({
      reason: "Closed",
      message: "the connection to RabbitMQ is down; reconnecting",
      cause: this.session?.error
    })
  }
}

class AmqpDelivery implements Delivery {
  readonly body: Uint8Array
  readonly exchange: string
  readonly routingKey: string
  readonly properties: Properties
  readonly redelivered: boolean
  readonly deliveryCount: number
  readonly channel: Amqp.Channel
  readonly raw: Amqp.RawMessage
  settled = false

  constructor(channel: Amqp.Channel, raw: Amqp.RawMessage) {
    this.channel = channel
    this.raw = raw
    this.body = raw.content
    this.exchange = raw.fields.exchange
    this.routingKey = raw.fields.routingKey
    this.properties = toProperties(raw)
    this.redelivered = raw.fields.redelivered
    const count: unknown = raw.properties.headers?.["x-delivery-count"]
    this.deliveryCount = typeof count === "number" ? count : raw.fields.redelivered ? 1 : 0
  }

  // settling twice would be a channel error on RabbitMQ (unknown delivery tag): the second is a no-op
  get ack(): Effect.Effect<void> {
    return Effect.sync(() => {
      if (this.settled) return
      this.settled = true
      Amqp.ackUnsafe(this.channel, this.raw)
    })
  }

  get nack(): (requeue: boolean) => Effect.Effect<void> {
    return (requeue) =>
      Effect.suspend(() => {
        if (this.settled) return Effect.void
        this.settled = true
        return Amqp.nack(this.channel, this.raw, requeue)
      })
  }
}

const closeQuietly = (channel: Amqp.Channel): Effect.Effect<void> =>
  Effect.ignore(Effect.timeout(Amqp.closeChannel(channel), "5 seconds"))

/** the URL with its `heartbeat` parameter set, and that heartbeat in seconds */
const connectionUrl = (
  url: string,
  heartbeat: number | undefined
): Effect.Effect<{ readonly url: string; readonly heartbeat: number; readonly user: string }, BrokerError> =>
  Effect.suspend(() => {
    if (!URL.canParse(url)) {
      return Effect.fail(new BrokerError({ reason: "Transport", message: `not an AMQP URL: ${redactUrl(url)}` }))
    }
    const parsed = new URL(url)
    const fromUrl = Number(parsed.searchParams.get("heartbeat") ?? Number.NaN)
    const seconds = heartbeat ?? (Number.isFinite(fromUrl) ? fromUrl : 10)
    parsed.searchParams.set("heartbeat", String(seconds))
    // the user amqplib logs in as: the URL's (unescaped as amqplib does), else its default
    const user = parsed.username === "" && parsed.password === "" ? "guest" : unescape(parsed.username)
    return Effect.succeed({ url: parsed.toString(), heartbeat: seconds, user })
  })

/** RabbitMQ takes bytes: a `LocalBody` is made into its bytes here */
const toBuffer = (body: Body): Buffer => {
  const bytes = bytesOf(body)
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
}

const queueArguments = (options: QueueOptions | undefined): Amqp.QueueOptions => {
  if (options === undefined) return { durable: false, exclusive: false, autoDelete: false }
  const args: Record<string, HeaderValue> = {}
  const result: Amqp.QueueOptions = {
    // quorum queues are always durable
    durable: options.durable === true || options.type === "quorum",
    exclusive: options.exclusive === true,
    autoDelete: options.autoDelete === true,
    arguments: args
  }
  if (options.type !== undefined) args["x-queue-type"] = options.type
  if (options.deliveryLimit !== undefined) {
    // RabbitMQ dead-letters when the count of *re*deliveries exceeds the limit; ours counts deliveries
    args["x-delivery-limit"] = Math.max(0, Math.floor(options.deliveryLimit) - 1)
  }
  if (options.singleActiveConsumer === true) args["x-single-active-consumer"] = true
  if (options.deadLetterExchange !== undefined) result.deadLetterExchange = options.deadLetterExchange
  if (options.deadLetterRoutingKey !== undefined) result.deadLetterRoutingKey = options.deadLetterRoutingKey
  if (options.messageTtl !== undefined) result.messageTtl = Math.max(0, Math.floor(options.messageTtl))
  if (options.maxLength !== undefined) {
    result.maxLength = Math.max(0, Math.floor(options.maxLength))
    args["x-overflow"] = "drop-head"
  }
  if (options.expires !== undefined) result.expires = Math.max(1, Math.floor(options.expires))
  return result
}

const publishOptions = (
  options: PublishOptions | undefined,
  replyTo: string | undefined,
  body: Body,
  publisher: string | undefined
): Amqp.PublishOptions => {
  const result: Amqp.PublishOptions = {}
  const headers = headersOf(body, options)
  if (headers !== undefined) result.headers = headers
  if (options === undefined) {
    if (replyTo !== undefined) result.replyTo = replyTo
    if (publisher !== undefined) result.userId = publisher
    return result
  }
  const userId = options.userId ?? publisher
  if (userId !== undefined) result.userId = userId
  if (options.mandatory === true) result.mandatory = true
  if (options.contentType !== undefined) result.contentType = options.contentType
  if (options.correlationId !== undefined) result.correlationId = options.correlationId
  if (options.replyTo !== undefined) result.replyTo = options.replyTo
  else if (replyTo !== undefined) result.replyTo = replyTo
  if (options.messageId !== undefined) result.messageId = options.messageId
  if (options.type !== undefined) result.type = options.type
  if (options.expiration !== undefined) result.expiration = String(Math.max(0, Math.floor(options.expiration)))
  if (options.persistent === true) result.persistent = true
  return result
}

const toProperties = (raw: Amqp.RawMessage): Properties => {
  const p = raw.properties
  const result: MutableProperties = {}
  const contentType: unknown = p.contentType
  const correlationId: unknown = p.correlationId
  const replyTo: unknown = p.replyTo
  const messageId: unknown = p.messageId
  const type: unknown = p.type
  const expiration: unknown = p.expiration
  const deliveryMode: unknown = p.deliveryMode
  const userId: unknown = p.userId
  if (typeof contentType === "string") result.contentType = contentType
  if (typeof correlationId === "string") result.correlationId = correlationId
  if (typeof replyTo === "string") result.replyTo = replyTo
  if (typeof messageId === "string") result.messageId = messageId
  if (typeof type === "string") result.type = type
  if (typeof expiration === "string" || typeof expiration === "number") {
    const millis = Number(expiration)
    if (Number.isFinite(millis)) result.expiration = millis
  }
  if (deliveryMode === 2) result.persistent = true
  if (typeof userId === "string") result.userId = userId
  const headers = toHeaders(p.headers)
  if (headers !== undefined) result.headers = headers
  return result
}

/**
 * Headers as both brokers expose them: strings, numbers and booleans only (RabbitMQ's tables, such
 * as `x-death`, are left out), plus `deathReasonHeader` from the latest `x-death` entry; RabbitMQ's
 * other death headers and its `x-delivery-count` (which `deliveryCount` carries) are left out too.
 */
const toHeaders = (headers: Amqp.RawMessage["properties"]["headers"]): Record<string, HeaderValue> | undefined => {
  if (headers === undefined || headers === null) return undefined
  const result: Record<string, HeaderValue> = {}
  let found = false
  for (const key of Object.keys(headers)) {
    // RabbitMQ's bookkeeping: the death is `deathReasonHeader`, the count `Delivery.deliveryCount`
    if (key.startsWith("x-first-death-") || key.startsWith("x-last-death-") || key === "x-delivery-count") continue
    const value: unknown = headers[key]
    if (typeof value === "string" || typeof value === "number" || typeof value === "boolean") {
      result[key] = value
      found = true
    } else if (typeof value === "bigint") {
      result[key] = Number(value)
      found = true
    } else if (Buffer.isBuffer(value)) {
      result[key] = value.toString("utf8")
      found = true
    } else if (Array.isArray(value) && value.every((v) => typeof v === "string")) {
      // a list of strings (Nameko's `nameko.call_id_stack`) as its JSON text
      result[key] = JSON.stringify(value)
      found = true
    }
  }
  const deaths: unknown = headers["x-death"]
  if (Array.isArray(deaths) && deaths.length > 0) {
    const latest: unknown = deaths[0]
    const reason: unknown = typeof latest === "object" && latest !== null && "reason" in latest
      ? latest.reason
      : undefined
    if (typeof reason === "string") {
      result[deathReasonHeader] = reason === "delivery_limit" ? "delivery-limit" : reason
      found = true
    }
    // an AMQP timestamp, in seconds: amqplib reads it as { "!": "timestamp", value }
    const time: unknown = typeof latest === "object" && latest !== null && "time" in latest ? latest.time : undefined
    const seconds: unknown = typeof time === "object" && time !== null && "value" in time ? time.value : time
    if (typeof seconds === "number") result[deathTimeHeader] = seconds * 1000
  }
  return found ? result : undefined
}

const toMessage = (raw: Amqp.RawMessage) => ({
  body: raw.content,
  exchange: raw.fields.exchange,
  routingKey: raw.fields.routingKey,
  properties: toProperties(raw),
  redelivered: raw.fields.redelivered === true
})

const toReturned = (raw: Amqp.RawMessage): Returned => {
  const fields: object = raw.fields
  const replyText = "replyText" in fields ? fields.replyText : undefined
  return { ...toMessage(raw), replyText: typeof replyText === "string" ? replyText : "NO_ROUTE" }
}
