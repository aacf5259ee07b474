/**
 * `mesh shell` against the test RabbitMQ with a real service started by `mesh run`: driven through its
 * standard input as a process (lines as they come), and in this process as a terminal (Tab completion,
 * Ctrl-C, history recalled with the arrow key from the file an earlier session wrote).
 */
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Fiber, Layer, Result } from "effect"
import { AmqpBroker, ServiceClient } from "effect-mesh"
import { mkdtempSync, readFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { PassThrough } from "node:stream"
import { fileURLToPath } from "node:url"
import * as literal from "../src/internal/literal.ts"
import * as Shell from "../src/internal/shell.ts"
import { amqpUrl } from "./fixtures/amqpUrl.ts"
import { spawnProgram } from "./fixtures/processes.ts"

const bin = fileURLToPath(new URL("../src/bin.ts", import.meta.url))
const serviceModule = "test/fixtures/programs/shellService.ts"
const suffix = () => crypto.randomUUID().slice(0, 8)

/** `mesh run` of the shell tests' service under a fresh name, once it is serving */
const runService = (service: string) =>
  Effect.gen(function*() {
    const proc = yield* spawnProgram(bin, { AMQP_URL: amqpUrl(), SERVICE: service }, ["run", serviceModule])
    yield* proc.waitFor(/mesh: running/, "60 seconds")
    return proc
  })

describe("mesh shell", () => {
  it("reads JSON and object literals as data, never as code", () => {
    const parsed = literal.parse(`{a: 1, 'b': "x\\n", c: [1, 2,], d: 0x10, e: -1.5e2, f: null, g: true, "h i": {}, // note
      __proto__: {polluted: true}, }`)
    assert.isTrue(Result.isSuccess(parsed))
    const value = Result.getOrThrow(parsed) as Record<string, unknown>
    assert.deepStrictEqual(JSON.parse(JSON.stringify(value)), {
      a: 1, b: "x\n", c: [1, 2], d: 16, e: -150, f: null, g: true, "h i": {}, ["__proto__"]: { polluted: true }
    })
    assert.strictEqual(Object.getPrototypeOf(value), Object.prototype, "__proto__ is a key like any other")
    assert.deepStrictEqual(Result.getOrThrow(literal.parsePrefix(`{a: 1} --timeout 5s`)), { value: { a: 1 }, end: 7 })
    for (const [text, message] of [
      ["process.exit(1)", /unexpected process at column 1/],
      ["{a: 1,", /expected a key or "}", got end of input/],
      ["{a: b}", /unexpected b at column 5: quote strings/],
      ["[1 2]", /expected "," or "]", got "2" at column 4/],
      ["'open", /unterminated string/],
      ["{a: 1} x", /unexpected "x" at column 8 after the value/]
    ] as const) {
      const failed = literal.parse(text)
      assert.isTrue(Result.isFailure(failed), text)
      if (Result.isFailure(failed)) assert.match(failed.failure, message)
    }
  })

  it.live("driven through its input: calls, streams as they arrive, typed errors that never end it, events, tail, context, describe, history", () =>
    Effect.gen(function*() {
      const service = `shell-${suffix()}`
      const run = yield* runService(service)
      const home = mkdtempSync(join(tmpdir(), "mesh-shell-"))
      const shell = yield* spawnProgram(bin, { AMQP_URL: amqpUrl(), HOME: home }, ["shell", "--user", "grace"])
      yield* shell.waitFor(/^mesh shell on amqp amqp:\/\/guest:\*\*\*@/)
      const send = (line: string) => shell.write(`${line}\n`)
      const next = (pattern: RegExp) => shell.waitFor(pattern, "20 seconds")

      // JSON and object literals
      yield* send(`${service}.add {"a": 1, "b": 2}`)
      yield* next(/^3$/)
      yield* send(`${service}.add {a: 40, b: 2, /* a comment */}`)
      yield* next(/^42$/)

      // a stream prints each element as it arrives: the first long before the last
      yield* send(`${service}.countdown {from: 3, millis: 400}`)
      yield* next(/^3$/)
      assert.isFalse(shell.output().includes("0"), "the first element printed before the stream ended")
      yield* next(/^0$/)

      // errors are one line each, and the session goes on
      yield* send(`${service}.divide {a: 1, b: 0}`)
      yield* next(/^error: DivisionByZero \{"dividend":1\}$/)
      yield* send(`${service}.add`)
      yield* next(/^error: InvalidPayload: no payload was given, and shell-\w+\.add takes one \(Expected object\)$/)
      yield* send(`${service}.add {a: 'one', b: 2}`)
      yield* next(/^error: InvalidPayload: invalid payload for shell-\w+\.add: Expected number at \["a"\]$/)
      yield* send(`${service}.add {a: 1,`)
      yield* next(/^error: the payload is not JSON or an object literal: /)
      yield* send(`${service}.add process.exit(3)`)
      yield* next(/^error: the payload is not JSON or an object literal: unexpected process/)
      yield* send(`${service}.nope {}`)
      yield* next(/^error: MethodNotFound: /)
      yield* send(`nobody-${suffix()}.add {}`)
      yield* next(/^error: ServiceNotFound: /)
      yield* send(`${service}.sleep {millis: 5000} --timeout 300ms`)
      yield* next(/^error: CallTimeout: shell-\w+\.sleep did not answer within 300 ms$/)
      yield* send("bogus")
      yield* next(/^error: unknown command "bogus"/)

      // the call context: --user from the command line, context entries for the session and per call
      yield* send("context tenant=acme")
      yield* next(/^context: tenant=acme$/)
      yield* send(`${service}.context --context region=eu`)
      yield* next(/^\{"user":"grace","entries":\{"tenant":"acme","region":"eu"\}\}$/)
      yield* send(`${service}.context --user ada`)
      yield* next(/^\{"user":"ada","entries":\{"tenant":"acme"\}\}$/)

      // a live tail of an event type, and emit
      yield* send(`tail ${service}.noted`)
      yield* next(/^tailing shell-\w+\.noted/)
      yield* send(`emit ${service}.noted {text: "hello"}`)
      yield* next(/^emitted shell-\w+\.noted$/)
      yield* next(/^event shell-\w+\.noted \{"text":"hello"\} {2}\(user grace, tenant=acme\)$/)
      yield* send(`untail ${service}.noted`)
      yield* next(/^stopped tailing shell-\w+\.noted$/)

      // discovery
      yield* send(`describe ${service}`)
      yield* next(/^ {4}countdown\(from: integer, millis: number\): stream of integer$/)
      yield* send("services")
      yield* next(new RegExp(`^${service}: add, countdown, divide, context, sleep$`))

      yield* send("exit")
      assert.strictEqual((yield* shell.exited).code, 0)
      const history = readFileSync(join(home, ".mesh_history"), "utf8").split("\n")
      assert.include(history, `${service}.add {"a": 1, "b": 2}`)
      assert.include(history, "exit")
      yield* run.kill("SIGTERM")
      assert.strictEqual((yield* run.exited).code, 0)
    }).pipe(Effect.scoped), 120_000)

  it.live("as a terminal: Tab completes services and methods from discovery, Ctrl-C interrupts a call, the history file is read back", () =>
    Effect.gen(function*() {
      const service = `shell-${suffix()}`
      const run = yield* runService(service)
      const historyFile = join(mkdtempSync(join(tmpdir(), "mesh-shell-")), "history")
      const session = (script: (input: PassThrough, output: () => string) => Effect.Effect<void, Error>) =>
        Effect.gen(function*() {
          const input = new PassThrough()
          const output = new PassThrough()
          let text = ""
          output.on("data", (chunk: Buffer) => {
            text += chunk.toString("utf8")
          })
          const shell = yield* Shell.run({
            input,
            output,
            terminal: true,
            historyFile,
            timeout: Duration.seconds(30),
            user: undefined,
            context: {}
          }).pipe(Effect.forkChild)
          // what the terminal shows, roughly: the text without readline's cursor movements
          yield* script(input, () => text.replace(/\x1b\[[0-9;]*[A-Za-z]/g, ""))
          input.end()
          yield* Fiber.await(shell).pipe(Effect.timeout("10 seconds"), Effect.orDie)
        })
      const until = (output: () => string, pattern: RegExp) =>
        Effect.gen(function*() {
          for (let i = 0; i < 200; i++) {
            if (pattern.test(output())) return
            yield* Effect.sleep("50 millis")
          }
          return yield* Effect.fail(new Error(`no ${pattern} in:\n${output()}`))
        })

      yield* session((input, output) =>
        Effect.gen(function*() {
          yield* until(output, /mesh> $/)
          // discovery answers in the background; `services` waits for it
          input.write("services\r")
          yield* until(output, new RegExp(`${service}: add`))
          // one service starts with this prefix: Tab completes its name, then the method
          // a key at a time: readline completes on a Tab typed, not on one pasted within other text
          const tab = Effect.andThen(Effect.sleep("50 millis"), Effect.sync(() => input.write("\t")))
          input.write(service.slice(0, -2))
          yield* tab
          yield* until(output, new RegExp(`mesh> ${service}\\.$`))
          input.write("cou")
          yield* tab
          yield* until(output, new RegExp(`mesh> ${service}\\.countdown$`))
          input.write(" {from: 2, millis: 10}\r")
          yield* until(output, /\r?\n2\r?\n1\r?\n0\r?\n[\s\S]*mesh> $/)
          // typed while a call runs: it is the next line, the cursor after it, and Tab completes it
          input.write(`${service}.sleep {millis: 400}\r`)
          yield* Effect.sleep("100 millis")
          input.write(`${service}.`)
          yield* until(output, new RegExp(`"slept[^\\n]*\\n[\\s\\S]*mesh> ${service}\\.$`))
          // two candidates: listed
          yield* tab
          yield* tab
          yield* until(output, /(shell-\w+\.(add|context|countdown|divide|sleep)\s+){5}/)
          input.write("\x15") // Ctrl-U clears the line
          // Ctrl-C interrupts the running call, and the shell goes on
          input.write(`${service}.sleep {millis: 20000}\r`)
          yield* Effect.sleep("500 millis")
          input.write("\x03")
          yield* until(output, /interrupted[\s\S]*mesh> $/)
          input.write(`${service}.add {a: 2, b: 2}\r`)
          yield* until(output, /\n4\r?\n/)
        })
      )
      // a second session recalls the first one's lines (newest first) with the up arrow
      yield* session((input, output) =>
        Effect.gen(function*() {
          yield* until(output, /mesh> $/)
          input.write("\x1b[A")
          yield* until(output, new RegExp(`mesh> ${service}\\.add \\{a: 2, b: 2\\}$`))
          input.write("\r")
          yield* until(output, /\n4\r?\n/)
        })
      )
      const lines = readFileSync(historyFile, "utf8").trim().split("\n")
      assert.strictEqual(lines[0], "services")
      assert.strictEqual(lines[lines.length - 1], `${service}.add {a: 2, b: 2}`)
      yield* run.kill("SIGTERM")
      assert.strictEqual((yield* run.exited).code, 0)
    }).pipe(
      Effect.scoped,
      Effect.provide(
        ServiceClient.layer.pipe(Layer.provideMerge(AmqpBroker.layer({ url: amqpUrl(), reconnect: undefined })), Layer.fresh)
      )
    ), 120_000)
})

