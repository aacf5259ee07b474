/**
 * The only module that imports amqplib: a thin Effect wrapper over its promise API.
 *
 * Every promise and callback of amqplib is wrapped once here, and every failure becomes a
 * `BrokerError` that keeps it as its `cause`, with a reason read from what amqplib gives, never from
 * its message: the AMQP reply code (404 `NotFound`, 405/406 `Precondition`), its
 * `IllegalOperationError` or the closed state of the channel or connection (`Closed`). Channels and
 * connections created here always carry an `error` listener (an unhandled `error` event would crash
 * the process) that remembers the last error, so that a confirm failed by a channel closure can
 * report why the channel closed, and a `close` listener that marks them closed. What reaches
 * into amqplib's private internals (a faster publish, corked socket writes) lives in
 * `amqplibFastPath.ts`, probed once per connection and channel.
 *
 * @since 0.1.0
 */
import * as amqp from "amqplib"
import { Effect, Result } from "effect"
import { BrokerError, type BrokerErrorReason } from "../Broker.ts"
import * as FastPath from "./amqplibFastPath.ts"
import * as Tls from "./tls.ts"

/**
 * An open AMQP connection.
 *
 * @since 0.1.0
 */
export type Connection = amqp.ChannelModel

/**
 * A channel.
 *
 * @since 0.1.0
 */
export type Channel = amqp.Channel

/**
 * A channel in confirm mode.
 *
 * @since 0.1.0
 */
export type ConfirmChannel = amqp.ConfirmChannel

/**
 * A message as amqplib hands it over (deliveries and returns).
 *
 * @since 0.1.0
 */
export type RawMessage = amqp.Message

/**
 * amqplib's publish options.
 *
 * @since 0.1.0
 */
export type PublishOptions = amqp.Options.Publish

/**
 * amqplib's queue declaration options.
 *
 * @since 0.1.0
 */
export type QueueOptions = amqp.Options.AssertQueue

/**
 * amqplib's exchange declaration options.
 *
 * @since 0.1.0
 */
export type ExchangeOptions = amqp.Options.AssertExchange

/**
 * Socket options: node's TLS options plus amqplib's own (`noDelay`, `timeout`, `clientProperties`, ...).
 *
 * @since 0.1.0
 */
export type SocketOptions = amqp.SocketOptions

// ---- errors ----

// AMQP reply codes: amqplib puts the one the server closed a channel or connection with on the error
const CONNECTION_FORCED = 320
const ACCESS_REFUSED = 403
const NOT_FOUND = 404
const RESOURCE_LOCKED = 405
const PRECONDITION_FAILED = 406

// node's codes of a socket the peer dropped (amqplib passes socket errors on as they are)
const socketLost: ReadonlySet<string> = new Set(["ECONNRESET", "EPIPE", "ECONNABORTED"])

const codeOf = (cause: unknown): unknown =>
  typeof cause === "object" && cause !== null && "code" in cause ? cause.code : undefined

const messageOf = (cause: unknown): string => cause instanceof Error ? cause.message : String(cause)

/**
 * The reason of an amqplib failure, from what amqplib gives: the AMQP reply code on the error, its
 * `IllegalOperationError` (an operation on a channel or connection that is closing or closed), node's
 * code of a dropped socket, and `closed`: whether the channel or connection the operation ran on has
 * closed since (amqplib fails the operations still waiting for a reply then, with a plain `Error`).
 *
 * @since 0.1.0
 */
export const reasonOf = (cause: unknown, closed: boolean): BrokerErrorReason => {
  const code = codeOf(cause)
  if (code === NOT_FOUND) return "NotFound"
  if (code === ACCESS_REFUSED) return "AccessRefused"
  if (code === PRECONDITION_FAILED || code === RESOURCE_LOCKED) return "Precondition"
  if (closed || code === CONNECTION_FORCED || cause instanceof amqp.IllegalOperationError) return "Closed"
  if (typeof code === "string" && socketLost.has(code)) return "Closed"
  return "Transport"
}

/**
 * Maps an amqplib failure to a `BrokerError` that keeps it as its cause, with what was being done as
 * a prefix of the message.
 *
 * @since 0.1.0
 */
export const toBrokerError = (cause: unknown, doing: string, closed: boolean): BrokerError =>
  new BrokerError({ reason: reasonOf(cause, closed), message: `${doing}: ${messageOf(cause)}`, cause })

const lastErrors = new WeakMap<object, Error>()
// channels and connections that emitted `close`
const closed = new WeakSet<object>()

/**
 * The last `error` event a channel or connection emitted, if any.
 *
 * @since 0.1.0
 */
