/**
 * The cryptography of sealed rpcs (Sealed.ts), the one place `node:crypto` is used for it.
 *
 * A request is sealed for the service's X25519 public key with a key pair the caller makes for that
 * one call: X25519 between the two gives a shared secret, HKDF-SHA256 (salted with both public keys)
 * makes two AES-256-GCM keys from it, one for the request and one for its answers. Only the service's
 * private key and the call's own private key (which never leaves the caller's memory) can make them,
 * so the answers are sealed for that caller alone, and a key learnt later opens no earlier call.
 *
 * A request's body: `1` (the version), the call's public key (32 bytes), a random nonce (12 bytes),
 * the ciphertext and its tag (16 bytes). An answer's (the Exit, each stream chunk, a refusal after
 * the request was opened): `1`, a random nonce, the ciphertext and its tag. The associated data binds
 * each to its service, method, correlation id and direction: a sealed body moved to another method,
 * another call or the other direction does not open.
 *
 * Nothing here throws to its caller: what fails to open is a `Result` failure with a reason that
 * names no key and no content.
 *
 * @internal
 */
import { Option, Result } from "effect"
import {
  createCipheriv,
  createDecipheriv,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  hkdfSync,
  type KeyObject,
  randomBytes
} from "node:crypto"
import * as Formats from "./formats.ts"

const version = 1
const keyLength = 32
const nonceLength = 12
const tagLength = 16
const info = Buffer.from("effect-mesh sealed v1", "utf8")

// the DER wrappings of a raw X25519 key: PKCS#8 for a private key, SPKI for a public one
const pkcs8Prefix = Buffer.from("302e020100300506032b656e04220420", "hex")
const spkiPrefix = Buffer.from("302a300506032b656e032100", "hex")

/** a key pair as text: each key its 32 raw bytes in base64url */
export interface RawKeyPair {
  readonly publicKey: string
  readonly privateKey: string
}

/** a service's key, ready to open requests with */
export interface ServiceKey {
  readonly privateKey: KeyObject
  /** its public key's raw bytes, and as text (what discovery announces) */
  readonly publicRaw: Buffer
  readonly publicKey: string
}

/** a service's public key, ready to seal requests with */
export interface PublicKey {
  readonly key: KeyObject
  readonly raw: Buffer
}

const rawPublic = (key: KeyObject): Buffer => Buffer.from(key.export({ format: "der", type: "spki" }).subarray(spkiPrefix.length))

const fromBase64Url = (text: string): Option.Option<Buffer> => {
  const bytes = Buffer.from(text.trim(), "base64url")
  return bytes.length === keyLength ? Option.some(bytes) : Option.none()
}

/** a fresh key pair */
export const generate = (): RawKeyPair => {
  const pair = generateKeyPairSync("x25519")
  const der = pair.privateKey.export({ format: "der", type: "pkcs8" })
  return {
    publicKey: rawPublic(pair.publicKey).toString("base64url"),
    privateKey: Buffer.from(der.subarray(pkcs8Prefix.length)).toString("base64url")
  }
}

/** a service's key from its private key as text; `None` for text that is not one */
export const serviceKey = (privateKey: string): Option.Option<ServiceKey> =>
  Option.flatMap(fromBase64Url(privateKey), (raw) =>
    Option.map(
      Option.liftThrowable(() => createPrivateKey({ key: Buffer.concat([pkcs8Prefix, raw]), format: "der", type: "pkcs8" }))(),
      (key): ServiceKey => {
        const publicRaw = rawPublic(createPublicKey(key))
        return { privateKey: key, publicRaw, publicKey: publicRaw.toString("base64url") }
      }
    ))

const importPublic = (raw: Buffer): Option.Option<KeyObject> =>
  Option.liftThrowable(() => createPublicKey({ key: Buffer.concat([spkiPrefix, raw]), format: "der", type: "spki" }))()

/** a service's public key from its text; `None` for text that is not one */
export const publicKey = (text: string): Option.Option<PublicKey> =>
  Option.flatMap(fromBase64Url(text), (raw) => Option.map(importPublic(raw), (key): PublicKey => ({ key, raw })))

/** the request's and the answers' keys of one call */
const callKeys = (shared: Buffer, callPublic: Buffer, servicePublic: Buffer) => {
  const keys = Buffer.from(hkdfSync("sha256", shared, Buffer.concat([callPublic, servicePublic]), info, 2 * keyLength))
  return { request: keys.subarray(0, keyLength), reply: keys.subarray(keyLength) }
}

const associated = (service: string, method: string, correlationId: string, direction: "request" | "reply"): Buffer =>
  Buffer.from(`effect-mesh/sealed\n${service}\n${method}\n${correlationId}\n${direction}`, "utf8")

