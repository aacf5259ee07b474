/**
 * examples/sql as a user runs it, on a real PostgreSQL (`scripts/postgres.sh`) and the embedded broker:
 * the refused order leaves nothing and sends no event, the repeated event is shipped once.
 */
import { afterAll, assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { fileURLToPath } from "node:url"
import { database } from "./fixtures/postgres.ts"
import { spawnProgram } from "./fixtures/processes.ts"

const db = database("sql_example")
afterAll(() => db.release())

const example = fileURLToPath(new URL("../examples/sql/main.ts", import.meta.url))

describe("examples/sql", () => {
  it.live("places two orders, refuses one without a trace, ships each placed order once", () =>
    Effect.gen(function*() {
      const proc = yield* spawnProgram(example, { DATABASE_URL: db.url, AMQP_URL: "" })
      const exit = yield* proc.exited
      const output = proc.output().join("\n")
      assert.deepStrictEqual(exit, { code: 0, signal: null }, output)
      assert.include(output, "orders: o-2 refused: only 3 tea left")
      assert.match(output, /shipping: 2 x tea for o-1 \(event \w+, correlation checkout-o-1\)/)
      assert.notInclude(output, "for o-2")
      assert.strictEqual(output.match(/for o-1/g)?.length, 1, output)
      assert.include(output, "in the database: tea left 0; orders o-1, o-3; shipped o-1, o-3; outbox rows sent 2")
    }).pipe(Effect.scoped), 60_000)
})
