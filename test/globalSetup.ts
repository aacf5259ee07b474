/**
 * Vitest global setup: gives the tests a real RabbitMQ.
 *
 * Unless `AMQP_URL` is already set, starts the project's private node with `scripts/rabbitmq.sh start`
 * (installing `rabbitmq-server` on a fresh machine) and hands its URL to the tests, both as
 * `process.env.AMQP_URL` and as the provided value `amqpUrl` (read it with `test/fixtures/amqpUrl.ts`).
 *
 * Several test runs may share the node (parallel `vitest` processes in one checkout): each holds a
 * lease file while it runs, and the last one to finish stops the node, but only if a test run started
 * it. A node that was running before (started by hand) is left running.
 */
import { spawnSync } from "node:child_process"
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import type { TestProject } from "vitest/node"
import { checkoutPort } from "./fixtures/ports.ts"

declare module "vitest" {
  export interface ProvidedContext {
    amqpUrl: string
  }
}

const root = fileURLToPath(new URL("..", import.meta.url))
const script = join(root, "scripts", "rabbitmq.sh")
const port = String(checkoutPort("tests", process.env["MESH_RABBITMQ_PORT"]))
const nodeDir = join(process.env["MESH_RABBITMQ_DIR"] ?? join(root, ".rabbitmq"), port)
const leases = join(nodeDir, "leases")
const startedMarker = join(nodeDir, "started-by-tests")

const run = (command: string): { readonly status: number | null; readonly stdout: string } => {
  // a node this run boots starts without the queues of earlier runs (one already running is kept)
  const result = spawnSync("bash", [script, command], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, MESH_RABBITMQ_FRESH: "1" }
  })
  if (result.error !== undefined) throw result.error
  return { status: result.status, stdout: result.stdout.trim() }
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM"
  }
}

/** the pids of the other test runs still holding a lease (stale leases are removed) */
const otherLeases = (): Array<number> => {
  if (!existsSync(leases)) return []
  const others: Array<number> = []
  for (const name of readdirSync(leases)) {
    const pid = Number(name)
    if (pid === process.pid) continue
    if (Number.isInteger(pid) && alive(pid)) others.push(pid)
    else rmSync(join(leases, name), { force: true })
  }
  return others
}

export default function setup(project: TestProject): (() => void) | undefined {
  const given = process.env["AMQP_URL"]
  if (given !== undefined && given !== "") {
    project.provide("amqpUrl", given)
    return undefined
  }
  const wasRunning = run("status").status === 0
  const started = run("start")
  if (started.status !== 0) {
    throw new Error(
      `scripts/rabbitmq.sh start failed with status ${started.status}: its last "rabbitmq.sh:" lines above say why ` +
        `(or set AMQP_URL to a RabbitMQ of your own)`
    )
  }
  mkdirSync(leases, { recursive: true })
  writeFileSync(join(leases, String(process.pid)), "")
  if (!wasRunning) writeFileSync(startedMarker, "")
  const url = started.stdout.split("\n").pop() ?? ""
  process.env["AMQP_URL"] = url
  project.provide("amqpUrl", url)
  return () => {
    rmSync(join(leases, String(process.pid)), { force: true })
    if (otherLeases().length === 0 && existsSync(startedMarker)) {
      rmSync(startedMarker, { force: true })
      run("stop")
    }
  }
}