export const lastError = (emitter: Channel | Connection): Error | undefined => lastErrors.get(emitter)

/**
 * Whether the channel has emitted `close`.
 *
 * @since 0.1.0
 */
export const isClosed = (channel: Channel): boolean => closed.has(channel)

const guard = <C extends Channel>(channel: C): C => {
  channel.on("error", (error: Error) => {
    lastErrors.set(channel, error)
  })
  // ahead of amqplib's own listener, which fails the pending confirms: whatever runs on their
  // failure must already see the channel as closed
  channel.prependListener("close", () => {
    closed.add(channel)
  })
  return channel
}

/** the failure of an operation on `on` (a channel or connection), classified by its state */
const failedOn = (on: Channel | Connection, doing: string) => (cause: unknown): BrokerError => {
  if (cause instanceof amqp.IllegalOperationError) closed.add(on)
  return toBrokerError(cause, doing, closed.has(on))
}

// ---- connection ----

/**
 * Opens a connection. The socket options are passed as they are: the caller sets `noDelay`.
 *
 * @since 0.1.0
 */
export const connect = (url: string, socketOptions: SocketOptions): Effect.Effect<Connection, BrokerError> =>
  Effect.tryPromise({
    try: () =>
      amqp.connect(url, socketOptions).then((connection) => {
        connection.on("error", (error: Error) => {
          lastErrors.set(connection, error)
        })
        connection.prependListener("close", () => {
          closed.add(connection)
        })
        return connection
      }),
    catch: connectFailure
  }).pipe(Effect.tap(FastPath.install))

/**
 * A failed connect: a TLS handshake's failure said in words to act on; a refused login (amqplib gives
 * no code for it, only its message: "Handshake terminated by server: 403 (ACCESS-REFUSED) ...")
 */
const connectFailure = (cause: unknown): BrokerError => {
  const tls = Tls.describeFailure(cause)
  if (tls !== undefined) return new BrokerError({ reason: "Tls", message: `connect: ${tls}`, cause })
  if (/\b403 \(ACCESS-REFUSED\)/.test(messageOf(cause))) {
    return new BrokerError({ reason: "AccessRefused", message: `connect: ${messageOf(cause)}`, cause })
  }
  return toBrokerError(cause, "connect", false)
}

/**
 * Closes a connection (and with it every channel).
 *
 * @since 0.1.0
 */
export const closeConnection = (connection: Connection): Effect.Effect<void, BrokerError> =>
  Effect.tryPromise({ try: () => connection.close(), catch: failedOn(connection, "close connection") })

/**
 * Calls `listener` once when the connection closes, with the error that closed it (if any).
 * Returns the effect that removes the listener.
 *
 * @since 0.1.0
 */
export const onConnectionClose = (
  connection: Connection,
  listener: (error: Error | undefined) => void
): Effect.Effect<void> =>
  Effect.sync(() => {
    connection.once("close", (error?: Error) => listener(error ?? lastErrors.get(connection)))
  })

/**
 * Listens to the broker's flow control (`connection.blocked` / `unblocked`).
 *
 * @since 0.1.0
 */
export const onBlocked = (
  connection: Connection,
  listener: (blocked: boolean, reason: string) => void
): Effect.Effect<void> =>
  Effect.sync(() => {
    connection.on("blocked", (reason: string) => listener(true, reason))
    connection.on("unblocked", () => listener(false, ""))
  })

// ---- channels ----

/**
 * Opens a plain channel.
 *
 * @since 0.1.0
 */
export const createChannel = (connection: Connection): Effect.Effect<Channel, BrokerError> =>
  Effect.tryPromise({
    try: () => connection.createChannel().then(guard),
    catch: failedOn(connection, "open channel")
  }).pipe(Effect.tap((channel) => FastPath.attach(connection, channel, false)))

/**
 * Opens a channel in confirm mode.
 *
 * @since 0.1.0
 */
export const createConfirmChannel = (connection: Connection): Effect.Effect<ConfirmChannel, BrokerError> =>
  Effect.tryPromise({
    try: () => connection.createConfirmChannel().then(guard),
    catch: failedOn(connection, "open confirm channel")
  }).pipe(Effect.tap((channel) => FastPath.attach(connection, channel, true)))

/**
 * Closes a channel; a channel that is already closed is fine.
 *
 * @since 0.1.0
 */
export const closeChannel = (channel: Channel): Effect.Effect<void, BrokerError> =>
  Effect.suspend(() =>
    closed.has(channel)
      ? Effect.void
      : Effect.tryPromise({ try: () => channel.close(), catch: failedOn(channel, "close channel") })
  )

/**
 * Calls `listener` once when the channel closes, with the error that closed it (if any).
 *
 * @since 0.1.0
 */
