/**
 * The part of the amqplib adapter that reaches into amqplib's private internals, kept apart so that it
 * is the one place that does: a publish written straight into its channel's buffer, and the frames a
 * flush sends corked into one socket write.
 *
 * Everything touched is found by shape, once: a connection's internals when it opens (`install`), a
 * channel's when it opens (`attach`); a publish then costs a WeakMap lookup. Where amqplib is not of
 * the shape expected (another version, a recovering connection), one warning names what did not match
 * and that connection keeps amqplib's own path (`channel.publish`, no corked flush): slower, never wrong.
 *
 * @since 0.1.0
 */
import { Effect } from "effect"
import type { Channel, ConfirmChannel, Connection, PublishOptions } from "./amqplib.ts"

// ---- shapes ----

interface Corkable {
  readonly cork: () => void
  readonly uncork: () => void
}

interface Writable {
  readonly write: (chunk: Buffer) => unknown
}

/** amqplib's connection under its `ChannelModel`: what the heartbeat reads and the channel table */
interface Wire {
  sentSinceLastCheck: boolean
  readonly channels: ReadonlyArray<unknown>
}

type Method = (this: unknown, ...args: ReadonlyArray<unknown>) => unknown

type SendMessage = (this: unknown, fields: Fields, properties: Fields, content: Buffer) => unknown

type PushConfirm = (this: unknown, callback: ((error: unknown) => void) | undefined) => void

/** the fields and properties of a publish, as amqplib's `Args.publish` builds them */
interface Fields {
  readonly exchange: string
  readonly routingKey: string
  readonly mandatory: boolean
  readonly immediate: boolean
  readonly ticket: undefined
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
  readonly clusterId: undefined
}

const isObject = (u: unknown): u is object => (typeof u === "object" && u !== null) || typeof u === "function"

const isMethod = (u: unknown): u is Method => typeof u === "function"

const isSendMessage = (u: unknown): u is SendMessage => typeof u === "function"

const isPushConfirm = (u: unknown): u is PushConfirm => typeof u === "function"

const isCorkable = (u: unknown): u is Corkable =>
  isObject(u) && "cork" in u && typeof u.cork === "function" && "uncork" in u && typeof u.uncork === "function"

const isWritable = (u: unknown): u is Writable => isObject(u) && "write" in u && typeof u.write === "function"

const isWire = (u: unknown): u is Wire =>
  isObject(u) && "sentSinceLastCheck" in u && typeof u.sentSinceLastCheck === "boolean" && "channels" in u &&
  Array.isArray(u.channels)

const field = (owner: unknown, key: string): unknown => isObject(owner) ? Reflect.get(owner, key) : undefined

// ---- state ----

/** a connection whose internals matched: what `attach` checks a channel against, and the patch to undo */
interface Link {
  readonly wire: Wire
  readonly muxer: object
  readonly flush: Method
  on: boolean
}

/** a channel whose internals matched: everything a publish needs, found when it opened */
interface Path {
  readonly link: Link
  readonly ch: number
  readonly buffer: Writable
  readonly sendMessage: SendMessage
  readonly pushConfirm: PushConfirm | undefined
}

const links = new WeakMap<Connection, Link>()
const paths = new WeakMap<Channel, Path>()

const warn = (mismatches: ReadonlyArray<string>): Effect.Effect<void> =>
  Effect.logWarning(
    `amqplib is not of the shape effect-mesh's fast path expects (${
      mismatches.join(", ")
    }): this connection publishes through channel.publish, without corked writes`
  )

/**
 * Whether the connection got the fast path (its internals matched, its flushes are corked).
 *
 * @since 0.1.0
 */
export const isFastConnection = (connection: Connection): boolean => links.get(connection)?.on === true

/**
 * Whether the channel's publishes take the fast path.
 *
 * @since 0.1.0
 */
export const isFastChannel = (channel: Channel): boolean => paths.get(channel)?.link.on === true

// ---- probes ----

/**
 * Probes a connection that has just opened and, when its internals are of the expected shape, corks
 * its socket around each flush of the multiplexer; otherwise logs one warning and leaves it as it is.
 *
 * Why cork: the multiplexer writes the frames of every channel one by one, and with `noDelay` each
 * write is a system call and a TCP segment of its own: a reply and its ack, or the requests of many
 * calls, cost one each. Corked around a flush they leave together, in one `writev`, in the same turn
 * of the event loop (nothing waits longer).
 *
 * @since 0.1.0
 */
