/**
 * TLS to RabbitMQ from the configuration (`AMQP_TLS_*`, or `amqp: { tls: ... }` in the config file),
 * against a private node of this file's own that listens on TLS with certificates `openssl` makes for
 * the run: the right CA connects, a wrong CA or server name is a `BrokerError` with reason `Tls` said
 * at once (not after the 30 s of connect retries), and with the node requiring client certificates,
 * mutual TLS works with an encrypted client key while a client without a certificate (or with one of
 * another CA) is refused.
 */
import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { afterAll, beforeAll } from "vitest"
import { Cause, Clock, ConfigProvider, Effect, Layer, Stream } from "effect"
import { readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { inspect } from "node:util"
import { Broker, MeshConfig } from "effect-mesh"
import { checkoutPort } from "./fixtures/ports.ts"
import { spawnProgram } from "./fixtures/processes.ts"
import { type Certificates, makeCertificates, tlsNode, tlsPortOf } from "./fixtures/tls.ts"

const port = checkoutPort("tls")
const passphrase = `passphrase-${crypto.randomUUID().slice(0, 8)}`
let certificates: Certificates
let node: ReturnType<typeof tlsNode>

beforeAll(async () => {
  certificates = makeCertificates(passphrase)
  node = tlsNode(port, certificates)
}, 60_000)

afterAll(async () => {
  await Effect.runPromise(Effect.ignore(node.stop))
  certificates.remove()
}, 60_000)

/** a message through a queue of the broker the configuration names */
const roundTrip = Effect.gen(function*() {
  const broker = yield* Broker.Broker
  const queue = yield* broker.declareQueue("", { exclusive: true })
  yield* broker.publish("", queue, new TextEncoder().encode("over TLS"), { confirm: true })
  const consumer = yield* broker.consume(queue, { prefetch: 1 })
  const [delivery] = yield* consumer.deliveries.pipe(Stream.take(1), Stream.runCollect)
  yield* delivery.ack
  return new TextDecoder().decode(delivery.body)
}).pipe(Effect.scoped)

/** the broker `MeshConfig.layerBroker` builds from these settings (as the environment) */
const withSettings = (settings: Readonly<Record<string, string>>) =>
  Effect.provide(
    Layer.fresh(MeshConfig.layerBroker).pipe(
      Layer.provide(ConfigProvider.layer(MeshConfig.provider(undefined, settings)))
    )
  )

/** how a connect with these settings fails, and how long it took to say so */
const refusal = (settings: Readonly<Record<string, string>>) =>
  Effect.gen(function*() {
    const start = yield* Clock.currentTimeMillis
    const error = yield* Effect.flip(roundTrip.pipe(withSettings(settings)))
    const elapsed = (yield* Clock.currentTimeMillis) - start
    assert.strictEqual(error._tag, "BrokerError")
    assert.isBelow(elapsed, 10_000, "said at once, not after retrying")
    return error._tag === "BrokerError" ? error : assert.fail("not a BrokerError")
  })

describe("TLS to RabbitMQ from the configuration", () => {
  beforeAll(async () => {
    await Effect.runPromise(node.start({ verify: false }))
  }, 180_000)

  it.live("connects over amqps with the CA and server name of a config file", () =>
    Effect.gen(function*() {
      const path = join(certificates.dir, "mesh.yaml")
      writeFileSync(path, [
        "amqp:",
        "  url: ${TLS_URL}",
        "  tls:",
        `    ca: ${certificates.ca}`,
        "    serverName: localhost"
      ].join("\n"))
      const file = yield* MeshConfig.loadFile(path, { TLS_URL: node.url() })
      assert.strictEqual(file.flat["AMQP_TLS_CA"], certificates.ca)
      assert.strictEqual(file.flat["AMQP_TLS_SERVER_NAME"], "localhost")
      const received = yield* roundTrip.pipe(
        Effect.provide(Layer.fresh(MeshConfig.layerBroker).pipe(
          Layer.provide(ConfigProvider.layer(MeshConfig.provider(file, {})))
        ))
      )
      assert.strictEqual(received, "over TLS")
    }).pipe(Effect.provide(NodeServices.layer)))

  it.live("connects with the settings in the environment", () =>
    Effect.gen(function*() {
      const received = yield* roundTrip.pipe(withSettings({ AMQP_URL: node.url(), AMQP_TLS_CA: certificates.ca }))
      assert.strictEqual(received, "over TLS")
    }))

  it.live("a broker certificate the configured CA did not sign is refused, with reason Tls", () =>
    Effect.gen(function*() {
      const error = yield* refusal({ AMQP_URL: node.url(), AMQP_TLS_CA: certificates.otherCa })
      assert.strictEqual(error.reason, "Tls")
      assert.match(error.message, /not signed by a trusted CA \(SELF_SIGNED_CERT_IN_CHAIN\); set AMQP_TLS_CA/)
      // node's own CAs do not know ours either
      const untrusted = yield* refusal({ AMQP_URL: node.url() })
      assert.strictEqual(untrusted.reason, "Tls")
    }))

  it.live("a server name the broker's certificate is not for is refused", () =>
    Effect.gen(function*() {
      const error = yield* refusal({
        AMQP_URL: node.url(),
        AMQP_TLS_CA: certificates.ca,
        AMQP_TLS_SERVER_NAME: "elsewhere.test"
      })
      assert.strictEqual(error.reason, "Tls")
      assert.match(error.message, /not for the host connected to .*elsewhere\.test.*set AMQP_TLS_SERVER_NAME/)
    }))

  it.live("TLS settings that cannot apply are refused before connecting", () =>
    Effect.gen(function*() {
      const plain = yield* refusal({ AMQP_URL: `amqp://guest:guest@127.0.0.1:${port}`, AMQP_TLS_CA: certificates.ca })
      assert.strictEqual(plain.reason, "Tls")
      assert.match(plain.message, /apply to amqps:\/\/ URLs only/)
      const half = yield* refusal({ AMQP_URL: node.url(), AMQP_TLS_CA: certificates.ca, AMQP_TLS_CERT: certificates.clientCert })
      assert.match(half.message, /AMQP_TLS_CERT and AMQP_TLS_KEY go together/)
      const missing = join(certificates.dir, "no-such-ca.pem")
      const gone = yield* refusal({ AMQP_URL: node.url(), AMQP_TLS_CA: missing })
      assert.strictEqual(gone.message, `AMQP_TLS_CA: cannot read ${missing} (no such file)`)
    }))
})

describe("mutual TLS: the node requires client certificates", () => {
  beforeAll(async () => {
    // other settings than the node runs with: the script restarts it
    await Effect.runPromise(node.start({ verify: true }))
  }, 180_000)

  it.live("a client certificate the CA signed, its key encrypted, connects", () =>
    Effect.gen(function*() {
      const received = yield* roundTrip.pipe(withSettings({
        AMQP_URL: node.url(),
        AMQP_TLS_CA: certificates.ca,
        AMQP_TLS_CERT: certificates.clientCert,
        AMQP_TLS_KEY: certificates.clientKey,
        AMQP_TLS_KEY_PASSPHRASE: passphrase
      }))
      assert.strictEqual(received, "over TLS")
    }))

  it.live("a client without a certificate, or with one of another CA, is refused", () =>
    Effect.gen(function*() {
      const without = yield* refusal({ AMQP_URL: node.url(), AMQP_TLS_CA: certificates.ca })
      assert.strictEqual(without.reason, "Tls")
      assert.match(without.message, /requires a client certificate; set AMQP_TLS_CERT and AMQP_TLS_KEY/)
      const foreign = yield* refusal({
        AMQP_URL: node.url(),
        AMQP_TLS_CA: certificates.ca,
        AMQP_TLS_CERT: certificates.otherClientCert,
        AMQP_TLS_KEY: certificates.otherClientKey
      })
      assert.strictEqual(foreign.reason, "Tls")
      const wrongPassphrase = yield* refusal({
        AMQP_URL: node.url(),
        AMQP_TLS_CA: certificates.ca,
        AMQP_TLS_CERT: certificates.clientCert,
        AMQP_TLS_KEY: certificates.clientKey,
        AMQP_TLS_KEY_PASSPHRASE: "not-the-passphrase"
      })
      assert.strictEqual(wrongPassphrase.reason, "Tls")
      assert.match(wrongPassphrase.message, /client key could not be decrypted; check AMQP_TLS_KEY_PASSPHRASE/)
    }))
})

describe("secrets stay secret", () => {
  const bin = fileURLToPath(new URL("../src/bin.ts", import.meta.url))
  const user = `mesh-secrets-${crypto.randomUUID().slice(0, 6)}`
  const password = `pw-${crypto.randomUUID()}`
  const wrongPassword = `wrong-pw-${crypto.randomUUID()}`
  const apiKey = `api-${crypto.randomUUID()}`
  const wrongPassphrase = `wrong-pp-${crypto.randomUUID()}`

  beforeAll(async () => {
    await Effect.runPromise(Effect.gen(function*() {
      yield* node.start({ verify: true })
      yield* node.ctl("add_user", user, password)
      yield* node.ctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
    }))
  }, 180_000)

  /** a config file: the URL's password from the environment, the key's passphrase and an API key in the file */
  const configFile = (name: string, passphraseInFile: string) => {
    const path = join(certificates.dir, name)
    writeFileSync(path, [
      "amqp:",
      `  url: amqps://${user}:\${MESH_SECRET_PASSWORD}@127.0.0.1:${tlsPortOf(port)}`,
      "  tls:",
      `    ca: ${certificates.ca}`,
      `    cert: ${certificates.clientCert}`,
      `    key: ${certificates.clientKey}`,
      `    keyPassphrase: ${passphraseInFile}`,
      "billing:",
      `  apiKey: ${apiKey}`
    ].join("\n"))
    return path
  }

  it.live("no password, passphrase, API key or private key in logs, errors, describe answers or show-config", () =>
    Effect.scoped(Effect.gen(function*() {
      const config = configFile("secrets.yaml", passphrase)
      const wrongConfig = configFile("wrong-passphrase.yaml", wrongPassphrase)
      const env = { MESH_SECRET_PASSWORD: password, LOG_LEVEL: "Debug", LOG_FORMAT: "json" }
      const outputs: Array<string> = []
      const mesh = (args: ReadonlyArray<string>, extra: Readonly<Record<string, string>> = {}) =>
        Effect.scoped(Effect.gen(function*() {
          const proc = yield* spawnProgram(bin, { ...env, ...extra }, args)
          const { code } = yield* proc.exited
          outputs.push(...proc.output())
          return { code, lines: proc.output() }
        }))

      // a service on the TLS node, logging everything it does
      const run = yield* spawnProgram(bin, env, ["--config", config, "run", "examples/calculator/service.ts"])
      yield* run.waitFor(/mesh: running/, "60 seconds")
      const added = yield* mesh(["--config", config, "call", "calculator.add", "{\"a\":1,\"b\":2}"])
      assert.deepStrictEqual(added, { code: 0, lines: ["3"] }, JSON.stringify(added))
      const described = yield* mesh(["--config", config, "describe", "calculator", "--json", "--wait", "1 second"])
      assert.strictEqual(described.code, 0)
      assert.include(described.lines.join(""), run.pid.toString())
      const shown = yield* mesh(["--config", config, "show-config"])
      assert.strictEqual(shown.code, 0)
      assert.match(shown.lines.join("\n"), /AMQP_TLS_KEY_PASSPHRASE\s+= <redacted> {2}\(file\)/)
      assert.match(shown.lines.join("\n"), new RegExp(`amqps://${user}:\\*\\*\\*@127\\.0\\.0\\.1`))
      // failures: a wrong passphrase, a wrong password
      const badKey = yield* mesh(["--config", wrongConfig, "call", "calculator.add", "{\"a\":1,\"b\":2}"])
      assert.notStrictEqual(badKey.code, 0)
      assert.match(badKey.lines.join("\n"), /client key could not be decrypted/)
      const badLogin = yield* mesh(["--config", config, "call", "calculator.add", "{\"a\":1,\"b\":2}"], {
        MESH_SECRET_PASSWORD: wrongPassword
      })
      assert.notStrictEqual(badLogin.code, 0)
      assert.match(badLogin.lines.join("\n"), /ACCESS-REFUSED/)
      yield* run.kill("SIGTERM")
      yield* run.exited
      outputs.push(...run.output())

      // the same failures in a program of one's own: the errors, their causes and their rendering
      const file = yield* MeshConfig.loadFile(wrongConfig, { MESH_SECRET_PASSWORD: wrongPassword })
      const error = yield* Effect.flip(roundTrip.pipe(
        Effect.provide(Layer.fresh(MeshConfig.layerBroker).pipe(Layer.provide(ConfigProvider.layer(MeshConfig.provider(file, {})))))
      ))
      outputs.push(String(error), inspect(error, { depth: 10 }), Cause.pretty(Cause.fail(error)), JSON.stringify(error))
      const settings = yield* MeshConfig.show(file, {}).pipe(
        Effect.provideService(ConfigProvider.ConfigProvider, MeshConfig.provider(file, {}))
      )
      outputs.push(JSON.stringify(settings))

      assert.isAbove(outputs.length, 20, "the run logged")
      const text = outputs.join("\n")
      const privateKey = readFileSync(certificates.clientKey, "utf8").split("\n")[1]
      for (const [what, secret] of [
        ["password", password],
        ["wrong password", wrongPassword],
        ["passphrase", passphrase],
        ["wrong passphrase", wrongPassphrase],
        ["API key", apiKey],
        ["private key", privateKey]
      ] as const) {
        assert.notInclude(text, secret, `the ${what} leaked`)
      }
    }).pipe(Effect.provide(NodeServices.layer))), 120_000)
})