const encrypt = (key: Buffer, aad: Buffer, plaintext: Uint8Array, prefix: ReadonlyArray<Uint8Array>): Uint8Array => {
  const nonce = randomBytes(nonceLength)
  const cipher = createCipheriv("aes-256-gcm", key, nonce, { authTagLength: tagLength })
  cipher.setAAD(aad)
  const body = cipher.update(plaintext)
  const last = cipher.final()
  return Buffer.concat([...prefix, nonce, body, last, cipher.getAuthTag()])
}

const decrypt = (key: Buffer, aad: Buffer, sealed: Uint8Array): Option.Option<Buffer> =>
  Option.liftThrowable(() => {
    const decipher = createDecipheriv("aes-256-gcm", key, sealed.subarray(0, nonceLength), { authTagLength: tagLength })
    decipher.setAAD(aad)
    decipher.setAuthTag(sealed.subarray(sealed.length - tagLength))
    const body = decipher.update(sealed.subarray(nonceLength, sealed.length - tagLength))
    return Buffer.concat([body, decipher.final()])
  })()

/** what seals and opens the answers of one call, on either end */
export interface Answers {
  readonly seal: (plaintext: Uint8Array) => Uint8Array
  readonly open: (body: Uint8Array) => Option.Option<Buffer>
}

const answers = (key: Buffer, aad: Buffer): Answers => ({
  seal: (plaintext) => encrypt(key, aad, plaintext, [versionByte]),
  open: (body) =>
    body.length < 1 + nonceLength + tagLength || body[0] !== version ? Option.none() : decrypt(key, aad, body.subarray(1))
})

const versionByte = Uint8Array.of(version)

/** a call's request sealed for a service, and what opens its answers */
export const sealRequest = (
  service: PublicKey,
  names: { readonly service: string; readonly method: string; readonly correlationId: string },
  plaintext: Uint8Array
): { readonly body: Uint8Array; readonly answers: Answers } => {
  const call = generateKeyPairSync("x25519")
  const callPublic = rawPublic(call.publicKey)
  const keys = callKeys(diffieHellman({ privateKey: call.privateKey, publicKey: service.key }), callPublic, service.raw)
  return {
    body: encrypt(keys.request, associated(names.service, names.method, names.correlationId, "request"), plaintext, [versionByte, callPublic]),
    answers: answers(keys.reply, associated(names.service, names.method, names.correlationId, "reply"))
  }
}

/** why a sealed request did not open: never its content, never a key */
export const notOpened = "the sealed body could not be opened: it was altered, sealed for another key, or for another method or call"

/** opens a request sealed for this service: its plaintext and what seals its answers */
export const openRequest = (
  key: ServiceKey,
  names: { readonly service: string; readonly method: string; readonly correlationId: string },
  body: Uint8Array
): Result.Result<{ readonly plaintext: Buffer; readonly answers: Answers }, string> => {
  if (body.length < 1 + keyLength + nonceLength + tagLength || body[0] !== version) return Result.fail(notOpened)
  const callPublic = Buffer.from(body.subarray(1, 1 + keyLength))
  const opened = Option.flatMap(importPublic(callPublic), (callKey) =>
    Option.flatMap(
      Option.liftThrowable(() => diffieHellman({ privateKey: key.privateKey, publicKey: callKey }))(),
      (shared) => {
        const keys = callKeys(shared, callPublic, key.publicRaw)
        return Option.map(
          decrypt(keys.request, associated(names.service, names.method, names.correlationId, "request"), body.subarray(1 + keyLength)),
          (plaintext) => ({ plaintext, answers: answers(keys.reply, associated(names.service, names.method, names.correlationId, "reply")) })
        )
      }
    ))
  return Option.match(opened, { onNone: () => Result.fail(notOpened), onSome: Result.succeed })
}

// ---- content types ----

const contentTypePrefix = "application/vnd.effect-mesh.sealed+"

/** the content type of a body sealed over a format: `application/vnd.effect-mesh.sealed+json` */
export const contentTypeOf = (format: Formats.BodyFormat): string => contentTypePrefix + format.format.name

/** whether a content type says sealed */
export const isSealedContentType = (contentType: string | undefined): contentType is string =>
  contentType !== undefined && contentType.startsWith(contentTypePrefix)

/** the format inside a sealed content type; `undefined` for one this process does not read */
export const innerFormat = (contentType: string): Formats.BodyFormat | undefined => {
  const name = contentType.slice(contentTypePrefix.length)
  return name === Formats.json.format.name ? Formats.json : name === Formats.msgPack.format.name ? Formats.msgPack : undefined
}

/**
 * A format whose bodies are sealed with a call's answer key over an inner format: what an instance
 * answers a sealed call in (its Exit, its chunks), and what the caller reads its answers with.
 */
export const sealedFormat = (inner: Formats.BodyFormat, keys: Answers): Formats.BodyFormat => ({
  format: inner.format,
  contentType: contentTypeOf(inner),
  encode: (value) => keys.seal(inner.encode(value)),
  decode: (body) => Option.flatMap(keys.open(body), inner.decode)
})
