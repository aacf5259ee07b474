/**
 * The amqplib fast path (`src/internal/amqplibFastPath.ts`) against the installed amqplib and a real
 * RabbitMQ: its bytes are amqplib's bytes, it is the path taken when amqplib is of the expected shape,
 * and where it is not, one warning is logged and amqplib's own path delivers.
 *
 * The byte comparison runs two real connections side by side, each with a plain and a confirm channel
 * (so the same channel numbers on both), with the channels' write buffers replaced by recorders that
 * keep what they are given and pass nothing on: nothing of it reaches the broker.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Queue, Result } from "effect"
import fc from "fast-check"
import * as Amqp from "../src/internal/amqplib.ts"
import * as FastPath from "../src/internal/amqplibFastPath.ts"
import { amqpUrl } from "./fixtures/amqpUrl.ts"
import { captureLogs, type LogLine } from "./fixtures/logs.ts"

const suffix = () => crypto.randomUUID().slice(0, 8)

// ---- amqplib's internals, as the test reaches them ----

const get = (owner: unknown, key: string): unknown =>
  (typeof owner === "object" && owner !== null) || typeof owner === "function" ? Reflect.get(owner, key) : undefined

const objectAt = (owner: unknown, key: string): object => {
  const value = get(owner, key)
  if (typeof value !== "object" || value === null) throw new Error(`amqplib has no object at '${key}'`)
  return value
}

const numberAt = (owner: unknown, key: string): number => {
  const value = get(owner, key)
  if (typeof value !== "number") throw new Error(`amqplib has no number at '${key}'`)
  return value
}

const functionAt = (owner: unknown, key: string): (...args: ReadonlyArray<unknown>) => unknown => {
  const value = get(owner, key)
  if (typeof value !== "function") throw new Error(`amqplib has no function at '${key}'`)
  return (...args) => Reflect.apply(value, owner, args)
}

/** amqplib's connection under the `ChannelModel` */
const wireOf = (connection: Amqp.Connection): object => objectAt(connection, "connection")

/** the write buffer of a channel's slot in its connection's channel table */
const slotBufferOf = (connection: Amqp.Connection, channel: Amqp.Channel): object => {
  const channels = get(wireOf(connection), "channels")
  if (!Array.isArray(channels)) throw new Error("amqplib has no channel table")
  return objectAt(channels[numberAt(channel, "ch")], "buffer")
}

/** replaces a channel slot's `write` with one that keeps the chunks and sends nothing; returns the undo */
const record = (connection: Amqp.Connection, channel: Amqp.Channel, chunks: Array<Buffer>): () => void => {
  const buffer = slotBufferOf(connection, channel)
  Object.defineProperty(buffer, "write", {
    configurable: true,
    writable: true,
    value: (chunk: Buffer) => {
      chunks.push(Buffer.from(chunk))
      return true
    }
  })
  return () => {
    Reflect.deleteProperty(buffer, "write")
  }
}

/** counts the calls of amqplib's `connection.sendMessage` (amqplib's encoder); returns the count and the undo */
const countSendMessage = (connection: Amqp.Connection): { readonly calls: () => number; readonly undo: () => void } => {
  const wire = wireOf(connection)
  const original = functionAt(wire, "sendMessage")
  let calls = 0
  Object.defineProperty(wire, "sendMessage", {
    configurable: true,
    writable: true,
    value: (...args: ReadonlyArray<unknown>) => {
      calls++
      return original(...args)
    }
  })
  return {
    calls: () => calls,
    undo: () => {
      Reflect.deleteProperty(wire, "sendMessage")
    }
  }
}

const open = (socketOptions: Amqp.SocketOptions = { noDelay: true }) =>
  Effect.acquireRelease(
    Amqp.connect(amqpUrl(), socketOptions),
    (connection) => Effect.ignore(Amqp.closeConnection(connection))
  )

