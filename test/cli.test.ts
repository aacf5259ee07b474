/**
 * The `mesh` command as a user runs it: `mesh run` as a real process on RabbitMQ, `mesh call`,
 * `mesh emit` and `mesh describe` as further processes, SIGTERM with calls in flight, bad input.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Layer, Stream } from "effect"
import { AmqpBroker, Sealed, ServiceClient, ServiceContract } from "effect-mesh"
import { execFileSync, spawnSync } from "node:child_process"
import { realpathSync, writeFileSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { amqpUrl } from "./fixtures/amqpUrl.ts"
import { spawnProgram } from "./fixtures/processes.ts"
import { workContract } from "./fixtures/programs/workContract.ts"
import { VaultRpcs } from "../examples/sealed/service.ts"

const bin = fileURLToPath(new URL("../src/bin.ts", import.meta.url))
const workModule = "test/fixtures/programs/cliWork.ts"
const suffix = () => crypto.randomUUID().slice(0, 8)

/** runs `mesh <args>` to its end: exit code and everything it printed */
const mesh = (args: ReadonlyArray<string>, env: Readonly<Record<string, string>> = { AMQP_URL: amqpUrl() }) =>
  Effect.scoped(Effect.gen(function*() {
    const proc = yield* spawnProgram(bin, env, args)
    const { code } = yield* proc.exited
    return { code, lines: proc.output() }
  }))

/** `mesh run <args>` in the background, once it is serving */
const meshRun = (args: ReadonlyArray<string>, env: Readonly<Record<string, string>> = {}) =>
  Effect.gen(function*() {
    const proc = yield* spawnProgram(bin, { AMQP_URL: amqpUrl(), ...env }, ["run", ...args])
    yield* proc.waitFor(/mesh: running/, "60 seconds")
    return proc
  })

const clientLayer = () =>
  ServiceClient.layer.pipe(Layer.provideMerge(AmqpBroker.layer({ url: amqpUrl(), reconnect: undefined })), Layer.fresh)

