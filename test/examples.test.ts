/**
 * The examples as a user runs them: the servers stop on SIGTERM with exit code 0 once drained, as
 * `mesh run` does, and every example logs in the same (pretty) format.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { fileURLToPath } from "node:url"
import { amqpUrl } from "./fixtures/amqpUrl.ts"
import { spawnProgram } from "./fixtures/processes.ts"

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