/** starts a consumer on a fresh exclusive queue; `take(n)` waits for the next `n` messages */
const queueWithConsumer = (channel: Amqp.Channel) =>
  Effect.gen(function*() {
    const name = yield* Amqp.assertQueue(channel, `t.fastpath.${suffix()}`, { exclusive: true, autoDelete: true })
    const received = yield* Queue.unbounded<Amqp.RawMessage>()
    yield* Amqp.consume(channel, name, (message) => {
      if (message !== null) Queue.offerUnsafe(received, message)
    }, { noAck: true })
    return { name, take: (n: number) => Queue.takeN(received, n) }
  })

/** the headers as a consumer sees them, with long strings decoded */
const headersOf = (message: Amqp.RawMessage): Record<string, unknown> => {
  const headers: unknown = message.properties.headers
  return typeof headers === "object" && headers !== null ? { ...headers } : {}
}

const expectedMessages = [
  {
    body: Buffer.from("héllo, wörld 😀"),
    options: {
      contentType: "text/plain",
      correlationId: "corr-1",
      replyTo: "somewhere",
      messageId: "msg-1",
      type: "greeting",
      expiration: "60000",
      persistent: true,
      headers: { plain: "value", "ключ": "значение 🚀", empty: "" }
    }
  },
  {
    body: Buffer.alloc(0),
    options: { headers: { only: "strings" } }
  },
  {
    // amqplib's encoder: a number, a boolean and a table among the headers
    body: Buffer.alloc(3000, 7),
    options: { priority: 3, headers: { n: 42, f: 1.5, b: true, nested: { s: "x" } } }
  }
] as const

/** publishes the messages above, the first two on `channel`, the last with a confirm on `confirm` */
const publishAll = (channel: Amqp.Channel, confirm: Amqp.ConfirmChannel, queue: string) =>
  Effect.gen(function*() {
    const [first, second, third] = expectedMessages
    yield* Amqp.publish(channel, "", queue, first.body, first.options)
    yield* Amqp.publishConfirm(confirm, "", queue, second.body, second.options)
    yield* Amqp.publishConfirm(confirm, "", queue, third.body, third.options)
  })

const checkDelivered = (received: ReadonlyArray<Amqp.RawMessage>) => {
  assert.strictEqual(received.length, expectedMessages.length)
  // published on two channels, so they may reach the queue in either order: matched by body (distinct)
  const messages = expectedMessages.map((expected, i) => {
    const message = received.find((m) => m.content.equals(expected.body))
    if (message === undefined) return assert.fail(`the body of message ${i} never arrived intact`)
    assert.deepStrictEqual(headersOf(message), expected.options.headers)
    return message
  })
  const [first] = messages
  assert.strictEqual(first.properties.contentType, "text/plain")
  assert.strictEqual(first.properties.correlationId, "corr-1")
  assert.strictEqual(first.properties.replyTo, "somewhere")
  assert.strictEqual(first.properties.messageId, "msg-1")
  assert.strictEqual(first.properties.type, "greeting")
  assert.strictEqual(first.properties.expiration, "60000")
  assert.strictEqual(first.properties.deliveryMode, 2)
  assert.strictEqual(messages[2].properties.priority, 3)
}

/**
 * Opens a plain, a confirm and a consumer channel on a connection amqplib's fast path refused, and
 * checks that none took it, that exactly one warning named `mismatch`, and that amqplib's own path
 * delivers the messages intact.
 */
const deliversOffThePath = (
  connection: Amqp.Connection,
  lines: ReadonlyArray<LogLine>,
  mismatch: string
) =>
  Effect.gen(function*() {
    const channel = yield* Amqp.createChannel(connection)
    const confirm = yield* Amqp.createConfirmChannel(connection)
    const consumer = yield* Amqp.createChannel(connection)
    assert.isFalse(FastPath.isFastConnection(connection))
    assert.isFalse(FastPath.isFastChannel(channel))
    assert.isFalse(FastPath.isFastChannel(confirm))

    const queue = yield* queueWithConsumer(consumer)
    yield* publishAll(channel, confirm, queue.name)
    checkDelivered(yield* queue.take(expectedMessages.length))

    const warned = lines.filter((line) => line.level === "Warn")
    assert.strictEqual(warned.length, 1, JSON.stringify(lines))
    assert.include(warned[0].message, mismatch)
  })

// ---- generated publishes ----