export const install = (connection: Connection): Effect.Effect<void> =>
  Effect.suspend(() => {
    const wire = field(connection, "connection")
    const muxer = field(wire, "muxer")
    const flush = field(muxer, "_readIncoming")
    const socket = field(wire, "stream")
    if (isWire(wire) && isObject(muxer) && isMethod(flush) && isCorkable(socket)) {
      Reflect.set(muxer, "_readIncoming", function(this: unknown) {
        socket.cork()
        flush.call(this)
        socket.uncork()
      })
      links.set(connection, { wire, muxer, flush, on: true })
      return Effect.void
    }
    const mismatches: Array<string> = []
    if (!isObject(wire)) mismatches.push("connection.connection")
    else {
      if (!isWire(wire)) mismatches.push("connection.connection.sentSinceLastCheck/channels")
      if (!isMethod(flush)) mismatches.push("connection.connection.muxer._readIncoming")
      if (!isCorkable(socket)) mismatches.push("connection.connection.stream.cork/uncork")
    }
    return warn(mismatches)
  })

const probeChannel = (link: Link, channel: Channel, confirm: boolean): Path | ReadonlyArray<string> => {
  const ch = field(channel, "ch")
  const buffer = typeof ch === "number" ? field(link.wire.channels[ch], "buffer") : undefined
  const prototype: unknown = Object.getPrototypeOf(channel)
  const sendMessage = field(prototype, "sendMessage")
  const pushConfirm = confirm ? field(prototype, "pushConfirmCallback") : undefined
  const waitForConfirms = confirm ? field(prototype, "waitForConfirms") : undefined
  if (
    typeof ch === "number" && field(channel, "connection") === link.wire && isWritable(buffer) &&
    isSendMessage(sendMessage) && (!confirm || (isPushConfirm(pushConfirm) && isMethod(waitForConfirms)))
  ) return { link, ch, buffer, sendMessage, pushConfirm: isPushConfirm(pushConfirm) ? pushConfirm : undefined }
  const mismatches: Array<string> = []
  if (typeof ch !== "number") mismatches.push("channel.ch")
  if (field(channel, "connection") !== link.wire) mismatches.push("channel.connection")
  if (!isWritable(buffer)) mismatches.push("connection.channels[ch].buffer.write")
  if (!isSendMessage(sendMessage)) mismatches.push("Channel.prototype.sendMessage")
  if (confirm && !isPushConfirm(pushConfirm)) mismatches.push("ConfirmChannel.prototype.pushConfirmCallback")
  if (confirm && !isMethod(waitForConfirms)) mismatches.push("ConfirmChannel.prototype.waitForConfirms")
  return mismatches
}

/**
 * Probes a channel that has just opened on `connection` (`confirm`: in confirm mode). A channel that
 * does not match turns the fast path off for its whole connection: one warning, the corked flush
 * undone, and every channel of it publishes through amqplib from then on.
 *
 * @since 0.1.0
 */
export const attach = (connection: Connection, channel: Channel, confirm: boolean): Effect.Effect<void> =>
  Effect.suspend(() => {
    const link = links.get(connection)
    if (link === undefined || !link.on) return Effect.void
    const probed = probeChannel(link, channel, confirm)
    if ("link" in probed) {
      paths.set(channel, probed)
      return Effect.void
    }
    link.on = false
    Reflect.set(link.muxer, "_readIncoming", link.flush)
    return warn(probed)
  })

// ---- publish ----

const emptyTable: Readonly<Record<string, never>> = Object.freeze({})

