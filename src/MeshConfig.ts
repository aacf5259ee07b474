/**
 * Configuration of a mesh process, through effect's `Config`: environment variables and, optionally,
 * a YAML or JSON file. The file's string values may name environment variables, `${VAR}` or
 * `${VAR:default}` (as Nameko's config files do), and its keys may be nested: `amqp: { url: ... }`
 * is read as `AMQP_URL`, so the file and the environment use the same names. What the file sets wins;
 * everything else comes from the environment.
 *
 * ```yaml
 * # mesh.yaml
 * amqp:
 *   url: amqp://${RABBIT_USER:guest}:${RABBIT_PASSWORD:guest}@${RABBIT_HOST:localhost}:5672
 *   heartbeat: 10
 *   tls:                       # for an amqps:// URL (AMQP_TLS_CA, AMQP_TLS_CERT, ...)
 *     ca: /etc/mesh/ca.pem
 *     cert: /etc/mesh/client.pem
 *     key: /etc/mesh/client.key
 *     keyPassphrase: ${KEY_PASSPHRASE}
 *     serverName: rabbit.internal
 * ```
 *
 * A RabbitMQ cluster is several URLs: `amqp: { urls: [amqp://...@rabbit-1, amqp://...@rabbit-2] }`
 * in the file (`AMQP_URLS`), or a comma-separated list in `AMQP_URL` or `AMQP_URLS`.
 *
 * `layerBroker` picks the broker: RabbitMQ when `AMQP_URL` (or `AMQP_URLS`) is set, else the embedded one. `show`
 * renders the effective settings with secrets redacted.
 *
 * @since 0.1.0
 */
import { Config, ConfigProvider, Effect, FileSystem, Layer, Logger, Option, Redacted, References, Schema } from "effect"
import { Yaml } from "effect/encoding"
import { NodeHttpClient } from "@effect/platform-node"
import { Otlp, OtlpSerialization } from "effect/observability"
import * as AmqpBroker from "./AmqpBroker.ts"
import type { Broker, BrokerError } from "./Broker.ts"
import * as DeadLetters from "./DeadLetters.ts"
import * as HttpGateway from "./HttpGateway.ts"
import * as Redact from "./internal/redact.ts"
import * as Sampler from "./internal/sampler.ts"
import * as Tls from "./internal/tls.ts"
import * as MessageSize from "./internal/messageSize.ts"
import * as MemoryBroker from "./MemoryBroker.ts"
import * as Sealed from "./Sealed.ts"

// ---- models ----

/**
 * A config file that could not be read, parsed or expanded.
 *
 * @since 0.1.0
 */
export class MeshConfigError extends Schema.TaggedError<MeshConfigError>()("MeshConfigError", {
  path: Schema.String,
  message: Schema.String
}) {}

/**
 * A loaded config file: its values with `${VAR}` expanded, as written (`nested`) and flattened to
 * environment-style names (`flat`).
 *
 * @since 0.1.0
 */
export interface File {
  readonly path: string
  readonly nested: Readonly<Record<string, unknown>>
  readonly flat: Readonly<Record<string, unknown>>
}

/**
 * One setting as `show` renders it.
 *
 * @since 0.1.0
 */
export interface Setting {
  readonly key: string
  /** the value, secrets already redacted */
  readonly value: string
  readonly source: "file" | "env" | "default"
}

// ---- constructors ----

/**
 * Expands `${VAR}` and `${VAR:default}` in a string; `$${` stays a literal `${`. Fails on a variable
 * that is not set and has no default.
 *
 * @since 0.1.0
 */
export const expand = (
  text: string,
  env: Readonly<Record<string, string | undefined>>
): Effect.Effect<string, string> =>
  Effect.suspend(() => {
    const missing: Array<string> = []
    const expanded = text.replace(/\$?\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([^}]*))?\}/g, (match, name: string, fallback?: string) => {
      if (match.startsWith("$$")) return match.slice(1)
      const value = env[name]
      if (value !== undefined && value !== "") return value
      if (fallback !== undefined) return fallback
      missing.push(name)
      return match
    })
    return missing.length === 0
      ? Effect.succeed(expanded)
      : Effect.fail(`\${${missing[0]}} is not set and has no default`)
  })

/**
 * Reads a YAML (`.yaml`, `.yml`) or JSON file, expands `${VAR}` in its string values and flattens it.
 *
 * @since 0.1.0
 */