/** a string of exactly `bytes` UTF-8 bytes, made of `unit` as far as it goes */
const ofBytes = (bytes: number, unit: string): string => {
  const unitBytes = Buffer.byteLength(unit)
  const s = unit.repeat(Math.floor(bytes / unitBytes))
  return s + "a".repeat(bytes - Buffer.byteLength(s))
}

/** strings around the 255-byte limit of a short string, in 1- to 4-byte characters */
const nearLimit = fc.tuple(fc.integer({ min: 248, max: 257 }), fc.constantFrom("a", "é", "€", "😀")).map((
  [bytes, unit]
) => ofBytes(bytes, unit))

const text = fc.oneof(
  { weight: 4, arbitrary: fc.string({ maxLength: 24 }) },
  { weight: 2, arbitrary: fc.string({ unit: "grapheme", maxLength: 12 }) },
  { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 8 }) }
)

const shortText = fc.oneof({ weight: 12, arbitrary: text }, { weight: 1, arbitrary: nearLimit })

const headerKey = fc.oneof({ weight: 8, arbitrary: shortText }, { weight: 1, arbitrary: fc.nat(999).map(String) })

const longText = fc.oneof(
  { weight: 8, arbitrary: text },
  { weight: 1, arbitrary: nearLimit },
  { weight: 1, arbitrary: fc.string({ minLength: 256, maxLength: 1200 }) }
)

/** amqplib's explicit `{ '!': type, value }` forms, each with values in its range */
const explicit = fc.oneof(
  fc.record({ "!": fc.constantFrom("byte", "int8"), value: fc.integer({ min: -128, max: 127 }) }),
  fc.record({ "!": fc.constantFrom("unsignedbyte", "uint8"), value: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ "!": fc.constantFrom("short", "int16"), value: fc.integer({ min: -32768, max: 32767 }) }),
  fc.record({ "!": fc.constantFrom("unsignedshort", "uint16"), value: fc.integer({ min: 0, max: 65535 }) }),
  fc.record({ "!": fc.constantFrom("int", "int32"), value: fc.integer() }),
  fc.record({ "!": fc.constantFrom("unsignedint", "uint32"), value: fc.integer({ min: 0, max: 0xffffffff }) }),
  fc.record({ "!": fc.constantFrom("long", "int64"), value: fc.maxSafeInteger() }),
  fc.record({ "!": fc.constant("timestamp"), value: fc.maxSafeNat() }),
  fc.record({ "!": fc.constant("float"), value: fc.float() }),
  fc.record({ "!": fc.constantFrom("double", "float64"), value: fc.double() }),
  fc.record({
    "!": fc.constant("decimal"),
    value: fc.record({ places: fc.integer({ min: 0, max: 255 }), digits: fc.integer({ min: 0, max: 0xffffffff }) })
  }),
  fc.record({ "!": fc.constant("string"), value: longText }),
  fc.record({ "!": fc.constant("boolean"), value: fc.boolean() })
)

/** every kind of field value amqplib encodes: it guesses the type of a number from its value */
const { value: fieldValue } = fc.letrec<{ value: unknown }>((tie) => ({
  value: fc.oneof(
    { depthSize: "small" },
    longText,
    fc.integer({ min: -128, max: 127 }),
    fc.integer({ min: -32768, max: 32767 }),
    fc.integer(),
    fc.maxSafeInteger(),
    fc.double(),
    fc.boolean(),
    fc.constant(null),
    fc.constant(undefined),
    fc.uint8Array({ maxLength: 40 }).map((bytes) => Buffer.from(bytes)),
    fc.date(),
    explicit,
    fc.array(tie("value"), { maxLength: 4 }),
    fc.dictionary(headerKey, tie("value"), { maxKeys: 4 })
  )
}))

const anyHeaders = fc.dictionary(headerKey, fieldValue, { maxKeys: 6 })

/** what effect-mesh publishes: string headers (the fast path's own encoder), some left undefined */
const stringHeaders = fc.dictionary(headerKey, fc.option(longText, { nil: undefined, freq: 8 }), { maxKeys: 6 })

