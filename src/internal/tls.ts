/**
 * TLS to RabbitMQ from the configuration: the `AMQP_TLS_*` settings read into the socket options of an
 * `amqps://` connection, and the failures of a TLS handshake told apart from the other failures of a
 * connect, in words that say what to set.
 *
 * @internal
 */
import { Config, Effect, Option, Redacted } from "effect"
import { readFileSync } from "node:fs"
import type { ConnectionOptions } from "node:tls"
import { BrokerError } from "../Broker.ts"

/** the settings, by the names the environment and the config file (`amqp: { tls: { ... } }`) use */
export const keys = {
  ca: "AMQP_TLS_CA",
  cert: "AMQP_TLS_CERT",
  key: "AMQP_TLS_KEY",
  passphrase: "AMQP_TLS_KEY_PASSPHRASE",
  serverName: "AMQP_TLS_SERVER_NAME"
} as const

/** what the configuration says of TLS: files by path, the key's passphrase kept redacted */
export interface Settings {
  readonly ca: Option.Option<string>
  readonly cert: Option.Option<string>
  readonly key: Option.Option<string>
  readonly passphrase: Option.Option<Redacted.Redacted<string>>
  readonly serverName: Option.Option<string>
}

const nonEmpty = (key: string) =>
  Config.option(Config.String(key)).pipe(Config.map(Option.filter((value) => value.trim() !== "")))

/** the TLS settings of the configuration; all optional */
export const config: Config.Config<Settings> = Config.all({
  ca: nonEmpty(keys.ca),
  cert: nonEmpty(keys.cert),
  key: nonEmpty(keys.key),
  passphrase: Config.option(Config.Redacted(keys.passphrase)),
  serverName: nonEmpty(keys.serverName)
})

const isSet = (settings: Settings): boolean =>
  Option.isSome(settings.ca) || Option.isSome(settings.cert) || Option.isSome(settings.key) ||
  Option.isSome(settings.passphrase) || Option.isSome(settings.serverName)

const refuse = (message: string) => new BrokerError({ reason: "Tls", message })

const read = (key: string, path: string): Effect.Effect<Buffer, BrokerError> =>
  Effect.try({
    try: () => readFileSync(path),
    catch: (error) => {
      const code = typeof error === "object" && error !== null && "code" in error ? error.code : undefined
      const why = code === "ENOENT" ? "no such file" : code === "EACCES" ? "not readable" : String(code ?? "unreadable")
      return refuse(`${key}: cannot read ${path} (${why})`)
    }
  })

/**
 * The socket options of the settings, for a connection to `url`. Nothing set: none. Set for a URL
 * that is not `amqps://`, or a certificate without its key (or the other way round): refused, since a
 * connection without the TLS asked for must not happen quietly.
 */
export const socketOptions = (
  settings: Settings,
  url: string
): Effect.Effect<ConnectionOptions | undefined, BrokerError> =>
  Effect.gen(function*() {
    if (!isSet(settings)) return undefined
    if (!url.startsWith("amqps://")) {
      return yield* refuse(`${Object.values(keys).join(", ")} apply to amqps:// URLs only; AMQP_URL is not one`)
    }
    if (Option.isSome(settings.cert) !== Option.isSome(settings.key)) {
      return yield* refuse(`${keys.cert} and ${keys.key} go together: a client certificate needs its key`)
    }
    const options: { -readonly [K in keyof ConnectionOptions]: ConnectionOptions[K] } = {}
    if (Option.isSome(settings.ca)) options.ca = [yield* read(keys.ca, settings.ca.value)]
    if (Option.isSome(settings.cert)) options.cert = yield* read(keys.cert, settings.cert.value)
    if (Option.isSome(settings.key)) options.key = yield* read(keys.key, settings.key.value)
    if (Option.isSome(settings.passphrase)) options.passphrase = Redacted.value(settings.passphrase.value)
    if (Option.isSome(settings.serverName)) options.servername = settings.serverName.value
    return options
  })

// node's codes of a server certificate it does not trust (OpenSSL's verify results)
const untrusted: ReadonlySet<string> = new Set([
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "CERT_SIGNATURE_FAILURE",
  "CERT_UNTRUSTED",
  "CERT_REJECTED"
])

const codeOf = (cause: unknown): string | undefined => {
  const code = typeof cause === "object" && cause !== null && "code" in cause ? cause.code : undefined
  return typeof code === "string" ? code : undefined
}

/**
 * What a failed TLS handshake (or TLS setup) means, for a user to act on; `undefined` for a failure
 * that is not one of TLS.
 */
export const describeFailure = (cause: unknown): string | undefined => {
  const code = codeOf(cause)
  if (code === undefined) return undefined
  if (untrusted.has(code)) {
    return `TLS: the broker's certificate is not signed by a trusted CA (${code}); set ${keys.ca} to the CA that signed it`
  }
  if (code === "CERT_HAS_EXPIRED" || code === "CERT_NOT_YET_VALID") {
    return `TLS: the broker's certificate is not valid now (${code})`
  }
  if (code === "ERR_TLS_CERT_ALTNAME_INVALID") {
    const message = cause instanceof Error ? cause.message : ""
    return `TLS: the broker's certificate is not for the host connected to (${message}); set ${keys.serverName} to a name it is for`
  }
  if (code === "ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED") {
    return `TLS: the broker requires a client certificate; set ${keys.cert} and ${keys.key}`
  }
  if (code.includes("ALERT_UNKNOWN_CA") || code.includes("ALERT_BAD_CERTIFICATE")) {
    return `TLS: the broker refused the client certificate (${code}); it must be signed by a CA the broker trusts`
  }
  if (code === "ERR_OSSL_BAD_DECRYPT") {
    return `TLS: the client key could not be decrypted; check ${keys.passphrase}`
  }
  if (code.startsWith("ERR_SSL_") || code.startsWith("ERR_OSSL_") || code.startsWith("ERR_TLS_")) {
    return `TLS: the handshake failed (${code})`
  }
  return undefined
}