export const loadFile = (
  path: string,
  env: Readonly<Record<string, string | undefined>> = process.env
): Effect.Effect<File, MeshConfigError, FileSystem.FileSystem> =>
  Effect.gen(function*() {
    const fail = (message: string) => new MeshConfigError({ path, message })
    const fs = yield* FileSystem.FileSystem
    const text = yield* fs.readFileString(path).pipe(
      Effect.mapError((error) => fail(error.reason._tag === "NotFound" ? "no such file" : error.message))
    )
    const parsed = yield* Effect.try({
      try: (): unknown => /\.ya?ml$/i.test(path) ? Yaml.parse(text) : JSON.parse(text),
      catch: (error) => fail(`not valid ${/\.ya?ml$/i.test(path) ? "YAML" : "JSON"}: ${messageOf(error)}`)
    })
    if (parsed === null || parsed === undefined) return { path, nested: {}, flat: {} }
    if (typeof parsed !== "object" || Array.isArray(parsed)) {
      return yield* fail("the top level must be a mapping of keys to values")
    }
    const nested = yield* expandAll(parsed, env).pipe(Effect.mapError(fail))
    return { path, nested: nested as Record<string, unknown>, flat: flatten(nested as Record<string, unknown>) }
  })

/**
 * The provider of a file (when given) over the environment: the file's flattened names, then its
 * nested paths, then the environment.
 *
 * @since 0.1.0
 */
export const provider = (file: File | undefined, env?: Readonly<Record<string, string>>): ConfigProvider.ConfigProvider => {
  const fromEnv = ConfigProvider.fromEnv(env === undefined ? undefined : { env })
  if (file === undefined) return fromEnv
  return ConfigProvider.fromUnknown(file.flat).pipe(
    ConfigProvider.orElse(ConfigProvider.fromUnknown(file.nested)),
    ConfigProvider.orElse(fromEnv)
  )
}

/**
 * Installs the provider of an optional config file for everything built under it.
 *
 * @since 0.1.0
 */
export const layer = (path: Option.Option<string>): Layer.Layer<never, MeshConfigError, FileSystem.FileSystem> =>
  Layer.unwrap(Effect.map(
    Option.match(path, { onNone: () => Effect.succeed(undefined), onSome: (p) => loadFile(p) }),
    (file) => ConfigProvider.layer(provider(file))
  ))

/**
 * Whether the configuration names a RabbitMQ (`AMQP_URLS` or `AMQP_URL`: `AmqpBroker.urlConfig`), and
 * its nodes' URLs, comma-separated.
 *
 * @since 0.1.0
 */
export const amqpUrl: Config.Config<Option.Option<Redacted.Redacted<string>>> = Config.option(AmqpBroker.urlConfig)

/**
 * How logs are written, from the configuration: `LOG_FORMAT` is `pretty` (effect's
 * `Logger.consolePretty`), `json` (one JSON object per line: `Logger.consoleJson`, with the run's
 * annotations: service, run, correlation id, call id, trace id), `logfmt` or `structured`; `LOG_LEVEL`
 * (`Debug`, `Info`, `Warn`, ...) the least level written. What is not set stays as it is: the loggers
 * a program installed itself (an OTLP logger, say), effect's default level.
 *
 * @since 0.1.0
 */
export const layerLogger: Layer.Layer<never, Config.ConfigError> = Layer.unwrap(Effect.gen(function*() {
  const format = yield* Config.option(Config.Literals(["pretty", "json", "logfmt", "structured"], "LOG_FORMAT"))
  const level = yield* Config.option(Config.LogLevel("LOG_LEVEL"))
  const loggers = Option.match(format, {
    onNone: () => Layer.empty,
    onSome: (format) =>
      Logger.layer([
        format === "json"
          ? Logger.consoleJson
          : format === "logfmt"
          ? Logger.consoleLogFmt
          : format === "structured"
          ? Logger.consoleStructured
          : Logger.consolePretty()
      ])
  })
  return Option.isNone(level) ? loggers : Layer.merge(loggers, Layer.succeed(References.MinimumLogLevel, level.value))
}))