/** the options an effect-mesh publish carries */
const meshOptions = fc.record({
  mandatory: fc.boolean(),
  contentType: shortText,
  persistent: fc.boolean(),
  deliveryMode: fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom(1, 2) },
    { weight: 1, arbitrary: fc.boolean() },
    { weight: 1, arbitrary: fc.integer({ min: -1, max: 300 }) }
  ),
  correlationId: shortText,
  replyTo: shortText,
  expiration: fc.oneof(shortText, fc.nat()),
  messageId: shortText,
  type: shortText,
  headers: stringHeaders
}, { requiredKeys: [] })

/** every publish option amqplib has */
const allOptions = fc.record({
  mandatory: fc.boolean(),
  contentType: shortText,
  contentEncoding: shortText,
  headers: fc.oneof(anyHeaders, stringHeaders),
  persistent: fc.boolean(),
  deliveryMode: fc.oneof(fc.boolean(), fc.integer({ min: 0, max: 2 }), fc.integer({ min: -1, max: 300 })),
  priority: fc.oneof(fc.integer({ min: 0, max: 9 }), fc.integer({ min: 0, max: 256 })),
  correlationId: shortText,
  replyTo: shortText,
  expiration: fc.oneof(shortText, fc.nat()),
  messageId: shortText,
  timestamp: fc.oneof(fc.nat(), fc.maxSafeNat()),
  type: shortText,
  userId: shortText,
  appId: shortText
}, { requiredKeys: [] })

/** CC and BCC, which go through `channel.publish` as they are */
const ccOptions = fc.record({
  CC: fc.oneof(text, fc.array(text, { maxLength: 3 })),
  BCC: fc.oneof(text, fc.array(text, { maxLength: 3 })),
  headers: stringHeaders
}, { requiredKeys: ["CC"] })

const options: fc.Arbitrary<Amqp.PublishOptions> = fc.oneof(
  { weight: 5, arbitrary: meshOptions },
  { weight: 4, arbitrary: allOptions },
  { weight: 1, arbitrary: ccOptions }
)

/** a body of a given length; one `delta` from the single-chunk threshold (2048 bytes in all); or around frameMax */
type BodySize =
  | { readonly _tag: "Length"; readonly length: number }
  | { readonly _tag: "Threshold"; readonly delta: number }
  | { readonly _tag: "FrameMax"; readonly frames: number; readonly delta: number }

const bodySize: fc.Arbitrary<BodySize> = fc.oneof(
  { weight: 2, arbitrary: fc.constant({ _tag: "Length", length: 0 } as const) },
  {
    weight: 8,
    arbitrary: fc.integer({ min: 1, max: 200 }).map((length) => ({ _tag: "Length", length } as const))
  },
  {
    weight: 3,
    arbitrary: fc.integer({ min: 200, max: 5000 }).map((length) => ({ _tag: "Length", length } as const))
  },
  {
    weight: 5,
    arbitrary: fc.integer({ min: -3, max: 3 }).map((delta) => ({ _tag: "Threshold", delta } as const))
  },
  {
    weight: 1,
    arbitrary: fc.record({ frames: fc.integer({ min: 1, max: 3 }), delta: fc.integer({ min: -2, max: 2 }) }).map((
      { delta, frames }
    ) => ({ _tag: "FrameMax", frames, delta } as const))
  }
)

const publishCase = fc.record({
  confirm: fc.boolean(),
  exchange: fc.oneof({ weight: 3, arbitrary: fc.constantFrom("", "amq.topic", "mesh.events") }, {
    weight: 2,
    arbitrary: shortText
  }),
  routingKey: shortText,
  options,
  body: bodySize,
  seed: fc.nat(255)
})

const bodyOf = (length: number, seed: number): Buffer => {
  const body = Buffer.allocUnsafe(length)
  for (let i = 0; i < length; i++) body[i] = (i * 31 + seed) & 255
  return body
}

const firstDifference = (a: Buffer, b: Buffer): number => {
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i
  return n
}

const noConfirm = () => {}

const runs = 4000

