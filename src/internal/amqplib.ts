/**
 * The only module that imports amqplib: a thin Effect wrapper over its promise API.
 *
 * Every promise and callback of amqplib is wrapped once here, and every failure becomes a
 * `BrokerError` with a reason read from the AMQP reply code (404 `NotFound`, 405/406 `Precondition`,
 * a closed channel or connection `Closed`). Channels and connections created here always carry an
 * `error` listener (an unhandled `error` event would crash the process) that remembers the last
 * error, so that a confirm failed by a channel closure can report why the channel closed.
 *
 * @since 0.1.0
 */
import * as amqp from "amqplib"
import { Effect, Result } from "effect"
import { BrokerError, type BrokerErrorReason } from "../Broker.ts"

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

const NOT_FOUND = 404
const RESOURCE_LOCKED = 405
const PRECONDITION_FAILED = 406

const codeOf = (cause: unknown): number | undefined => {
  if (typeof cause !== "object" || cause === null || !("code" in cause)) return undefined
  return typeof cause.code === "number" ? cause.code : undefined
}

const messageOf = (cause: unknown): string => {
  if (cause instanceof Error) return cause.message
  return String(cause)
}

const isClosedMessage = (message: string): boolean =>
  /channel closed|channel closing|channel ended|connection closed|connection closing|socket closed|closed by server|broker forced|econnreset|epipe/i
    .test(message)

/**
 * The reason of an amqplib failure.
 *
 * @since 0.1.0
 */
export const reasonOf = (cause: unknown): BrokerErrorReason => {
  const code = codeOf(cause)
  if (code === NOT_FOUND) return "NotFound"
  if (code === PRECONDITION_FAILED || code === RESOURCE_LOCKED) return "Precondition"
  if (cause instanceof amqp.IllegalOperationError) return "Closed"
  if (isClosedMessage(messageOf(cause))) return "Closed"
  return "Transport"
}

/**
 * Maps any amqplib failure to a `BrokerError`, with what was being done as a prefix.
 *
 * @since 0.1.0
 */
export const toBrokerError = (cause: unknown, doing: string): BrokerError =>
  new BrokerError({ reason: reasonOf(cause), message: `${doing}: ${messageOf(cause)}` })

const lastErrors = new WeakMap<object, Error>()
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

const failedOn = (channel: Channel, doing: string) => (cause: unknown): BrokerError => {
  if (cause instanceof amqp.IllegalOperationError) closed.add(channel)
  return toBrokerError(cause, doing)
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
        coalesceWrites(connection)
        return connection
      }),
    catch: (cause) => toBrokerError(cause, "connect")
  })

interface Corkable {
  readonly cork: () => void
  readonly uncork: () => void
}

const isCorkable = (u: unknown): u is Corkable =>
  typeof u === "object" && u !== null && "cork" in u && typeof u.cork === "function" && "uncork" in u &&
  typeof u.uncork === "function"

/**
 * Sends what amqplib flushes at once as one socket write. Its multiplexer writes the frames of every
 * channel one by one, and with `noDelay` each write is a system call and a TCP segment of its own: a
 * reply and its ack, or the requests of many calls, cost one each. Corked around a flush they leave
 * together, in one `writev`, in the same turn of the event loop (nothing waits longer). The
 * multiplexer is found by shape, not by type: an amqplib without one is left as it is.
 */
const coalesceWrites = (model: Connection): void => {
  const connection: unknown = Reflect.get(model, "connection")
  if (typeof connection !== "object" || connection === null) return
  const muxer: unknown = Reflect.get(connection, "muxer")
  const socket: unknown = Reflect.get(connection, "stream")
  if (typeof muxer !== "object" || muxer === null || !isCorkable(socket)) return
  const flush: unknown = Reflect.get(muxer, "_readIncoming")
  if (typeof flush !== "function") return
  Reflect.set(muxer, "_readIncoming", function(this: unknown) {
    socket.cork()
    Reflect.apply(flush, this, [])
    socket.uncork()
  })
}

/**
 * Closes a connection (and with it every channel).
 *
 * @since 0.1.0
 */
export const closeConnection = (connection: Connection): Effect.Effect<void, BrokerError> =>
  Effect.tryPromise({ try: () => connection.close(), catch: (cause) => toBrokerError(cause, "close connection") })

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
    catch: (cause) => toBrokerError(cause, "open channel")
  })

/**
 * Opens a channel in confirm mode.
 *
 * @since 0.1.0
 */
export const createConfirmChannel = (connection: Connection): Effect.Effect<ConfirmChannel, BrokerError> =>
  Effect.tryPromise({
    try: () => connection.createConfirmChannel().then(guard),
    catch: (cause) => toBrokerError(cause, "open confirm channel")
  })

/**
 * Closes a channel; a channel that is already closed is fine.
 *
 * @since 0.1.0
 */
