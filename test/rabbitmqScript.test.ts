/**
 * Two checkouts on one machine never touch each other's RabbitMQ nodes: a node another checkout started
 * on a port is neither reused nor stopped by this one's `scripts/rabbitmq.sh`, and each checkout has
 * ports of its own by default.
 */
import { assert, describe, it } from "@effect/vitest"
import { spawnSync } from "node:child_process"
import { cpSync, mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { checkoutPort } from "./fixtures/ports.ts"

const root = fileURLToPath(new URL("..", import.meta.url))

const script = (checkout: string, args: ReadonlyArray<string>, port: number) =>
  spawnSync("bash", [join(checkout, "scripts", "rabbitmq.sh"), ...args], {
    encoding: "utf8",
    env: { ...process.env, MESH_RABBITMQ_PORT: String(port), MESH_RABBITMQ_DIR: "", MESH_RABBITMQ_FRESH: "1" },
    timeout: 180_000
  })

describe("scripts/rabbitmq.sh", () => {
  it("leaves another checkout's node alone, on the same port, and derives each checkout's ports from its path", () => {
    const other = mkdtempSync(join(tmpdir(), "effect-mesh-other-checkout-"))
    cpSync(join(root, "scripts"), join(other, "scripts"), { recursive: true })
    // a port of neither checkout's defaults
    const port = checkoutPort("tests") + 7
    try {
      const theirs = script(other, ["start"], port)
      assert.strictEqual(theirs.status, 0, theirs.stderr)
      // ours does not take their node for its own: it refuses the port, and stops nothing
      const ours = script(root, ["start"], port)
      assert.strictEqual(ours.status, 1)
      assert.match(ours.stderr, new RegExp(`port ${port} is taken by something that is not mesh-[0-9a-f]{6}-${port}@localhost`))
      assert.match(ours.stderr, /this checkout never touches it/)
      assert.strictEqual(script(root, ["status"], port).status, 3)
      script(root, ["stop"], port)
      assert.strictEqual(script(other, ["status"], port).status, 0, "their node still runs")
      // each checkout's base port comes from its path, in a range of its own (one in 40 may coincide:
      // then the refusal above is what keeps them apart)
      const ourBase = Number(spawnSync("bash", [join(root, "scripts", "rabbitmq.sh"), "port"], { encoding: "utf8" }).stdout)
      const theirBase = Number(spawnSync("bash", [join(other, "scripts", "rabbitmq.sh"), "port"], { encoding: "utf8" }).stdout)
      assert.isTrue(Number.isInteger(ourBase) && Number.isInteger(theirBase))
      assert.isTrue(ourBase >= 5600 && ourBase <= 5990 && ourBase % 10 === 0)
    } finally {
      script(other, ["stop"], port)
      rmSync(other, { recursive: true, force: true })
    }
  }, 240_000)
})