describe("mesh", () => {
  it.live("run the calculator example on RabbitMQ, call it, describe it, SIGTERM it: exit 0", () =>
    Effect.gen(function*() {
      const run = yield* meshRun(["examples/calculator/service.ts"])
      const started = yield* run.waitFor(/calculator: instance \S+ started/)
      assert.match(started, /broker amqp/)
      assert.isTrue(run.output().some((l) => /mesh: broker amqp amqp:\/\/guest:\*\*\*@/.test(l)), "credentials are masked")

      const add = yield* mesh(["call", "calculator.add", "{\"a\":1,\"b\":2}"])
      assert.deepStrictEqual(add, { code: 0, lines: ["3"] })
      const countdown = yield* mesh(["call", "calculator.countdown", "{\"from\":3}"])
      assert.deepStrictEqual(countdown, { code: 0, lines: ["3", "2", "1", "0"] })
      const divide = yield* mesh(["call", "calculator.divide", "{\"a\":1,\"b\":0}"])
      assert.deepStrictEqual(divide, { code: 1, lines: ["mesh: DivisionByZero {\"dividend\":1}"] })

      // the broker can come from a config file, with ${VAR:default} expansion
      const config = join(tmpdir(), `mesh-${suffix()}.yaml`)
      writeFileSync(config, "amqp:\n  url: ${MESH_TEST_AMQP:amqp://nowhere}\n")
      const viaFile = yield* mesh(["--config", config, "call", "calculator.multiply", "{\"a\":6,\"b\":7}"], {
        AMQP_URL: "",
        MESH_TEST_AMQP: amqpUrl()
      })
      assert.deepStrictEqual(viaFile, { code: 0, lines: ["42"] })

      // the caller's user and context reach the handler, which logs them
      const multiplied = yield* mesh(["call", "calculator.multiply", "{\"a\":2,\"b\":3}", "--user", "ada", "--context", "tenant=acme"])
      assert.deepStrictEqual(multiplied, { code: 0, lines: ["6"] })
      yield* run.waitFor(/^ {2}userId: 'ada',$/)
      yield* run.waitFor(/^ {2}verifiedUserId: 'guest',$/)
      yield* run.waitFor(/^ {2}entries: \{ tenant: 'acme' \}$/)

      const described = yield* mesh(["describe", "calculator", "--json", "--wait", "1 second"])
      assert.strictEqual(described.code, 0)
      const instances = JSON.parse(described.lines.join("")) as ReadonlyArray<{
        readonly pid: number
        readonly instanceId: string
        readonly broker: string
        readonly rpcs: ReadonlyArray<{ readonly name: string; readonly stream: boolean; readonly payload: { readonly required: unknown } }>
      }>
      const ours = instances.find((i) => i.pid === run.pid)
      assert.isDefined(ours)
      assert.strictEqual(ours?.broker, "amqp")
      assert.deepStrictEqual(ours?.rpcs.map((r) => r.name), ["add", "divide", "countdown", "multiply", "sleep"])
      assert.deepStrictEqual(ours?.rpcs.find((r) => r.name === "add")?.payload.required, ["a", "b"])
      assert.strictEqual(ours?.rpcs.find((r) => r.name === "countdown")?.stream, true)

      const text = yield* mesh(["describe", "calculator"])
      assert.strictEqual(text.code, 0)
      assert.isTrue(text.lines.some((l) => l.includes(`instance ${ours?.instanceId}`) && l.includes(`pid ${run.pid}`)))
      assert.include(text.lines, "    add(a: number, b: number): number")
      assert.include(text.lines, "    divide(a: number, b: number): number  fails with { _tag: \"DivisionByZero\", dividend: number }")
      assert.include(text.lines, "    countdown(from: integer): stream of integer")

      yield* run.kill("SIGTERM")
      assert.strictEqual((yield* run.exited).code, 0)
      yield* run.waitFor(/mesh: stopped/)
    }).pipe(Effect.scoped), 120_000)

  it.live("SIGTERM with calls in flight: the instance drains them and exits 0, the rest go to the other; none is lost", () =>
    Effect.gen(function*() {
      const service = `cli-${suffix()}`
      const a = yield* meshRun([`${workModule}:WorkLive`], { SERVICE: service })
      const b = yield* meshRun([workModule], { SERVICE: service })
      const work = yield* ServiceClient.make(workContract(service), { timeout: "60 seconds" })
      const calls = yield* Effect.forEach(
        Array.from({ length: 150 }, (_, id) => id),
        (id) => work.work({ id, millis: 300 }),
        { concurrency: "unbounded" }
      ).pipe(Effect.forkChild)
      // and one from the shell, running on whichever instance picks it up
      const shell = yield* spawnProgram(bin, { AMQP_URL: amqpUrl() }, [
        "call",
        `${service}.work`,
        "{\"id\":1000,\"millis\":1500}"
      ])
      yield* a.waitFor(/^served/)
      yield* a.kill("SIGTERM")
      const results = yield* Fiber.join(calls)
      assert.deepStrictEqual(results.map((r) => r.id), Array.from({ length: 150 }, (_, id) => id))
      assert.strictEqual((yield* a.exited).code, 0)
      yield* a.waitFor(/mesh: stopped/)
      // the stopping instance answered what it had started; the other took the rest
      assert.isTrue(results.some((r) => r.pid === a.pid))
      assert.isTrue(results.some((r) => r.pid === b.pid))
      assert.strictEqual((yield* shell.exited).code, 0)
      assert.match(shell.output().join("\n"), /^\{"id":1000,"pid":\d+\}$/)
      yield* b.kill("SIGTERM")
      assert.strictEqual((yield* b.exited).code, 0)
    }).pipe(Effect.scoped, Effect.provide(clientLayer())), 120_000)

  it.live("killing npm's process of mesh run (kill $! after npm run mesh -- run ... &) stops the services too", () =>
    Effect.gen(function*() {
      const service = `cli-${suffix()}`
      const npm = realpathSync(execFileSync("which", ["npm"], { encoding: "utf8" }).trim())
      const run = yield* spawnProgram(npm, { AMQP_URL: amqpUrl(), SERVICE: service }, ["run", "--silent", "mesh", "--", "run", workModule])
      const running = yield* run.waitFor(/mesh: running .* \(pid \d+\)/, "60 seconds")
      const pid = Number(/\(pid (\d+)\)/.exec(running)?.[1])
      assert.notStrictEqual(pid, run.pid, "npm runs mesh in a process of its own")
      yield* run.kill("SIGTERM")
      yield* run.waitFor(/mesh: the parent process \(pid \d+, under npm\) exited: stopping as on SIGTERM$/, "10 seconds")
      yield* run.waitFor(/mesh: stopped$/, "20 seconds")
      const alive = () => Effect.sync(() => spawnSync("kill", ["-0", String(pid)]).status === 0)
      for (let i = 0; i < 50 && (yield* alive()); i++) yield* Effect.sleep("100 millis")
      assert.isFalse(yield* alive(), `mesh (pid ${pid}) still runs after npm was killed`)
    }).pipe(Effect.scoped), 120_000)

  it.live("a second signal while draining exits at once with 130", () =>
    Effect.gen(function*() {
      const service = `cli-${suffix()}`
      const run = yield* meshRun([workModule], { SERVICE: service })
      const call = yield* spawnProgram(bin, { AMQP_URL: amqpUrl() }, ["call", `${service}.work`, "{\"id\":1,\"millis\":60000}"])
      yield* run.waitFor(/^working 1$/)
      yield* run.kill("SIGTERM")
      yield* run.waitFor(/mesh: stopping/)
      yield* run.kill("SIGINT")
      const exit = yield* run.exited.pipe(Effect.timeout("10 seconds"))
      assert.strictEqual(exit.code, 130)
      yield* run.waitFor(/^mesh: second SIGINT: exiting without waiting for running requests$/)
      assert.isFalse(run.output().some((l) => l.startsWith("served")))
      yield* call.kill("SIGINT")
    }).pipe(Effect.scoped), 120_000)

  it.live("emit publishes an event the running service receives; --user and --context fill the call context; describe lists events", () =>
    Effect.gen(function*() {
      const service = `cli-${suffix()}`
      const run = yield* meshRun([workModule], { SERVICE: service })
      const emitted = yield* mesh(["emit", `${service}.ping`, "{\"n\":7}"])
      assert.deepStrictEqual(emitted, { code: 0, lines: [`emitted ${service}.ping`] })
      yield* run.waitFor(/^pinged 7$/)
      // both services of the module run; the call context comes from --user and --context
      const context = yield* mesh(["call", `${service}-context.context`, "--user", "ada", "--context", "tenant=acme", "--context", "region=eu"])
      assert.deepStrictEqual(context, { code: 0, lines: ["{\"user\":\"ada\",\"entries\":{\"tenant\":\"acme\",\"region\":\"eu\"}}"] })
      const text = yield* mesh(["describe", service])
      assert.include(text.lines, "  publishes")
      assert.include(text.lines, `    ${service}.ping { n: integer }`)
      assert.include(text.lines, `    ${service}.ping (pool)`)
      yield* run.kill("SIGTERM")
      assert.strictEqual((yield* run.exited).code, 0)
    }).pipe(Effect.scoped), 120_000)

  it.live("bad input: one readable line and a non-zero exit code", () =>
    Effect.gen(function*() {
      const service = `cli-${suffix()}`
      const run = yield* meshRun([workModule], { SERVICE: service })
      const oneLine = (result: { readonly code: number | null; readonly lines: ReadonlyArray<string> }, code: number, pattern: RegExp) => {
        assert.strictEqual(result.code, code, result.lines.join("\n"))
        assert.strictEqual(result.lines.length, 1, result.lines.join("\n"))
        assert.match(result.lines[0], pattern)
      }
      // independent processes: two at a time (node startup is CPU-heavy; other test files share the machine)
      const cases = [
        [mesh(["call", `nobody-${suffix()}.work`, "{}"]), 1, /^mesh: ServiceNotFound: no service named "nobody-\w+" is running$/],
        [mesh(["call", `${service}.work`, "{\"id\":1,"]), 2, /^mesh: the payload is not valid JSON: /],
        [mesh(["call", `${service}.work`, "{\"id\":\"one\",\"millis\":1}"]), 1, /^mesh: InvalidPayload: invalid payload for cli-\w+\.work: .*\["id"\]/],
        [mesh(["call", `${service}.nope`]), 1, /^mesh: MethodNotFound: service "cli-\w+" has no method "nope"$/],
        [mesh(["call", `${service}.work`]), 1, /^mesh: InvalidPayload: no payload was given, and cli-\w+\.work takes one \(Expected object\)$/],
        [mesh(["call", service, "{}"]), 2, /^mesh: expected service\.method, got "cli-\w+"$/],
        [mesh(["call", `${service}.work`, "{}", "--timeout", "soon"]), 2, /^mesh: "soon" is not a duration/],
        [mesh(["emit", `${service}.ping`, "not json"]), 2, /^mesh: the payload is not valid JSON: /],
        [mesh(["describe", `nobody-${suffix()}`, "--wait", "300 millis"]), 1, /^mesh: no instance of "nobody-\w+" answered within 300ms$/],
        [mesh(["call", `${service}.work`, "{}"], { AMQP_URL: "" }), 2, /^mesh: call needs RabbitMQ: set AMQP_URL/],
        [mesh(["--config", "/nonexistent/mesh.yaml", "show-config"]), 2, /^mesh: config file \/nonexistent\/mesh.yaml: no such file$/],
        [mesh(["run", "test/fixtures/programs/workContract.ts"]), 2, /exports no service Layer made by Service\.make/],
        [mesh(["run", `${workModule}:answer`]), 2, /has no Layer export named answer$/],
        [mesh(["run", "no/such/module.ts"]), 2, /^mesh: could not load no\/such\/module\.ts: Cannot find module '\/\S+\/no\/such\/module\.ts'$/],
        // a wrong command line is one line too, not the help and an error block
        [mesh(["bogus"]), 2, /^mesh: unknown command "bogus" \(mesh --help\)$/],
        [mesh(["emit", `${service}.ping`]), 2, /^mesh: missing <json> \(mesh emit --help\)$/],
        [mesh(["call", `${service}.work`, "{}", "--context", "tenant"]), 2, /^mesh: --context takes key=value, got "tenant" \(mesh call --help\)$/],
        [mesh(["call", `${service}.work`, "{}", "--timeout"]), 2, /^mesh: --timeout needs a value \(mesh call --help\)$/]
      ] as const
      const results = yield* Effect.forEach(cases, ([result]) => result, { concurrency: 2 })
      results.forEach((result, i) => oneLine(result, cases[i][1], cases[i][2]))
      // a broker that cannot be reached is said at once, as bad configuration
      const started = Date.now()
      const unreachable = yield* mesh(["call", `${service}.work`, "{}"], { AMQP_URL: "amqp://guest:guest@127.0.0.1:1" })
      oneLine(unreachable, 2, /^mesh: cannot reach RabbitMQ at amqp:\/\/guest:\*\*\*@127\.0\.0\.1:1: connect ECONNREFUSED 127\.0\.0\.1:1 \(check AMQP_URL/)
      assert.isBelow(Date.now() - started, 10_000)
      // mesh run lets its services retry, and says why at once
      const waiting = yield* spawnProgram(bin, { AMQP_URL: "amqp://guest:guest@127.0.0.1:1" }, ["run", workModule])
      yield* waiting.waitFor(/mesh: cannot reach RabbitMQ at amqp:\/\/guest:\*\*\*@127\.0\.0\.1:1: .*; retrying for 30 seconds$/, "10 seconds")
      yield* waiting.kill("SIGKILL")
      const needs = yield* mesh(["run", "test/fixtures/programs/cliNeeds.ts"])
      assert.strictEqual(needs.code, 2)
      assert.match(needs.lines[needs.lines.length - 1], /^mesh: a service needs cli-test\/Database, which mesh run does not provide/)
      const timedOut = yield* mesh(["call", `${service}.work`, "{\"id\":1,\"millis\":5000}", "--timeout", "300 millis"])
      oneLine(timedOut, 1, /^mesh: CallTimeout: cli-\w+\.work did not answer within 300 ms$/)
      yield* run.kill("SIGTERM")
      assert.strictEqual((yield* run.exited).code, 0)
    }).pipe(Effect.scoped), 180_000)

  it.live("run serves a module's HTTP entrypoints and the gateways with --port or HTTP_PORT, and refuses them without a port", () =>
    Effect.gen(function*() {
      const service = `cli-${suffix()}`
      const module = "test/fixtures/programs/cliHttp.ts"
      const getJson = (url: string, init?: RequestInit) =>
        Effect.promise(async () => {
          const response = await fetch(url, init)
          return { status: response.status, body: (await response.json()) as unknown }
        })

      // --port 0: a free port, which the log line names; on RabbitMQ
      const run = yield* meshRun([module, "--port", "0"], { SERVICE: service, HTTP_HOST: "127.0.0.1" })
      const line = yield* run.waitFor(/mesh: HTTP on http:\/\/127\.0\.0\.1:\d+/)
      const base = /(http:\/\/127\.0\.0\.1:\d+)/.exec(line)?.[1] ?? ""
      const hello = yield* getJson(`${base}/${service}/hello/ada`)
      assert.deepStrictEqual(hello, { status: 200, body: { hello: "ada", pid: run.pid } })
      const rpc = yield* getJson(`${base}/rpc/${service}/work`, { method: "POST", body: JSON.stringify({ id: 7, millis: 0 }) })
      assert.deepStrictEqual(rpc, { status: 200, body: { id: 7, pid: run.pid } })
      yield* run.kill("SIGTERM")
      assert.strictEqual((yield* run.exited).code, 0)

      // HTTP_PORT from the environment, on the embedded broker
      const port = yield* Effect.promise(() =>
        new Promise<number>((resolve) => {
          const server = createServer().listen(0, "127.0.0.1", () => {
            const address = server.address()
            server.close(() => resolve(typeof address === "object" && address !== null ? address.port : 0))
          })
        })
      )
      const viaEnv = yield* meshRun([module], { SERVICE: service, AMQP_URL: "", HTTP_PORT: String(port) })
      yield* viaEnv.waitFor(/mesh: broker memory/)
      const again = yield* getJson(`http://127.0.0.1:${port}/${service}/hello/grace`)
      assert.deepStrictEqual(again, { status: 200, body: { hello: "grace", pid: viaEnv.pid } })
      yield* viaEnv.kill("SIGTERM")
      assert.strictEqual((yield* viaEnv.exited).code, 0)

      // no port: one line, exit 2, the services stopped again
      const refused = yield* mesh(["run", module], { AMQP_URL: amqpUrl(), SERVICE: service, HTTP_PORT: "" })
      assert.strictEqual(refused.code, 2, refused.lines.join("\n"))
      assert.match(
        refused.lines[refused.lines.length - 1],
        /^mesh: GET \/cli-\w+\/hello\/:name: the services serve HTTP and no port is configured: pass --port, or set HTTP_PORT \(http\.port in --config\)$/
      )
      assert.isFalse(refused.lines.some((l) => l.includes("mesh: running")))
    }).pipe(Effect.scoped), 120_000)

  it.live("keygen; run a sealed service with LOG_LEVEL=Debug, call it sealed, refuse an unsealed call: the private key is never printed", () =>
    Effect.gen(function*() {
      const made = yield* mesh(["keygen"], {})
      assert.strictEqual(made.code, 0, made.lines.join("\n"))
      const key = /^MESH_SEALED_PRIVATE_KEY=([A-Za-z0-9_-]{43})$/.exec(made.lines[0] ?? "")?.[1] ?? ""
      const publicKey = /: ([A-Za-z0-9_-]{43})$/.exec(made.lines[1] ?? "")?.[1] ?? ""
      assert.strictEqual((yield* Sealed.makeServiceKey(key)).publicKey, publicKey)

      const service = `cli-vault-${suffix()}`
      const env = { SERVICE: service, MESH_SEALED_PRIVATE_KEY: key, LOG_LEVEL: "Debug" }
      const run = yield* meshRun(["test/fixtures/programs/sealedVault.ts"], env)
      const Vault = ServiceContract.make(service, VaultRpcs)
      yield* Effect.gen(function*() {
        const vault = yield* ServiceClient.make(Vault)
        assert.strictEqual(yield* vault.store({ owner: "ada", secret: "attic" }), "kept ada's secret")
        assert.deepStrictEqual(Array.from(yield* Stream.runCollect(vault.reveal({ owner: "ada" }))), ["attic"])
      }).pipe(Effect.provide(clientLayer()))
      // mesh call has no contract: its request is not sealed, and refused
      const unsealed = yield* mesh(["call", `${service}.store`, `{"owner":"eve","secret":"x"}`], { AMQP_URL: amqpUrl() })
      assert.strictEqual(unsealed.code, 1, unsealed.lines.join("\n"))
      assert.match(unsealed.lines.join("\n"), /InvalidPayload: .*the method is sealed/)
      const described = yield* mesh(["describe", service, "--json"], { AMQP_URL: amqpUrl() })
      assert.include(described.lines.join("\n"), publicKey)
      const shown = yield* mesh(["show-config"], env)
      assert.match(shown.lines.join("\n"), /MESH_SEALED_PRIVATE_KEY\s+= <redacted> {2}\(env\)/)
      yield* run.kill("SIGTERM")
      assert.strictEqual((yield* run.exited).code, 0, run.output().join("\n"))
      assert.isTrue(run.output().some((line) => line.includes("sealed request") && line.includes("dead-lettered")), run.output().join("\n"))
      for (const output of [run.output(), unsealed.lines, described.lines, shown.lines]) assert.notInclude(output.join("\n"), key)
    }).pipe(Effect.scoped), 120_000)

  it.live("run on the embedded broker without AMQP_URL says so; show-config redacts secrets", () =>
    Effect.gen(function*() {
      const run = yield* meshRun(["examples/calculator/service.ts"], { AMQP_URL: "" })
      yield* run.waitFor(/mesh: broker memory \(embedded, in-process\)/)
      yield* run.waitFor(/only this process can reach the embedded broker; set AMQP_URL/)
      yield* run.kill("SIGINT")
      assert.strictEqual((yield* run.exited).code, 0)

      const config = join(tmpdir(), `mesh-${suffix()}.yaml`)
      writeFileSync(config, [
        "amqp:",
        "  url: amqp://app:${MESH_TEST_PASSWORD:changeme}@rabbit.internal:5672/prod",
        "  heartbeat: 5",
        "database:",
        "  password: hunter2",
        "  host: db.internal"
      ].join("\n"))
      const shown = yield* mesh(["show-config", "--config", config], { MESH_TEST_PASSWORD: "s3cret", AMQP_HEARTBEAT: "30" })
      assert.strictEqual(shown.code, 0)
      const output = shown.lines.join("\n")
      assert.notInclude(output, "s3cret")
      assert.notInclude(output, "hunter2")
      assert.match(output, /broker: amqp amqp:\/\/app:\*\*\*@rabbit\.internal:5672\/prod/)
      assert.match(output, /AMQP_HEARTBEAT\s+= 5 {2}\(file\)/)
      assert.match(output, /DATABASE_PASSWORD\s+= <redacted> {2}\(file\)/)
      assert.match(output, /DATABASE_HOST\s+= db\.internal {2}\(file\)/)
      assert.match(output, /AMQP_CONNECTION_NAME\s+= effect-mesh {2}\(default\)/)
    }).pipe(Effect.scoped), 120_000)
})