export const onChannelClose = (channel: Channel, listener: (error: Error | undefined) => void): Effect.Effect<void> =>
  Effect.sync(() => {
    if (closed.has(channel)) {
      listener(lastErrors.get(channel))
      return
    }
    channel.once("close", () => listener(lastErrors.get(channel)))
  })

/**
 * Calls `listener` for every message the broker returns (unroutable `mandatory` publishes).
 *
 * @since 0.1.0
 */
export const onReturn = (channel: Channel, listener: (message: RawMessage) => void): Effect.Effect<void> =>
  Effect.sync(() => {
    channel.on("return", listener)
  })

/**
 * Waits until the channel's write buffer has drained (or the channel closed).
 *
 * @since 0.1.0
 */
export const waitDrain = (channel: Channel): Effect.Effect<void> =>
  Effect.callback<void>((resume) => {
    if (closed.has(channel)) {
      resume(Effect.void)
      return
    }
    const done = () => {
      channel.off("drain", done)
      channel.off("close", done)
      resume(Effect.void)
    }
    channel.on("drain", done)
    channel.on("close", done)
    return Effect.sync(() => {
      channel.off("drain", done)
      channel.off("close", done)
    })
  })

// ---- topology ----

/**
 * Declares an exchange.
 *
 * @since 0.1.0
 */
export const assertExchange = (
  channel: Channel,
  name: string,
  type: string,
  options: ExchangeOptions
): Effect.Effect<void, BrokerError> =>
  Effect.tryPromise({
    try: () => channel.assertExchange(name, type, options),
    catch: failedOn(channel, `declare exchange '${name}'`)
  })

/**
 * Declares a queue and returns its name.
 *
 * @since 0.1.0
 */
export const assertQueue = (
  channel: Channel,
  name: string,
  options: QueueOptions
): Effect.Effect<string, BrokerError> =>
  Effect.tryPromise({
    try: () => channel.assertQueue(name, options).then((ok) => ok.queue),
    catch: failedOn(channel, `declare queue '${name}'`)
  })

/**
 * What a queue holds, without declaring it (a passive declare): ready messages and consumers. A queue
 * that does not exist fails it with reason `NotFound`, and closes the channel (as every 404 does).
 *
 * @since 0.1.0
 */
export const checkQueue = (
  channel: Channel,
  name: string
): Effect.Effect<{ readonly messages: number; readonly consumers: number }, BrokerError> =>
  Effect.tryPromise({
    try: () => channel.checkQueue(name).then((ok) => ({ messages: ok.messageCount, consumers: ok.consumerCount })),
    catch: failedOn(channel, `check queue '${name}'`)
  })

/**
 * Deletes a queue.
 *
 * @since 0.1.0
 */
export const deleteQueue = (channel: Channel, name: string): Effect.Effect<void, BrokerError> =>
  Effect.tryPromise({
    try: () => channel.deleteQueue(name),
    catch: failedOn(channel, `delete queue '${name}'`)
  })

/**
 * Binds a queue to an exchange.
 *
 * @since 0.1.0
 */
export const bindQueue = (
  channel: Channel,
  queue: string,
  exchange: string,
  pattern: string,
  args?: Readonly<Record<string, string | number | boolean>>
): Effect.Effect<void, BrokerError> =>
  Effect.tryPromise({
    try: () => channel.bindQueue(queue, exchange, pattern, args),
    catch: failedOn(channel, `bind queue '${queue}' to '${exchange}'`)
  })

/**
 * Unbinds a queue from an exchange.
 *
 * @since 0.1.0
 */
export const unbindQueue = (
  channel: Channel,
  queue: string,
  exchange: string,
  pattern: string,
  args?: Readonly<Record<string, string | number | boolean>>
): Effect.Effect<void, BrokerError> =>
  Effect.tryPromise({
    try: () => channel.unbindQueue(queue, exchange, pattern, args),
    catch: failedOn(channel, `unbind queue '${queue}' from '${exchange}'`)
  })

// ---- messages ----

/**
 * Sets the per-consumer prefetch of the channel's next consumers.
 *
 * @since 0.1.0
 */
export const prefetch = (channel: Channel, count: number): Effect.Effect<void, BrokerError> =>
  Effect.tryPromise({
    try: () => channel.prefetch(count),
    catch: failedOn(channel, "set prefetch")
  })

/**
 * Starts a consumer and returns its tag. `onMessage` receives `null` when the broker cancels the
 * consumer (the queue was deleted).
 *
 * @since 0.1.0
 */