describe("amqplib fast path", () => {
  it.effect(`writes the bytes amqplib writes, over ${runs} generated publishes`, () =>
    Effect.gen(function*() {
      const reference = yield* open()
      const fast = yield* open()
      const plainA = yield* Amqp.createChannel(reference)
      const confirmA = yield* Amqp.createConfirmChannel(reference)
      const plainB = yield* Amqp.createChannel(fast)
      const confirmB = yield* Amqp.createConfirmChannel(fast)
      assert.isTrue(FastPath.isFastChannel(plainB))
      assert.isTrue(FastPath.isFastChannel(confirmB))
      assert.strictEqual(numberAt(plainA, "ch"), numberAt(plainB, "ch"))
      assert.strictEqual(numberAt(confirmA, "ch"), numberAt(confirmB, "ch"))
      const frameMax = numberAt(wireOf(fast), "frameMax")
      assert.strictEqual(numberAt(wireOf(reference), "frameMax"), frameMax)

      const recordedA: Array<Buffer> = []
      const recordedB: Array<Buffer> = []
      const undo = [
        record(reference, plainA, recordedA),
        record(reference, confirmA, recordedA),
        record(fast, plainB, recordedB),
        record(fast, confirmB, recordedB)
      ]
      const amqplibEncoder = countSendMessage(fast)
      yield* Effect.addFinalizer(() =>
        Effect.sync(() => {
          amqplibEncoder.undo()
          undo.forEach((f) => f())
        })
      )

      const seen = { encoder: 0, amqplib: 0, failed: 0, justUnder: 0, atThreshold: 0, aroundFrameMax: 0, large: 0 }
      const property = fc.property(publishCase, (c) => {
        const { exchange, routingKey } = c
        let length = 0
        if (c.body._tag === "Length") length = c.body.length
        else if (c.body._tag === "FrameMax") length = c.body.frames * (frameMax - 8) + c.body.delta
        else {
          // the method and header frames, measured with amqplib's encoder, and the body to reach the threshold
          recordedA.length = 0
          const measured = Result.try(() => plainA.publish(exchange, routingKey, Buffer.alloc(0), c.options))
          const frames = Buffer.concat(recordedA).length
          length = Result.isSuccess(measured) ? Math.max(1, 2048 - frames - 8 + c.body.delta) : 2048
        }
        const content = bodyOf(length, c.seed)

        recordedA.length = 0
        recordedB.length = 0
        const expected = Result.try(() =>
          c.confirm
            ? confirmA.publish(exchange, routingKey, content, c.options, noConfirm)
            : plainA.publish(exchange, routingKey, content, c.options)
        )
        const before = amqplibEncoder.calls()
        const actual = Result.try(() =>
          FastPath.send(c.confirm ? confirmB : plainB, exchange, routingKey, content, c.options, c.confirm ? noConfirm : undefined)
        )
        const viaAmqplib = amqplibEncoder.calls() !== before
        const a = Buffer.concat(recordedA)
        const b = Buffer.concat(recordedB)

        if (Result.isFailure(expected)) {
          seen.failed++
          assert.isTrue(Result.isFailure(actual), `amqplib threw ${String(expected.failure)}, the fast path did not`)
          if (Result.isFailure(actual)) assert.strictEqual(String(actual.failure), String(expected.failure))
          assert.strictEqual(b.length, 0)
          return
        }
        assert.isTrue(Result.isSuccess(actual), `the fast path threw: ${Result.isFailure(actual) ? String(actual.failure) : ""}`)
        if (Result.isSuccess(actual)) assert.strictEqual(actual.success, expected.success)
        const at = firstDifference(a, b)
        assert.isTrue(
          a.equals(b),
          `${a.length} bytes from amqplib, ${b.length} from the fast path, first difference at ${at}: ` +
            `${a.subarray(at, at + 16).toString("hex")} against ${b.subarray(at, at + 16).toString("hex")}`
        )
        if (viaAmqplib) seen.amqplib++
        else seen.encoder++
        if (!viaAmqplib && a.length === 2047) seen.justUnder++
        if (viaAmqplib && a.length === 2048) seen.atThreshold++
        if (c.body._tag === "FrameMax") seen.aroundFrameMax++
        if (length > 2048) seen.large++
      })
      yield* Effect.sync(() => fc.assert(property, { numRuns: runs }))

      // both ends of the property were exercised
      assert.isAbove(seen.encoder, runs / 10, JSON.stringify(seen))
      assert.isAbove(seen.amqplib, runs / 10, JSON.stringify(seen))
      assert.isAbove(seen.failed, 0, JSON.stringify(seen))
      assert.isAbove(seen.justUnder, 0, JSON.stringify(seen))
      assert.isAbove(seen.atThreshold, 0, JSON.stringify(seen))
      assert.isAbove(seen.aroundFrameMax, 0, JSON.stringify(seen))
      assert.isAbove(seen.large, 0, JSON.stringify(seen))
      // the confirm channels registered the same confirm callbacks
      assert.strictEqual(
        get(objectAt(confirmB, "unconfirmed"), "length"),
        get(objectAt(confirmA, "unconfirmed"), "length")
      )
    }), 240_000)

  it.effect("with the installed amqplib, connect and createChannel take the fast path, and it delivers intact", () =>
    Effect.gen(function*() {
      const connection = yield* open()
      const channel = yield* Amqp.createChannel(connection)
      const confirm = yield* Amqp.createConfirmChannel(connection)
      const consumer = yield* Amqp.createChannel(connection)
      assert.isTrue(FastPath.isFastConnection(connection))
      assert.isTrue(FastPath.isFastChannel(channel))
      assert.isTrue(FastPath.isFastChannel(confirm))
      // the flush of the multiplexer is the corked one
      assert.isTrue(Object.hasOwn(objectAt(wireOf(connection), "muxer"), "_readIncoming"))

      const queue = yield* queueWithConsumer(consumer)
      const amqplibEncoder = countSendMessage(connection)
      yield* publishAll(channel, confirm, queue.name)
      // the first two were encoded by the fast path, the third (numbers in its headers) by amqplib
      assert.strictEqual(amqplibEncoder.calls(), 1)
      amqplibEncoder.undo()
      checkDelivered(yield* queue.take(expectedMessages.length))

      // a publish on a closed channel fails as amqplib fails it
      yield* Amqp.closeChannel(channel)
      const error = yield* Effect.flip(Amqp.publish(channel, "", queue.name, Buffer.from("late"), {}))
      assert.strictEqual(error.reason, "Closed")
    }))

  it.effect("a connection of another shape (amqplib's recovering model): one warning, and amqplib's path delivers", () => {
    const logs = captureLogs()
    const recovery = { recovery: { initialDelay: 50 } }
    return Effect.gen(function*() {
      const connection = yield* open({ noDelay: true, ...recovery })
      yield* deliversOffThePath(connection, logs.lines, "connection.connection")
    }).pipe(Effect.provide(logs.layer))
  })

  it.effect("a channel whose internals are altered: one warning, the whole connection back on amqplib's path, delivered", () => {
    const logs = captureLogs()
    return Effect.gen(function*() {
      const connection = yield* open()
      const early = yield* Amqp.createChannel(connection)
      assert.isTrue(FastPath.isFastConnection(connection))
      assert.isTrue(FastPath.isFastChannel(early))
      // as a wrapper around amqplib might: the channel talks to its connection through a proxy
      const createChannel = connection.createChannel.bind(connection)
      connection.createChannel = () =>
        createChannel().then((channel) => {
          Reflect.set(channel, "connection", new Proxy(objectAt(channel, "connection"), {}))
          return channel
        })
      yield* deliversOffThePath(connection, logs.lines, "channel.connection")
      // the corked flush is undone
      const muxer = objectAt(wireOf(connection), "muxer")
      assert.strictEqual(get(muxer, "_readIncoming"), get(Object.getPrototypeOf(muxer), "_readIncoming"))
      // and a channel opened before goes through amqplib's encoder too
      assert.isFalse(FastPath.isFastChannel(early))
      const amqplibEncoder = countSendMessage(connection)
      yield* Amqp.publish(early, "", `t.nowhere.${suffix()}`, Buffer.from("x"), { headers: { s: "x" } })
      amqplibEncoder.undo()
      assert.strictEqual(amqplibEncoder.calls(), 1)
    }).pipe(Effect.provide(logs.layer))
  })
})