/**
 * What `channel.publish` does (and `ConfirmChannel.publish` when `onConfirm` is given, or on a confirm
 * channel), minus its slow steps. amqplib copies the options into an object whose prototype is the
 * caller's headers (`Object.create(options.headers)`), and its encoder then walks the headers with
 * `for...in` through that prototype: V8's slow path, which made the headers of an RPC request cost
 * ~10 µs on this project's benchmark, more than the rest of the frame. Given fields built here, with
 * the headers as an own plain object, the frame is the same (an empty headers table when there are
 * none, as amqplib writes it); a small one is encoded here outright (`publishFrames`). A confirm
 * channel registers the confirm callback after the write, as amqplib does.
 *
 * A channel amqplib has closed carries its own `sendMessage`, which throws: such a channel, one not on
 * the fast path, and CC/BCC headers go through `channel.publish` as they are.
 *
 * @since 0.1.0
 */
export const send = (
  channel: Channel,
  exchange: string,
  routingKey: string,
  content: Buffer,
  options: PublishOptions,
  onConfirm: ((error: unknown) => void) | undefined
): boolean => {
  const path = paths.get(channel)
  if (
    path === undefined || !path.link.on || Object.hasOwn(channel, "sendMessage") || options.CC !== undefined ||
    options.BCC !== undefined
  ) {
    return onConfirm === undefined
      ? channel.publish(exchange, routingKey, content, options)
      : (channel as ConfirmChannel).publish(exchange, routingKey, content, options, onConfirm)
  }
  const fields: Fields = {
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
  const bytes = publishFrames(path, fields, content)
  const written = bytes === undefined
    ? path.sendMessage.call(channel, fields, fields, content)
    : path.buffer.write(bytes)
  if (path.pushConfirm !== undefined) path.pushConfirm.call(channel, onConfirm)
  return written === true
}

// ---- the frames of a small publish ----

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

/** the UTF-8 lengths of the last headers' keys and values, reused (one encode at a time, synchronously) */
const headerLengths: Array<number> = []

/**
 * The method, header and body frames of a publish, encoded at once into one buffer from node's pool:
 * the bytes amqplib's `sendMessage` writes for a message under its single-chunk threshold, without
 * its per-frame allocations (two zero-filled buffers, the properties' one ~1 µs on its own) and its
 * per-string calls into node (~6 µs for an event's properties on the bench machine, ~1 µs here).
 * Only what an effect-mesh publish carries is encoded here (short-string properties, a persistent
 * flag, string headers); anything else (numbers in headers, priorities, a larger message) returns
 * `undefined` and goes through amqplib. The caller writes the bytes to the channel's buffer, as
 * amqplib does.
 */
const publishFrames = (path: Path, fields: Fields, content: Buffer): Buffer | undefined => {
  if (
    fields.contentEncoding !== undefined || fields.priority !== undefined || fields.timestamp !== undefined ||
    fields.appId !== undefined
  ) return undefined
  const ch = path.ch

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
  const userId = fields.userId === undefined ? -1 : utf8Length(fields.userId)
  if (
    contentType > 255 || correlationId > 255 || replyTo > 255 || expiration > 255 || messageId > 255 ||
    type > 255 || userId > 255
  ) return undefined
  if (contentType >= 0) {
    flags |= 32768
    size += 1 + contentType
  }
  let headers = 0
  let table = 0
  for (const key in fields.headers) {
    const value = fields.headers[key]
    if (value === undefined) continue
    if (typeof value !== "string") return undefined
    const keyLength = utf8Length(key)
    if (keyLength > 255) return undefined
    const valueLength = utf8Length(value)
    headerLengths[headers++] = keyLength
    headerLengths[headers++] = valueLength
    table += 1 + keyLength + 1 + 4 + valueLength
  }
  flags |= 8192
  size += 4 + table
  if (fields.deliveryMode !== undefined) {
    // amqplib rejects what is not a byte; only the two modes there are get written here
    if (fields.deliveryMode !== 1 && fields.deliveryMode !== 2) return undefined
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
  if (userId >= 0) {
    flags |= 16
    size += 1 + userId
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
  if (userId >= 0 && fields.userId !== undefined) offset = writeShort(bytes, fields.userId, userId, offset)
  bytes[offset++] = frameEnd
  // body frame
  if (bodySize > 0) {
    bytes[offset] = 3
    bytes.writeUInt16BE(ch, offset + 1)
    bytes.writeUInt32BE(content.length, offset + 3)
    content.copy(bytes, offset + 7)
    bytes[offset + 7 + content.length] = frameEnd
  }
  path.link.wire.sentSinceLastCheck = true
  return bytes
}
