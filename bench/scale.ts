/**
 * `npm run bench -- --scale [--quick]`: how throughput grows with processes, on one RabbitMQ node and on
 * the checkout's three-node cluster (`scripts/rabbitmq.sh cluster start`).
 *
 * - RPC: 1, 2 and 4 service processes (one quorum request queue, 64 requests at once each) against 1,
 *   2 and 4 client processes (64 calls in flight each, `add`): calls/s over all clients and the p99 of
 *   their latencies merged. Then the same service sharded over 4 queues (4 services of one contract,
 *   one per server process, each client spreading its calls over the 4): past one queue.
 * - Events: one publisher (64 confirmed publishes in flight) to 1..4 subscriber processes of one pool
 *   subscription (quorum): events/s from the first publish until the last is handled.
 *
 * Every process is one of bench/scaleWorker.ts. A table goes to stdout, the measurements to
 * `bench/results/<time>-scale.json` and a chart to `bench/results/<time>-scale.svg`.
 *
 * Brokers: the benchmark's node (`MESH_BENCH_RABBITMQ_PORT`, default the checkout's base port + 1) and
 * the cluster (`MESH_RABBITMQ_CLUSTER_PORT` moves it), both started when not running and left running.
 */
import { spawn, spawnSync } from "node:child_process"
import type { ChildProcessWithoutNullStreams } from "node:child_process"
import { mkdirSync, writeFileSync } from "node:fs"
import { cpus } from "node:os"
import { dirname, join } from "node:path"
import { createInterface } from "node:readline"
import { fileURLToPath } from "node:url"
import { barChart } from "./chart.ts"
import { quantile } from "./shared.ts"

const root = join(dirname(fileURLToPath(import.meta.url)), "..")
const script = join(root, "scripts", "rabbitmq.sh")
const worker = join(root, "bench", "scaleWorker.ts")

interface ScaleOptions {
  readonly quick: boolean
}

interface RpcCell {
  readonly broker: string
  readonly servers: number
  readonly clients: number
  readonly queues: number
  readonly callsPerSecond: number
  readonly p50Ms: number
  readonly p99Ms: number
}

interface EventCell {
  readonly broker: string
  readonly consumers: number
  readonly events: number
  readonly eventsPerSecond: number
}

interface ClientResult {
  readonly calls: number
  readonly elapsedMs: number
  readonly p50Ms: number
  readonly p99Ms: number
  readonly sample: ReadonlyArray<number>
}

/** a worker process and its output lines */
export interface Worker {
  readonly child: ChildProcessWithoutNullStreams
  readonly lines: Array<string>
  /** the first line (already printed or to come) that starts with `prefix` */
  readonly next: (prefix: string, timeoutMs?: number) => Promise<string>
  readonly send: (line: string) => void
  readonly stop: () => Promise<void>
}

export const startWorker = (args: ReadonlyArray<string>, nodeFlags: ReadonlyArray<string> = []): Worker => {
  const child = spawn(process.execPath, [...nodeFlags, worker, ...args], { stdio: "pipe", env: process.env })
  const lines: Array<string> = []
  const waiters: Array<{ prefix: string; resolve: (line: string) => void; seen: number }> = []
  createInterface({ input: child.stdout }).on("line", (line) => {
    lines.push(line)
    for (const w of waiters.splice(0)) {
      if (line.startsWith(w.prefix)) w.resolve(line)
      else waiters.push(w)
    }
  })
  child.stderr.on("data", (chunk: Buffer) => process.stderr.write(`[worker ${args[0]}] ${chunk.toString()}`))
  const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()))
  return {
    child,
    lines,
    next: (prefix, timeoutMs = 120_000) =>
      new Promise((resolve, reject) => {
        const found = lines.find((l) => l.startsWith(prefix))
        if (found !== undefined) return resolve(found)
        const timer = setTimeout(() => reject(new Error(`worker ${args.join(" ")}: no '${prefix}' within ${timeoutMs} ms`)), timeoutMs)
        // a worker that died says nothing more: fail at once
        void exited.then(() => {
          clearTimeout(timer)
          reject(new Error(`worker ${args.join(" ")} exited (${child.exitCode ?? child.signalCode}) before '${prefix}'`))
        })
        waiters.push({ prefix, seen: 0, resolve: (line) => {
          clearTimeout(timer)
          resolve(line)
        } })
      }),
    send: (line) => {
      child.stdin.write(`${line}\n`)
    },
    stop: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM")
      return Promise.race([exited, new Promise<void>((resolve) => setTimeout(() => {
        child.kill("SIGKILL")
        resolve()
      }, 5000))])
    }
  }
}

