/**
 * Vitest global setup: gives the tests a real RabbitMQ.
 *
 * Unless `AMQP_URL` is already set, starts the project's private node with `scripts/rabbitmq.sh start`
 * (installing `rabbitmq-server` on a fresh machine) and hands its URL to the tests, both as
 * `process.env.AMQP_URL` and as the provided value `amqpUrl` (read it with `test/fixtures/amqpUrl.ts`).
 * On teardown the node is stopped again, unless it was already running before the tests started.
 */
import { spawnSync } from "node:child_process"
import { fileURLToPath } from "node:url"
import type { TestProject } from "vitest/node"

declare module "vitest" {
  export interface ProvidedContext {
    amqpUrl: string
  }
}

const script = fileURLToPath(new URL("../scripts/rabbitmq.sh", import.meta.url))

const run = (command: string): { readonly status: number | null; readonly stdout: string } => {
  const result = spawnSync("bash", [script, command], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] })
  if (result.error !== undefined) throw result.error
  return { status: result.status, stdout: result.stdout.trim() }
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
    throw new Error(`scripts/rabbitmq.sh start failed with status ${started.status}`)
  }
  const url = started.stdout.split("\n").pop() ?? ""
  process.env["AMQP_URL"] = url
  project.provide("amqpUrl", url)
  return () => {
    if (!wasRunning) run("stop")
  }
}