export const closeChannel = (channel: Channel): Effect.Effect<void, BrokerError> =>
  Effect.suspend(() =>
    closed.has(channel)
      ? Effect.void
      : Effect.tryPromise({ try: () => channel.close(), catch: (cause) => toBrokerError(cause, "close channel") })
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
    catch: (cause) => toBrokerError(cause, `declare exchange '${name}'`)
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
    catch: (cause) => toBrokerError(cause, `declare queue '${name}'`)
  })

/**
 * Deletes a queue.
 *
 * @since 0.1.0
 */
export const deleteQueue = (channel: Channel, name: string): Effect.Effect<void, BrokerError> =>
  Effect.tryPromise({
    try: () => channel.deleteQueue(name),
    catch: (cause) => toBrokerError(cause, `delete queue '${name}'`)
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
  pattern: string
): Effect.Effect<void, BrokerError> =>
  Effect.tryPromise({
    try: () => channel.bindQueue(queue, exchange, pattern),
    catch: (cause) => toBrokerError(cause, `bind queue '${queue}' to '${exchange}'`)
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
  pattern: string
): Effect.Effect<void, BrokerError> =>
  Effect.tryPromise({
    try: () => channel.unbindQueue(queue, exchange, pattern),
    catch: (cause) => toBrokerError(cause, `unbind queue '${queue}' from '${exchange}'`)
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
    catch: (cause) => toBrokerError(cause, "set prefetch")
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
    catch: (cause) => toBrokerError(cause, `consume '${queue}'`)
  })

/**
 * Cancels a consumer (basic.cancel); the channel stays open.
 *
 * @since 0.1.0
 */
export const cancel = (channel: Channel, consumerTag: string): Effect.Effect<void, BrokerError> =>
  Effect.tryPromise({
    try: () => channel.cancel(consumerTag),
    catch: (cause) => toBrokerError(cause, "cancel consumer")
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
    Effect.try({ try: () => channel.nack(message, false, requeue), catch: (cause) => toBrokerError(cause, "nack") })
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
    try: () => send(channel, exchange, routingKey, content, options, undefined),
    catch: failedOn(channel, `publish to '${exchange}'`)
  })

const emptyTable: Readonly<Record<string, never>> = Object.freeze({})

/**
 * What `channel.publish` does, minus its one slow step. amqplib copies the options into an object
 * whose prototype is the caller's headers (`Object.create(options.headers)`), and its encoder then
 * walks the headers with `for...in` through that prototype: V8's slow path, which made the headers
 * of an RPC request cost ~10 µs on this project's benchmark, more than the rest of the frame. Every
 * channel publishes through `sendMessage(fields, properties, content)`; given fields built here, with
 * the headers as an own plain object, the frame is the same (an empty headers table when there are
 * none, as amqplib writes it). A confirm channel also registers the confirm callback, in the order
 * amqplib does. Found by shape: without these methods (another amqplib), `publish` is used as is.
 */
const send = (
  channel: Channel,
  exchange: string,
  routingKey: string,
  content: Buffer,
  options: PublishOptions,
  onConfirm: ((error: unknown) => void) | undefined
): boolean => {
  const sendMessage: unknown = Reflect.get(channel, "sendMessage")
  const confirms = typeof Reflect.get(channel, "waitForConfirms") === "function"
  const pushConfirm: unknown = confirms ? Reflect.get(channel, "pushConfirmCallback") : undefined
  if (
    typeof sendMessage !== "function" || (confirms && typeof pushConfirm !== "function") ||
    options.CC !== undefined || options.BCC !== undefined
  ) {
    return onConfirm === undefined
      ? channel.publish(exchange, routingKey, content, options)
      : (channel as ConfirmChannel).publish(exchange, routingKey, content, options, onConfirm)
  }
  const fields = {
    exchange,
    routingKey,
    mandatory: options.mandatory === true,
    immediate: false,
    ticket: undefined,
    contentType: options.contentType,
    contentEncoding: options.contentEncoding,
    headers: options.headers ?? emptyTable,
    deliveryMode: options.persistent !== undefined
      ? (options.persistent ? 2 : 1)
      : typeof options.deliveryMode === "number"
      ? options.deliveryMode
      : options.deliveryMode === true
      ? 2
      : undefined,
    priority: options.priority,
    correlationId: options.correlationId,
    replyTo: options.replyTo,
    expiration: options.expiration === undefined ? undefined : String(options.expiration),
    messageId: options.messageId,
    timestamp: options.timestamp,
    type: options.type,
    userId: options.userId,
    appId: options.appId,
    clusterId: undefined
  }
  const frames = Object.hasOwn(channel, "sendMessage") ? undefined : publishFrames(channel, fields, content)
  const written: unknown = frames === undefined
    ? Reflect.apply(sendMessage, channel, [fields, fields, content])
    : frames.buffer.write(frames.bytes)
  if (confirms && typeof pushConfirm === "function") Reflect.apply(pushConfirm, channel, [onConfirm])
  return written === true
}

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
        failure = messageOf(error) === "message nacked"
          ? new BrokerError({ reason: "Nacked", message: `the broker nacked a publish to '${exchange}'` })
          : toBrokerError(lastErrors.get(channel) ?? error, `publish to '${exchange}'`)
      }
      settle()
    }
    const sent = Result.try({
      try: () => send(channel, exchange, routingKey, content, options, onConfirm),
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

// ---- the frames of a small publish ----

interface Writable {
  readonly write: (chunk: Buffer) => boolean
}

const isWritable = (u: unknown): u is Writable =>
  typeof u === "object" && u !== null && "write" in u && typeof u.write === "function"

/** amqplib's limit for writing a message as one chunk (`SINGLE_CHUNK_THRESHOLD`) */
const singleChunk = 2048
const frameEnd = 206

/** the UTF-8 length of a string; equal to its length exactly when it is all ASCII */
const utf8Length = (s: string): number => Buffer.byteLength(s, "utf8")

type Latin1Write = (this: Buffer, string: string, offset: number, length: number) => number

const isLatin1Write = (u: unknown): u is Latin1Write => typeof u === "function"

/** node's own latin1 copy, which `buffer.write` reaches after parsing its arguments (~60 against ~110 ns) */
const latin1Write: unknown = Reflect.get(Buffer.prototype, "latin1Write")
const fastLatin1 = isLatin1Write(latin1Write) ? latin1Write : undefined

const writeString = (bytes: Buffer, s: string, length: number, offset: number): number => {
  // ASCII is the same bytes in latin1
  if (length === s.length && fastLatin1 !== undefined) fastLatin1.call(bytes, s, offset, length)
  else bytes.write(s, offset, length, "utf8")
  return offset + length
}

const writeShort = (bytes: Buffer, s: string, length: number, offset: number): number => {
  bytes[offset] = length
  return writeString(bytes, s, length, offset + 1)
}

interface Fields {
  readonly exchange: string
  readonly routingKey: string
  readonly mandatory: boolean
  readonly contentType: string | undefined
  readonly contentEncoding: string | undefined
  readonly headers: Readonly<Record<string, unknown>>
  readonly deliveryMode: number | undefined
  readonly priority: number | undefined
  readonly correlationId: string | undefined
  readonly replyTo: string | undefined
  readonly expiration: string | undefined
  readonly messageId: string | undefined
  readonly timestamp: number | undefined
  readonly type: string | undefined
  readonly userId: string | undefined
  readonly appId: string | undefined
}

/**
 * The method, header and body frames of a publish, encoded at once into one buffer from node's pool:
 * the bytes amqplib's `sendMessage` writes for a message under its single-chunk threshold, without
 * its per-frame allocations (two zero-filled buffers, the properties' one ~1 µs on its own) and its
 * per-string calls into node (~6 µs for an event's properties on the bench machine, ~1 µs here).
 * Only what an effect-mesh publish carries is encoded here (short-string properties, a persistent
 * flag, string headers); anything else (numbers in headers, priorities, a larger message), or an
 * amqplib of another shape, returns `undefined` and goes through amqplib. Returns the channel's
 * outgoing buffer with the bytes; the caller writes them, as amqplib does.
 */
const publishFrames = (
  channel: Channel,
  fields: Fields,
  content: Buffer
): { readonly buffer: Writable; readonly bytes: Buffer } | undefined => {
  if (
    fields.contentEncoding !== undefined || fields.priority !== undefined || fields.timestamp !== undefined ||
    fields.userId !== undefined || fields.appId !== undefined
  ) return undefined
  const ch: unknown = Reflect.get(channel, "ch")
  const connection: unknown = Reflect.get(channel, "connection")
  if (typeof ch !== "number" || typeof connection !== "object" || connection === null) return undefined
  const channels: unknown = Reflect.get(connection, "channels")
  const slot: unknown = Array.isArray(channels) ? channels[ch] : undefined
  const buffer: unknown = typeof slot === "object" && slot !== null ? Reflect.get(slot, "buffer") : undefined
  if (!isWritable(buffer)) return undefined

  const exchange = utf8Length(fields.exchange)
  const routingKey = utf8Length(fields.routingKey)
  if (exchange > 255 || routingKey > 255) return undefined
  const methodSize = 17 + exchange + routingKey

  // the header frame: 22 bytes and the properties present
  let flags = 0
  let size = 22
  const contentType = fields.contentType === undefined ? -1 : utf8Length(fields.contentType)
  const correlationId = fields.correlationId === undefined ? -1 : utf8Length(fields.correlationId)
  const replyTo = fields.replyTo === undefined ? -1 : utf8Length(fields.replyTo)
  const expiration = fields.expiration === undefined ? -1 : utf8Length(fields.expiration)
  const messageId = fields.messageId === undefined ? -1 : utf8Length(fields.messageId)
  const type = fields.type === undefined ? -1 : utf8Length(fields.type)
  if (
    contentType > 255 || correlationId > 255 || replyTo > 255 || expiration > 255 || messageId > 255 ||
    type > 255
  ) return undefined
  if (contentType >= 0) {
    flags |= 32768
    size += 1 + contentType
  }
  const headerLengths: Array<number> = []
  let table = 0
  for (const key in fields.headers) {
    const value = fields.headers[key]
    if (value === undefined) continue
    if (typeof value !== "string") return undefined
    const keyLength = utf8Length(key)
    if (keyLength > 255) return undefined
    const valueLength = utf8Length(value)
    headerLengths.push(keyLength, valueLength)
    table += 1 + keyLength + 1 + 4 + valueLength
  }
  flags |= 8192
  size += 4 + table
  if (fields.deliveryMode !== undefined) {
    flags |= 4096
    size += 1
  }
  if (correlationId >= 0) {
    flags |= 1024
    size += 1 + correlationId
  }
  if (replyTo >= 0) {
    flags |= 512
    size += 1 + replyTo
  }
  if (expiration >= 0) {
    flags |= 256
    size += 1 + expiration
  }
  if (messageId >= 0) {
    flags |= 128
    size += 1 + messageId
  }
  if (type >= 0) {
    flags |= 32
    size += 1 + type
  }
  const headerSize = size
  const bodySize = content.length > 0 ? content.length + 8 : 0
  const total = methodSize + headerSize + bodySize
  if (total >= singleChunk) return undefined

  const bytes = Buffer.allocUnsafe(total)
  // method frame: basic.publish
  bytes[0] = 1
  bytes.writeUInt16BE(ch, 1)
  bytes.writeUInt32BE(methodSize - 8, 3)
  bytes.writeUInt32BE(3932200, 7)
  bytes.writeUInt16BE(0, 11)
  let offset = writeShort(bytes, fields.exchange, exchange, 13)
  offset = writeShort(bytes, fields.routingKey, routingKey, offset)
  bytes[offset++] = fields.mandatory ? 1 : 0
  bytes[offset++] = frameEnd
  // header frame
  const header = offset
  bytes[header] = 2
  bytes.writeUInt16BE(ch, header + 1)
  bytes.writeUInt32BE(headerSize - 8, header + 3)
  bytes.writeUInt32BE(3932160, header + 7)
  // the body size, a 64-bit integer: its high half is 0 under the single-chunk threshold
  bytes.writeUInt32BE(0, header + 11)
  bytes.writeUInt32BE(content.length, header + 15)
  bytes.writeUInt16BE(flags, header + 19)
  offset = header + 21
  if (contentType >= 0 && fields.contentType !== undefined) {
    offset = writeShort(bytes, fields.contentType, contentType, offset)
  }
  bytes.writeUInt32BE(table, offset)
  offset += 4
  let i = 0
  for (const key in fields.headers) {
    const value = fields.headers[key]
    if (typeof value !== "string") continue
    offset = writeShort(bytes, key, headerLengths[i], offset)
    bytes[offset++] = 83 // 'S', a long string
    bytes.writeUInt32BE(headerLengths[i + 1], offset)
    offset = writeString(bytes, value, headerLengths[i + 1], offset + 4)
    i += 2
  }
  if (fields.deliveryMode !== undefined) bytes[offset++] = fields.deliveryMode
  if (correlationId >= 0 && fields.correlationId !== undefined) {
    offset = writeShort(bytes, fields.correlationId, correlationId, offset)
  }
  if (replyTo >= 0 && fields.replyTo !== undefined) offset = writeShort(bytes, fields.replyTo, replyTo, offset)
  if (expiration >= 0 && fields.expiration !== undefined) {
    offset = writeShort(bytes, fields.expiration, expiration, offset)
  }
  if (messageId >= 0 && fields.messageId !== undefined) {
    offset = writeShort(bytes, fields.messageId, messageId, offset)
  }
  if (type >= 0 && fields.type !== undefined) offset = writeShort(bytes, fields.type, type, offset)
  bytes[offset++] = frameEnd
  // body frame
  if (bodySize > 0) {
    bytes[offset] = 3
    bytes.writeUInt16BE(ch, offset + 1)
    bytes.writeUInt32BE(content.length, offset + 3)
    content.copy(bytes, offset + 7)
    bytes[offset + 7 + content.length] = frameEnd
  }
  Reflect.set(connection, "sentSinceLastCheck", true)
  return { buffer, bytes }
}
