/**
 * The examples as a user runs them: the servers stop on SIGTERM with exit code 0 once drained, as
 * `mesh run` does, and every example logs in the same (pretty) format.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Redacted, Schedule } from "effect"
import { Sealed } from "effect-mesh"
import { fileURLToPath } from "node:url"
import { amqpUrl } from "./fixtures/amqpUrl.ts"
import { spawnProgram } from "./fixtures/processes.ts"
import { freePort } from "./fixtures/freePort.ts"

const example = (path: string) => fileURLToPath(new URL(`../examples/${path}`, import.meta.url))

/** the test RabbitMQ, a free port */
const env = () => ({ AMQP_URL: amqpUrl(), HTTP_PORT: "0" })

describe("examples", () => {
  for (const path of ["http/main.ts", "websocket/main.ts"]) {
    it.live(`${path} serves until SIGTERM, then exits 0`, () =>
      Effect.gen(function*() {
        const proc = yield* spawnProgram(example(path), env())
        yield* proc.waitFor(/http:\/\/\S+:\d+/, "60 seconds")
        yield* proc.kill("SIGTERM")
        const exit = yield* proc.exited
        assert.deepStrictEqual(exit, { code: 0, signal: null }, proc.output().join("\n"))
      }).pipe(Effect.scoped), 90_000)
  }

  it.live("examples/mesh/main.ts serves until SIGTERM, then exits 0", () =>
    Effect.gen(function*() {
      // without HTTP_PORT: nothing listens, the calculator serves over RabbitMQ
      const proc = yield* spawnProgram(example("mesh/main.ts"), { AMQP_URL: amqpUrl() })
      yield* proc.waitFor(/serving; SIGTERM or Ctrl-C to stop/, "60 seconds")
      yield* proc.kill("SIGTERM")
      assert.deepStrictEqual(yield* proc.exited, { code: 0, signal: null }, proc.output().join("\n"))
    }).pipe(Effect.scoped), 90_000)

  it.live("examples/observability/main.ts: /metrics, /healthz and /readyz on METRICS_PORT, then a clean stop", () =>
    Effect.gen(function*() {
      const port = yield* freePort
      const base = `http://127.0.0.1:${port}`
      const proc = yield* spawnProgram(example("observability/main.ts"), { AMQP_URL: amqpUrl(), METRICS_PORT: String(port) })
      yield* proc.waitFor(/calling the calculator/, "60 seconds")
      const get = (path: string) =>
        Effect.promise(() => fetch(`${base}${path}`).then(async (r) => ({ status: r.status, text: await r.text() })))
      assert.deepStrictEqual(yield* get("/healthz"), { status: 200, text: JSON.stringify({ ok: true }) })
      assert.deepStrictEqual(
        yield* get("/readyz"),
        { status: 200, text: JSON.stringify({ ready: true, broker: "connected", services: "serving" }) }
      )
      // the traffic's calls, by outcome: a success and the typed error among them
      const metrics = yield* get("/metrics").pipe(
        Effect.repeat({
          until: (r) => /rpc_client_call_duration_count\{[^}]*outcome="DivisionByZero"[^}]*\} [1-9]/.test(r.text),
          schedule: Schedule.spaced("200 millis")
        }),
        Effect.timeout("30 seconds")
      )
      assert.match(metrics.text, /rpc_server_call_duration_count\{[^}]*rpc_method="divide",outcome="success"\} [1-9]/)
      yield* proc.kill("SIGTERM")
      assert.deepStrictEqual(yield* proc.exited, { code: 0, signal: null }, proc.output().join("\n"))
    }).pipe(Effect.scoped), 90_000)

  it.live("examples/formats/main.ts: a JSON caller and a MessagePack caller of one service, on RabbitMQ", () =>
    Effect.gen(function*() {
      const proc = yield* spawnProgram(example("formats/main.ts"), env())
      const { code } = yield* proc.exited
      assert.strictEqual(code, 0, proc.output().join("\n"))
      for (const contentType of ["application/json", "application/msgpack"]) {
        assert.include(
          proc.output(),
          `${contentType}: add 1 + 2 → 3, divide by 0 → DivisionByZero, countdown → 3 2 1 0`,
          proc.output().join("\n")
        )
      }
    }).pipe(Effect.scoped), 90_000)

  it.live("examples/amqp/main.ts: a service consumes another system's exchange with a schema, on RabbitMQ", () =>
    Effect.gen(function*() {
      const proc = yield* spawnProgram(example("amqp/main.ts"), env())
      const { code } = yield* proc.exited
      assert.strictEqual(code, 0, proc.output().join("\n"))
      assert.include(proc.output(), "ledger balance: 60", proc.output().join("\n"))
    }).pipe(Effect.scoped), 90_000)

  it.live("examples/single/main.ts: the instance with the fixed id leads; a second start is refused, naming it (RabbitMQ)", () =>
    Effect.gen(function*() {
      const proc = yield* spawnProgram(example("single/main.ts"), env(), ["--once"])
      const { code } = yield* proc.exited
      const output = proc.output().join("\n")
      assert.strictEqual(code, 0, output)
      assert.include(proc.output(), "billing-scheduler-1: leading", output)
      assert.match(output, /a second start: InstanceTaken: billing-scheduler: instance billing-scheduler-1 is already running \(host .+, pid \d+, broker amqp/)
    }).pipe(Effect.scoped), 90_000)

  it.live("examples/sealed/main.ts: sealed calls and a stream; the wrong key refused, its request dead-lettered sealed; the key never printed (RabbitMQ)", () =>
    Effect.gen(function*() {
      const key = Redacted.value((yield* Sealed.generateKeyPair).privateKey)
      const proc = yield* spawnProgram(example("sealed/main.ts"), { ...env(), [Sealed.configKeys.privateKey]: key })
      const { code } = yield* proc.exited
      const output = proc.output().join("\n")
      assert.strictEqual(code, 0, output)
      for (
        const line of [
          "store → kept ada's secret",
          "reveal → the lamp is in the attic",
          "count → 1",
          "sealed for the wrong key → InvalidPayload",
          "dead letter: sealed-refused, store, the secret in plain text: no"
        ]
      ) assert.include(proc.output(), line, output)
      assert.notInclude(output, key)
    }).pipe(Effect.scoped), 90_000)

  it.live("the timers example logs pretty, as the others do, not logfmt", () =>
    Effect.gen(function*() {
      const proc = yield* spawnProgram(example("timers/main.ts"), env())
      const { code } = yield* proc.exited
      assert.strictEqual(code, 0, proc.output().join("\n"))
      const logs = proc.output().filter((line) => /^\[\d\d:\d\d:\d\d\.\d{3}\] [A-Z]+ /.test(line))
      assert.isAbove(logs.length, 0, proc.output().join("\n"))
      assert.isFalse(proc.output().some((line) => /^timestamp=|level=/.test(line)), proc.output().join("\n"))
    }).pipe(Effect.scoped), 90_000)
})