/**
 * OpenTelemetry export, configured as every OpenTelemetry SDK is: with `OTEL_EXPORTER_OTLP_ENDPOINT`
 * (or a signal's own, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, ...) set, the traces, metrics and logs go
 * over OTLP/HTTP through effect's own exporters (`Otlp.layerFromConfig`), `OTEL_EXPORTER_OTLP_PROTOCOL`
 * `http/protobuf` (the default) or `http/json`; the resource is `OTEL_SERVICE_NAME` (default:
 * `serviceName`) and `OTEL_RESOURCE_ATTRIBUTES`. The other standard variables apply (`OTEL_SDK_DISABLED`,
 * `OTEL_TRACES_EXPORTER=none` and its siblings, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_BSP_SCHEDULE_DELAY`,
 * `OTEL_METRIC_EXPORT_INTERVAL`, ...); the exporters default to `otlp`, as the specification says. Off
 * when no endpoint is set. `OTEL_TRACES_SAMPLER` (`parentbased_always_on` by default, `always_off`,
 * `traceidratio`, `parentbased_traceidratio`, ...) and `OTEL_TRACES_SAMPLER_ARG` (the ratio) choose the
 * traces exported; a call's span follows its caller's sampled flag across the wire. Log records also keep going to the loggers already installed.
 *
 * @since 0.1.0
 */
export const layerOtlp = (serviceName: string): Layer.Layer<never, Config.ConfigError> =>
  Layer.unwrap(Effect.gen(function*() {
    const protocol = yield* Config.Literals(["http/protobuf", "http/json"], "OTEL_EXPORTER_OTLP_PROTOCOL").pipe(
      Config.withDefault("http/protobuf")
    )
    const exporters = Otlp.layerFromConfig({ loggerMergeWithExisting: true }).pipe(
      Layer.provide(protocol === "http/json" ? OtlpSerialization.layerJson : OtlpSerialization.layerProtobuf),
      Layer.provide(NodeHttpClient.layerNodeHttp),
      Layer.provide(ConfigProvider.layerAdd(ConfigProvider.fromUnknown({
        OTEL_SERVICE_NAME: serviceName,
        OTEL_TRACES_EXPORTER: "otlp",
        OTEL_METRICS_EXPORTER: "otlp",
        OTEL_LOGS_EXPORTER: "otlp"
      })))
    )
    // which root spans are exported: OTEL_TRACES_SAMPLER over the exporters' tracer
    return Sampler.layer.pipe(Layer.provideMerge(exporters))
  }))

/**
 * The broker the configuration asks for: RabbitMQ (`AmqpBroker.layerConfig`) when `AMQP_URL` or `AMQP_URLS` is set,
 * else the embedded `MemoryBroker`.
 *
 * @since 0.1.0
 */
export const layerBroker: Layer.Layer<Broker, BrokerError | Config.ConfigError> = Layer.unwrap(
  Effect.map(amqpUrl, (url) => Option.isSome(url) ? AmqpBroker.layerConfig : MemoryBroker.layer)
)

/**
 * Where a broker is, for logs: the URL (each node's, for a cluster) without its password (or "embedded, in-process").
 *
 * @since 0.1.0
 */
export const brokerLocation: Effect.Effect<string, Config.ConfigError> = Effect.map(amqpUrl, (url) =>
  Option.match(url, {
    onNone: () => "memory (embedded, in-process)",
    onSome: (u) => `amqp ${redactUrl(Redacted.value(u))}`
  }))

/**
 * The effective mesh settings and every key of the file, secrets redacted: a URL's password, and the
 * value of any key that names a password, secret, token or private key.
 *
 * @since 0.1.0
 */
export const show = (
  file: File | undefined,
  env: Readonly<Record<string, string | undefined>> = process.env
): Effect.Effect<ReadonlyArray<Setting>, Config.ConfigError> =>
  Effect.gen(function*() {
    const settings: Array<Setting> = []
    const sourceOf = (key: string): Setting["source"] =>
      file !== undefined && key in file.flat ? "file" : env[key] !== undefined && env[key] !== "" ? "env" : "default"
    for (const [key, fallback] of meshSettings) {
      // a list (AMQP_URLS from a file) as its items separated by commas
      const value = yield* Config.option(
        listSettings.has(key) ? Config.map(Config.Array(Schema.String, key), (items) => items.join(",")) : Config.String(key)
      )
      if (Option.isNone(value) && fallback === undefined) {
        settings.push({ key, value: "(not set)", source: "default" })
        continue
      }
      const raw = Option.getOrElse(value, () => fallback ?? "")
      settings.push({ key, value: redactValue(key, raw), source: Option.isSome(value) ? sourceOf(key) : "default" })
    }
    const known = new Set(meshSettings.map(([key]) => key))
    for (const key of Object.keys(file?.flat ?? {}).sort()) {
      if (known.has(key)) continue
      const value = file?.flat[key]
      const text = typeof value === "string"
        ? value
        : Array.isArray(value) && value.every((item) => typeof item === "string")
        ? value.join(",")
        : JSON.stringify(value)
      settings.push({ key, value: redactValue(key, text), source: "file" })
    }
    return settings
  })

