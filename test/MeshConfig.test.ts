/**
 * MeshConfig: `${VAR:default}` expansion, YAML and JSON files read under environment-style names,
 * the file over the environment, the broker chosen from the configuration, secrets redacted.
 */
import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Config, ConfigProvider, Effect, Option } from "effect"
import { AmqpBroker, Broker, MeshConfig } from "effect-mesh"
import { writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"

const file = (name: string, text: string) => {
  const path = join(tmpdir(), `mesh-config-${crypto.randomUUID().slice(0, 8)}-${name}`)
  writeFileSync(path, text)
  return path
}

describe("MeshConfig", () => {
  it.effect("a URL's password is masked whole, even with an unencoded / or @ that makes the URL unparsable", () =>
    Effect.gen(function*() {
      assert.strictEqual(MeshConfig.redactUrl("amqps://app:s3cret@rabbit:5671/prod"), "amqps://app:***@rabbit:5671/prod")
      assert.strictEqual(MeshConfig.redactUrl("amqp://app:se/cr@t@rabbit:5672/"), "amqp://app:***@rabbit:5672/")
      assert.strictEqual(MeshConfig.redactUrl("amqp://rabbit:5672/?name=a@b"), "amqp://rabbit:5672/?name=a@b")
      // and so in the broker's own error for a URL it cannot read
      const error = yield* Effect.flip(Effect.scoped(AmqpBroker.make({ url: "amqp://app:se/cret@rabbit:5672" })))
      assert.strictEqual(error.message, "not an AMQP URL: amqp://app:***@rabbit:5672")
    }))

  it.effect("expand: ${VAR}, ${VAR:default}, $${literal}; a missing variable without default fails", () =>
    Effect.gen(function*() {
      const env = { HOST: "rabbit", EMPTY: "" }
      assert.strictEqual(yield* MeshConfig.expand("amqp://${HOST}:${PORT:5672}/", env), "amqp://rabbit:5672/")
      assert.strictEqual(yield* MeshConfig.expand("${EMPTY:fallback} $${HOST}", env), "fallback ${HOST}")
      assert.strictEqual(yield* Effect.flip(MeshConfig.expand("${NOPE}", env)), "${NOPE} is not set and has no default")
    }))

  it.effect("a YAML file: nested keys read as environment names and as paths; the file wins over the environment", () =>
    Effect.gen(function*() {
      const path = file("a.yaml", [
        "amqp:",
        "  url: amqp://${USER_NAME:guest}:${PASSWORD}@localhost/",
        "  connectTimeout: 3 seconds",
        "db:",
        "  host: db.local",
        "tags: [a, b]"
      ].join("\n"))
      const loaded = yield* MeshConfig.loadFile(path, { PASSWORD: "pw" })
      assert.deepStrictEqual(loaded.flat, {
        AMQP_URL: "amqp://guest:pw@localhost/",
        AMQP_CONNECT_TIMEOUT: "3 seconds",
        DB_HOST: "db.local",
        TAGS: ["a", "b"]
      })
      const provider = MeshConfig.provider(loaded, { DB_HOST: "from-env", ONLY_ENV: "yes" })
      const read = Effect.all({
        url: Config.String("AMQP_URL"),
        timeout: Config.Duration("AMQP_CONNECT_TIMEOUT"),
        dbHost: Config.String("DB_HOST"),
        nested: Config.String("host").pipe(Config.nested("db")),
        onlyEnv: Config.String("ONLY_ENV")
      }).pipe(Effect.provideService(ConfigProvider.ConfigProvider, provider))
      const values = yield* read
      assert.strictEqual(values.url, "amqp://guest:pw@localhost/")
      assert.strictEqual(values.dbHost, "db.local")
      assert.strictEqual(values.nested, "db.local")
      assert.strictEqual(values.onlyEnv, "yes")
    }).pipe(Effect.provide(NodeServices.layer)))

  it.effect("a JSON file; unreadable, invalid and non-mapping files fail with their path and reason", () =>
    Effect.gen(function*() {
      const json = yield* MeshConfig.loadFile(file("b.json", "{\"amqp\":{\"heartbeat\":5}}"), {})
      assert.deepStrictEqual(json.flat, { AMQP_HEARTBEAT: 5 })
      const missing = yield* Effect.flip(MeshConfig.loadFile("/nonexistent/mesh.yaml", {}))
      assert.strictEqual(missing.message, "no such file")
      const invalid = yield* Effect.flip(MeshConfig.loadFile(file("c.json", "{"), {}))
      assert.match(invalid.message, /^not valid JSON/)
      const list = yield* Effect.flip(MeshConfig.loadFile(file("d.yaml", "- a\n- b\n"), {}))
      assert.strictEqual(list.message, "the top level must be a mapping of keys to values")
      const unset = yield* Effect.flip(MeshConfig.loadFile(file("e.yaml", "a: ${NOT_SET_ANYWHERE}\n"), {}))
      assert.strictEqual(unset.message, "${NOT_SET_ANYWHERE} is not set and has no default")
    }).pipe(Effect.provide(NodeServices.layer)))

  it.effect("the broker: embedded without AMQP_URL; show redacts URL passwords and secret-looking keys", () =>
    Effect.gen(function*() {
      const none = MeshConfig.provider(undefined, {})
      assert.isTrue(Option.isNone(yield* MeshConfig.amqpUrl.pipe(Effect.provideService(ConfigProvider.ConfigProvider, none))))
      assert.strictEqual(
        yield* MeshConfig.brokerLocation.pipe(Effect.provideService(ConfigProvider.ConfigProvider, none)),
        "memory (embedded, in-process)"
      )
      const loaded = yield* MeshConfig.loadFile(
        file(
          "f.yaml",
          "amqp:\n  url: amqp://app:pw@rabbit/\n  tls:\n    ca: /etc/mesh/ca.pem\n    keyPassphrase: pp-123\n" +
            "service:\n  apiKey: k-123\n  name: orders\n"
        ),
        {}
      )
      const env = { AMQP_HEARTBEAT: "20" }
      const settings = yield* MeshConfig.show(loaded, env).pipe(
        Effect.provideService(ConfigProvider.ConfigProvider, MeshConfig.provider(loaded, env))
      )
      const byKey = Object.fromEntries(settings.map((s) => [s.key, `${s.value} (${s.source})`]))
      assert.deepStrictEqual(byKey, {
        AMQP_URL: "amqp://app:***@rabbit/ (file)",
        AMQP_URLS: "(not set) (default)",
        AMQP_HEARTBEAT: "20 (env)",
        AMQP_CONNECTION_NAME: "effect-mesh (default)",
        AMQP_CONNECT_TIMEOUT: "10 seconds (default)",
        AMQP_RECONNECT_MAX_DELAY: "5 seconds (default)",
        AMQP_TLS_CA: "/etc/mesh/ca.pem (file)",
        AMQP_TLS_CERT: "(not set) (default)",
        AMQP_TLS_KEY: "(not set) (default)",
        AMQP_TLS_KEY_PASSPHRASE: "<redacted> (file)",
        AMQP_TLS_SERVER_NAME: "(not set) (default)",
        HTTP_PORT: "(not set) (default)",
        HTTP_HOST: "(not set) (default)",
        HTTP_MAX_BODY_SIZE: "1 MiB (default)",
        HTTP_MAX_HEADER_COUNT: "100 (default)",
        HTTP_MAX_HEADER_SIZE: "16 KiB (default)",
        WS_MAX_MESSAGE_SIZE: "1 MiB (default)",
        METRICS_PORT: "(not set) (default)",
        OTEL_EXPORTER_OTLP_ENDPOINT: "(not set) (default)",
        OTEL_SERVICE_NAME: "(not set) (default)",
        OTEL_TRACES_SAMPLER: "parentbased_always_on (default)",
        MESH_DLQ_MAX_LENGTH: "10000 (default)",
        MESH_DLQ_TTL: "7 days (default)",
        MESH_MAX_MESSAGE_SIZE: "1 MiB (default)",
        MESH_SEALED_PRIVATE_KEY: "(not set) (default)",
        SERVICE_API_KEY: "<redacted> (file)",
        SERVICE_NAME: "orders (file)"
      })
      const location = yield* MeshConfig.brokerLocation.pipe(
        Effect.provideService(ConfigProvider.ConfigProvider, MeshConfig.provider(loaded, {}))
      )
      assert.strictEqual(location, "amqp amqp://app:***@rabbit/")
    }).pipe(Effect.provide(NodeServices.layer)))

  it.effect("layerBroker picks the embedded broker when no AMQP_URL is configured", () =>
    Effect.gen(function*() {
      const broker = yield* Broker.Broker
      assert.strictEqual(broker.kind, "memory")
    }).pipe(
      Effect.provide(MeshConfig.layerBroker),
      Effect.provideService(ConfigProvider.ConfigProvider, MeshConfig.provider(undefined, {}))
    ))
})