const run = (args: ReadonlyArray<string>, env: Record<string, string> = {}): string => {
  const result = spawnSync("bash", [script, ...args], { encoding: "utf8", env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "inherit"] })
  if (result.status !== 0) throw new Error(`scripts/rabbitmq.sh ${args.join(" ")} failed (${result.status})`)
  return result.stdout.trim().split("\n").pop() ?? ""
}

/** the benchmark's single node, started if need be */
export const oneNode = (): { readonly name: string; readonly url: string } => {
  const port = process.env["MESH_BENCH_RABBITMQ_PORT"] ?? run(["port", "1"])
  return { name: "one node", url: run(["start"], { MESH_RABBITMQ_PORT: port }) }
}

/** the brokers measured: the benchmark's single node and the cluster, started if need be */
const brokers = (): ReadonlyArray<{ readonly name: string; readonly url: string }> => [
  oneNode(),
  { name: "cluster of 3", url: run(["cluster", "start"]) }
]

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** one measurement of calls/s: `servers` service processes against `clients` client processes, 64 calls in flight each */
export const rpcCell = async (
  broker: { readonly name: string; readonly url: string },
  servers: number,
  clients: number,
  queues: number,
  runId: string,
  timing: { readonly warmupMs: number; readonly durationMs: number }
): Promise<RpcCell> => {
  const services = Array.from({ length: queues }, (_, i) => `scale-${runId}-${queues}q-${i}`)
  // with one queue, every server serves it; sharded, server i serves queue i (and there are as many)
  const serverProcs = Array.from({ length: servers }, (_, i) =>
    startWorker(["server", broker.url, queues === 1 ? services[0] : services[i % queues]]))
  try {
    await Promise.all(serverProcs.map((s) => s.next("ready")))
    const clientProcs = Array.from({ length: clients }, () =>
      startWorker(["client", broker.url, services.join(","), "64", String(timing.warmupMs), String(timing.durationMs)]))
    try {
      await Promise.all(clientProcs.map((c) => c.next("ready")))
      for (const c of clientProcs) c.send("go")
      const results = await Promise.all(clientProcs.map(async (c): Promise<ClientResult> => JSON.parse((await c.next("result ")).slice(7))))
      const callsPerSecond = results.reduce((sum, r) => sum + (r.calls * 1000) / r.elapsedMs, 0)
      const merged = results.flatMap((r) => r.sample).sort((a, b) => a - b)
      return {
        broker: broker.name,
        servers,
        clients,
        queues,
        callsPerSecond: Math.round(callsPerSecond),
        p50Ms: Number(quantile(merged, 0.5).toFixed(1)),
        p99Ms: Number(quantile(merged, 0.99).toFixed(1))
      }
    } finally {
      await Promise.all(clientProcs.map((c) => c.stop()))
    }
  } finally {
    await Promise.all(serverProcs.map((s) => s.stop()))
  }
}

const eventCell = async (
  broker: { readonly name: string; readonly url: string },
  consumers: number,
  events: number,
  runId: string
): Promise<EventCell> => {
  const source = `scale-${runId}-ev${consumers}`
  const subs = Array.from({ length: consumers }, () => startWorker(["subscriber", broker.url, source]))
  try {
    await Promise.all(subs.map((s) => s.next("ready")))
    const publisher = startWorker(["publisher", broker.url, source, String(events), "64"])
    try {
      await publisher.next("ready")
      // the publisher's first event (before `go`) is handled by one of them: wait for it
      const lastCount = (s: Worker) => {
        for (let i = s.lines.length - 1; i >= 0; i--) if (s.lines[i].startsWith("handled ")) return Number(s.lines[i].slice(8))
        return 0
      }
      const handled = () => subs.reduce((sum, s) => sum + lastCount(s), 0)
      while (handled() < 1) await sleep(50)
      const start = performance.now()
      publisher.send("go")
      while (handled() < events + 1) {
        if (performance.now() - start > 300_000) throw new Error(`events: ${handled()} of ${events} handled in 300 s`)
        await sleep(20)
      }
      // the subscribers print their counts every 100 ms: the last came at most that late
      const elapsed = performance.now() - start - 50
      return { broker: broker.name, consumers, events, eventsPerSecond: Math.round((events * 1000) / elapsed) }
    } finally {
      await publisher.stop()
    }
  } finally {
    await Promise.all(subs.map((s) => s.stop()))
  }
}