/**
 * Masks the password of a URL (`amqp://user:***@host/`), of each URL of a comma-separated list; one
 * with an unencoded `/` or `@` in it whole.
 *
 * @since 0.1.0
 */
export const redactUrl: (url: string) => string = Redact.redactUrl

// ---- internal ----

/** the settings the mesh itself reads, with their defaults */
const meshSettings: ReadonlyArray<readonly [string, string | undefined]> = [
  ["AMQP_URL", undefined],
  ["AMQP_URLS", undefined],
  ["AMQP_HEARTBEAT", "10"],
  ["AMQP_CONNECTION_NAME", "effect-mesh"],
  ["AMQP_CONNECT_TIMEOUT", "10 seconds"],
  ["AMQP_RECONNECT_MAX_DELAY", "5 seconds"],
  [Tls.keys.ca, undefined],
  [Tls.keys.cert, undefined],
  [Tls.keys.key, undefined],
  [Tls.keys.passphrase, undefined],
  [Tls.keys.serverName, undefined],
  ["HTTP_PORT", undefined],
  ["HTTP_HOST", undefined],
  // the edge's limits (HttpGateway.limits)
  [HttpGateway.configKeys.maxBodySize, "1 MiB"],
  [HttpGateway.configKeys.maxHeaderCount, String(HttpGateway.limits.maxHeaderCount)],
  [HttpGateway.configKeys.maxHeaderSize, "16 KiB"],
  [HttpGateway.configKeys.maxWebSocketMessageSize, "1 MiB"],
  // the largest message a service, subscription or consumer takes when it sets none (internal/messageSize.ts)
  [MessageSize.configKey, "1 MiB"],
  ["METRICS_PORT", undefined],
  ["OTEL_EXPORTER_OTLP_ENDPOINT", undefined],
  ["OTEL_SERVICE_NAME", undefined],
  ["OTEL_TRACES_SAMPLER", "parentbased_always_on"],
  [DeadLetters.keys.maxLength, String(DeadLetters.defaults.maxLength)],
  [DeadLetters.keys.ttl, String(DeadLetters.defaults.ttl)],
  // a service's key for its sealed rpcs: shown as <redacted>, as every private key is
  [Sealed.configKeys.privateKey, undefined]
]

/** settings whose value may be a list */
const listSettings: ReadonlySet<string> = new Set(["AMQP_URLS"])

const secretKey = /PASSWORD|PASSWD|PASSPHRASE|SECRET|TOKEN|CREDENTIAL|PRIVATE|API_?KEY/i

const redactValue = (key: string, value: string): string =>
  secretKey.test(key) ? "<redacted>" : redactUrl(value)

const messageOf = (error: unknown): string =>
  (error instanceof Error ? error.message : String(error)).split("\n")[0]

const expandAll = (value: unknown, env: Readonly<Record<string, string | undefined>>): Effect.Effect<unknown, string> => {
  if (typeof value === "string") return expand(value, env)
  if (Array.isArray(value)) return Effect.forEach(value, (item) => expandAll(item, env))
  if (typeof value === "object" && value !== null) {
    return Effect.map(
      Effect.forEach(Object.entries(value), ([key, item]) => Effect.map(expandAll(item, env), (v) => [key, v] as const)),
      (entries) => Object.fromEntries(entries)
    )
  }
  return Effect.succeed(value)
}

/** `{ amqp: { url, connectTimeout } }` -> `{ AMQP_URL, AMQP_CONNECT_TIMEOUT }`; arrays stay values */
const flatten = (value: Record<string, unknown>, prefix = ""): Record<string, unknown> => {
  const out: Record<string, unknown> = {}
  for (const [key, item] of Object.entries(value)) {
    const name = prefix + constantCase(key)
    if (typeof item === "object" && item !== null && !Array.isArray(item)) {
      Object.assign(out, flatten(item as Record<string, unknown>, `${name}_`))
    } else {
      out[name] = item
    }
  }
  return out
}

const constantCase = (key: string): string =>
  key.replace(/([a-z0-9])([A-Z])/g, "$1_$2").replace(/[^A-Za-z0-9]+/g, "_").toUpperCase()
