/**
 * How a contract's messages are written on the broker: JSON (the default) or MessagePack, each one of
 * effect/rpc's `RpcSerialization`s, named by the message's AMQP `content_type`.
 *
 * A contract chooses the format its callers write (`ServiceContract.make(name, rpcs, { format })`);
 * a service reads every format it knows (both of these) whatever its own contract says, and answers a
 * request in the format it came in. A caller and a service that disagree therefore interoperate, and a
 * request in a format the service does not know (another content type) is refused with
 * `InvalidPayload` naming it, answered or dead-lettered as every refused request is.
 *
 * Both formats carry the same values: the schemas' JSON encoding (effect/rpc's `codecFor` is
 * `Schema.toCodecJson` for both), so a contract's schemas need nothing of their own for MessagePack.
 * effect 4's `RpcSerialization` has no MessagePack serialization of its own (effect 3's `msgPack` was
 * msgpackr's); `msgPack` is the same made with `RpcSerialization.of` and msgpackr, in standard
 * MessagePack (maps, no records extension), which other languages' decoders read.
 *
 * ```ts
 * export const Calculator = ServiceContract.make("calculator", CalculatorRpcs, { format: WireFormat.msgPack })
 * ```
 *
 * @since 0.1.0
 */
import { Context, Schema } from "effect"
import { RpcSerialization } from "effect/rpc"
import { Packr, Unpackr } from "msgpackr"

/**
 * A wire format: its name, the `content_type` its messages carry, and the effect/rpc serialization
 * that writes and reads them.
 *
 * @since 0.1.0
 */
export interface WireFormat {
  readonly name: "json" | "msgpack"
  readonly contentType: string
  readonly serialization: RpcSerialization.RpcSerialization["Service"]
}

/**
 * JSON, `application/json`: effect/rpc's `RpcSerialization.json`. The default.
 *
 * @since 0.1.0
 */
export const json: WireFormat = {
  name: "json",
  contentType: RpcSerialization.json.contentType,
  serialization: RpcSerialization.json
}

// standard MessagePack: objects as maps, read back as plain objects
const packr = new Packr({ useRecords: false })
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true })
const textEncoder = new TextEncoder()

/**
 * MessagePack, `application/msgpack`: smaller than JSON for numbers and many short fields, and
 * faster to read where a body is mostly long strings.
 *
 * @since 0.1.0
 */
export const msgPack: WireFormat = {
  name: "msgpack",
  contentType: "application/msgpack",
  serialization: RpcSerialization.RpcSerialization.of({
    contentType: "application/msgpack",
    // a broker message is a whole message: no framing needed
    includesFraming: false,
    codecFor: Schema.toCodecJson as RpcSerialization.CodecFor,
    makeUnsafe: () => ({
      decode: (data) => [unpackr.unpack(typeof data === "string" ? textEncoder.encode(data) : data)],
      encode: (message) => packr.pack(message)
    })
  })
}

/**
 * The formats every service reads.
 *
 * @since 0.1.0
 */
export const known: ReadonlyArray<WireFormat> = [json, msgPack]

/**
 * The format an rpc's requests are written in, as an annotation of the rpc (`ServiceContract.make`'s
 * `format` puts it on every rpc of the contract); JSON without one.
 *
 * @since 0.1.0
 */
export const Format = Context.Reference<WireFormat>("effect-mesh/WireFormat/Format", { defaultValue: () => json })