/** deletes the queues and exchanges a run declared, on the broker it ran on */
const cleanup = (url: string, runId: string) => {
  const cleaner = spawnSync(process.execPath, [join(root, "bench", "scaleCleanup.ts"), url, runId], { stdio: "inherit" })
  if (cleaner.status !== 0) console.error(`cleanup of ${runId} failed (${cleaner.status})`)
}

export const runScale = async (options: ScaleOptions): Promise<void> => {
  const timing = options.quick ? { warmupMs: 300, durationMs: 1000 } : { warmupMs: 500, durationMs: 2000 }
  const events = options.quick ? 2000 : 5000
  const counts = [1, 2, 4]
  const rpc: Array<RpcCell> = []
  const ev: Array<EventCell> = []
  for (const broker of brokers()) {
    const runId = crypto.randomUUID().slice(0, 8)
    try {
      for (const servers of counts) {
        for (const clients of counts) {
          const cell = await rpcCell(broker, servers, clients, 1, runId, timing)
          console.log(`${broker.name}: ${servers} servers, ${clients} clients, 1 queue: ${cell.callsPerSecond} calls/s, p99 ${cell.p99Ms} ms`)
          rpc.push(cell)
        }
      }
      const sharded = await rpcCell(broker, 4, 4, 4, runId, timing)
      console.log(`${broker.name}: 4 servers, 4 clients, 4 queues: ${sharded.callsPerSecond} calls/s, p99 ${sharded.p99Ms} ms`)
      rpc.push(sharded)
      for (const consumers of [1, 2, 3, 4]) {
        const cell = await eventCell(broker, consumers, events, runId)
        console.log(`${broker.name}: events to ${consumers} consumers: ${cell.eventsPerSecond} events/s`)
        ev.push(cell)
      }
    } finally {
      cleanup(broker.url, runId)
    }
  }

  const table = [
    "| broker | service processes | client processes | queues | calls/s | p50 ms | p99 ms |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ...rpc.map((c) => `| ${c.broker} | ${c.servers} | ${c.clients} | ${c.queues} | ${c.callsPerSecond.toLocaleString("en")} | ${c.p50Ms} | ${c.p99Ms} |`),
    "",
    "| broker | consumer processes | events/s |",
    "| --- | ---: | ---: |",
    ...ev.map((c) => `| ${c.broker} | ${c.consumers} | ${c.eventsPerSecond.toLocaleString("en")} |`)
  ].join("\n")
  console.log(`\n${table}\n`)

  const stamp = new Date().toISOString().replace(/[:.]/g, "-")
  const dir = join(root, "bench", "results")
  mkdirSync(dir, { recursive: true })
  const machine = { cpus: cpus().length, model: cpus()[0]?.model ?? "" }
  writeFileSync(join(dir, `${stamp}-scale.json`), JSON.stringify({ machine, timing, rpc, events: ev }, null, 2))
  const label = (c: RpcCell) => c.queues > 1 ? `${c.servers}s×${c.clients}c ${c.queues}q` : `${c.servers}s×${c.clients}c`
  const brokerNames = [...new Set(rpc.map((c) => c.broker))]
  const groups = [...new Set(rpc.map(label))]
  const valueOf = (group: string, broker: string, f: (c: RpcCell) => number) => {
    const cell = rpc.find((c) => label(c) === group && c.broker === broker)
    return cell === undefined ? 0 : f(cell)
  }
  const svg = barChart({
    title: `effect-mesh scaling (${machine.cpus} CPUs, ${timing.durationMs} ms per cell, 64 calls in flight per client)`,
    panels: [
      {
        title: "RPC calls/s (s = service processes, c = client processes, q = queues)",
        groups,
        series: brokerNames.map((b) => ({ name: b, values: groups.map((g) => valueOf(g, b, (c) => c.callsPerSecond)) }))
      },
      {
        title: "RPC p99 latency, ms",
        groups,
        series: brokerNames.map((b) => ({ name: b, values: groups.map((g) => valueOf(g, b, (c) => c.p99Ms)) }))
      },
      {
        title: "events/s, one publisher (64 confirms in flight) to n consumer processes",
        groups: [1, 2, 3, 4].map((n) => `${n} consumer${n > 1 ? "s" : ""}`),
        series: brokerNames.map((b) => ({
          name: b,
          values: [1, 2, 3, 4].map((n) => ev.find((c) => c.broker === b && c.consumers === n)?.eventsPerSecond ?? 0)
        }))
      }
    ]
  })
  writeFileSync(join(dir, `${stamp}-scale.svg`), svg)
  console.log(`wrote bench/results/${stamp}-scale.json and bench/results/${stamp}-scale.svg`)
}