export const consume = (
  channel: Channel,
  queue: string,
  onMessage: (message: RawMessage | null) => void,
  options: { readonly noAck: boolean; readonly consumerTag?: string | undefined }
): Effect.Effect<string, BrokerError> =>
  Effect.tryPromise({
    try: () =>
      channel.consume(
        queue,
        onMessage,
        options.consumerTag === undefined
          ? { noAck: options.noAck }
          : { noAck: options.noAck, consumerTag: options.consumerTag }
      ).then((ok) => ok.consumerTag),
    catch: failedOn(channel, `consume '${queue}'`)
  })

/**
 * Cancels a consumer (basic.cancel); the channel stays open.
 *
 * @since 0.1.0
 */
export const cancel = (channel: Channel, consumerTag: string): Effect.Effect<void, BrokerError> =>
  Effect.tryPromise({
    try: () => channel.cancel(consumerTag),
    catch: failedOn(channel, "cancel consumer")
  })

/**
 * Acks a delivery; a no-op when its channel is gone (amqplib throws then, and the broker redelivers
 * the message anyway). For a caller already inside an effect: one step per ack.
 *
 * @since 0.1.0
 */
export const ackUnsafe = (channel: Channel, message: RawMessage): void => {
  Result.try(() => channel.ack(message))
}

/**
 * Acks a delivery; a no-op when its channel is gone.
 *
 * @since 0.1.0
 */
export const ack = (channel: Channel, message: RawMessage): Effect.Effect<void> =>
  Effect.sync(() => ackUnsafe(channel, message))

/**
 * Nacks a delivery, requeued or not; a no-op when its channel is gone.
 *
 * @since 0.1.0
 */
export const nack = (channel: Channel, message: RawMessage, requeue: boolean): Effect.Effect<void> =>
  Effect.ignore(
    Effect.try({ try: () => channel.nack(message, false, requeue), catch: failedOn(channel, "nack") })
  )

/**
 * Nacks a delivery from a callback (no effect to run): requeues what arrived after a cancel.
 *
 * @since 0.1.0
 */
export const requeueUnsafe = (channel: Channel, message: RawMessage): void => {
  if (!closed.has(channel)) Effect.runSync(nack(channel, message, true))
}

/**
 * Publishes on a channel; `false` means the channel's buffer is full and the caller should wait for
 * `waitDrain` before writing more.
 *
 * @since 0.1.0
 */
export const publish = (
  channel: Channel,
  exchange: string,
  routingKey: string,
  content: Buffer,
  options: PublishOptions
): Effect.Effect<boolean, BrokerError> =>
  Effect.try({
    try: () => FastPath.send(channel, exchange, routingKey, content, options, undefined),
    catch: failedOn(channel, `publish to '${exchange}'`)
  })

/**
 * Publishes on a confirm channel and waits for the broker's confirm (and, when the channel's buffer
 * is full, for it to drain as well): a nack fails with `Nacked`, a channel closed before the confirm
 * fails with the reason of the closure. One callback rather than a `Deferred` and the steps around
 * it: a publisher with many events in flight runs this once per event.
 *
 * @since 0.1.0
 */
export const publishConfirm = (
  channel: ConfirmChannel,
  exchange: string,
  routingKey: string,
  content: Buffer,
  options: PublishOptions
): Effect.Effect<void, BrokerError> =>
  Effect.callback<void, BrokerError>((resume) => {
    // what is still awaited: the confirm, and the drain when the buffer was full
    let pending = 1
    let failure: BrokerError | undefined
    const settle = () => {
      if (--pending === 0) resume(failure === undefined ? Effect.void : Effect.fail(failure))
    }
    const onConfirm = (error: unknown) => {
      if (error !== null && error !== undefined) {
        // amqplib fails the confirms of a channel that closed, after this module saw it close; a
        // failure on an open channel is the broker's basic.nack
        failure = closed.has(channel)
          ? toBrokerError(lastErrors.get(channel) ?? error, `publish to '${exchange}'`, true)
          : new BrokerError({ reason: "Nacked", message: `the broker nacked a publish to '${exchange}'`, cause: error })
      }
      settle()
    }
    const sent = Result.try({
      try: () => FastPath.send(channel, exchange, routingKey, content, options, onConfirm),
      catch: failedOn(channel, `publish to '${exchange}'`)
    })
    if (Result.isFailure(sent)) {
      resume(Effect.fail(sent.failure))
      return
    }
    if (sent.success || closed.has(channel)) return
    pending++
    const drained = () => {
      channel.off("drain", drained)
      channel.off("close", drained)
      settle()
    }
    channel.on("drain", drained)
    channel.on("close", drained)
    return Effect.sync(() => {
      channel.off("drain", drained)
      channel.off("close", drained)
    })
  })
