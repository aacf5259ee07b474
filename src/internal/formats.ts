/**
 * The wire formats (WireFormat.ts) as the protocols use them: a body's bytes from a value and back,
 * and the format a message's `content_type` names. Each is made once; a caller resolves its format
 * once per rpc (internal/codecs.ts), an instance once per delivery by one comparison for JSON.
 *
 * JSON is read and written with the wire's own functions (node's Buffer, faster than a TextDecoder
 * for small bodies), as effect/rpc's `RpcSerialization.json` would, but without its reading of an array
 * as a batch of messages: a body here is one value. MessagePack goes through its serialization's parser.
 *
 * @internal
 */
import { Option } from "effect"
import * as WireFormat from "../WireFormat.ts"
import * as wire from "./wire.ts"

/** @internal */
export interface BodyFormat {
  readonly format: WireFormat.WireFormat
  readonly contentType: string
  readonly encode: (value: unknown) => Uint8Array
  /** `None` for bytes that are not a message of this format */
  readonly decode: (body: Uint8Array) => Option.Option<unknown>
}

/** @internal */
export const json: BodyFormat = {
  format: WireFormat.json,
  contentType: WireFormat.json.contentType,
  encode: wire.encodeJson,
  decode: wire.decodeJson
}

const msgPackParser = WireFormat.msgPack.serialization.makeUnsafe()

/** @internal */
export const msgPack: BodyFormat = {
  format: WireFormat.msgPack,
  contentType: WireFormat.msgPack.contentType,
  encode: (value) => msgPackParser.encode(value) as Uint8Array,
  decode: Option.liftThrowable((body: Uint8Array): unknown => msgPackParser.decode(body)[0])
}

/** @internal */
export const of = (format: WireFormat.WireFormat): BodyFormat => format.name === "msgpack" ? msgPack : json

/**
 * The format a message's `content_type` names; a message without one is JSON (as every message before
 * formats were). `undefined` for a format this process does not know.
 *
 * @internal
 */
export const ofContentType = (contentType: string | undefined): BodyFormat | undefined =>
  contentType === undefined || contentType === json.contentType
    ? json
    : contentType === msgPack.contentType
    ? msgPack
    : undefined

/** why a message in a format not known is refused */
export const unknownContentType = (contentType: string): string =>
  `content-type "${contentType}" is not a format this service reads (${WireFormat.known.map((f) => f.contentType).join(", ")})`
