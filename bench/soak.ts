/**
 * `npm run soak -- [--minutes 10] [--rate <calls/s>] [--warmup-minutes <m>]`: one service process and
 * one client process (bench/scaleWorker.ts) on the benchmark's RabbitMQ node, the client paced at
 * `rate` calls a second (default: half the most recent `--scale` measurement of 1 service and 1 client
 * on one node, from bench/results/). Every 10 s both report their resident memory (RSS); the run
 * writes `bench/results/<time>-soak.json` and a chart, `bench/results/<time>-soak.svg`, and says how
 * much each grew from the first minute after the warm-up (default a fifth of the run, at least a
 * minute) to the last minute (medians of each). It fails (exit code 1) when either grew by 10% or more, or when calls failed.
 */
import { readdirSync, readFileSync, writeFileSync } from "node:fs"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { parseArgs } from "node:util"
import { lineChart } from "./chart.ts"
import { oneNode, startWorker } from "./scale.ts"
import { median } from "./shared.ts"

const root = join(dirname(fileURLToPath(import.meta.url)), "..")
const resultsDir = join(root, "bench", "results")

const { values: flags } = parseArgs({
  options: {
    minutes: { type: "string", default: "10" },
    rate: { type: "string" },
    "warmup-minutes": { type: "string" }
  }
})
const minutes = Number(flags.minutes)
const warmupSeconds = flags["warmup-minutes"] !== undefined
  ? Number(flags["warmup-minutes"]) * 60
  : Math.max(60, (minutes * 60) / 5)

/** half the calls/s of 1 service and 1 client on one node, from the newest scale result */
const measuredHalf = (): number => {
  const files = readdirSync(resultsDir).filter((f) => f.endsWith("-scale.json")).sort()
  const newest = files[files.length - 1]
  if (newest === undefined) throw new Error("no bench/results/*-scale.json: run `npm run bench -- --scale` first, or give --rate")
  const result: { rpc: ReadonlyArray<{ broker: string; servers: number; clients: number; queues: number; callsPerSecond: number }> } =
    JSON.parse(readFileSync(join(resultsDir, newest), "utf8"))
  const cell = result.rpc.find((c) => c.broker === "one node" && c.servers === 1 && c.clients === 1 && c.queues === 1)
  if (cell === undefined) throw new Error(`${newest} has no cell of 1 service and 1 client on one node`)
  return Math.round(cell.callsPerSecond / 2)
}

const rate = flags.rate !== undefined ? Number(flags.rate) : measuredHalf()
const node = oneNode()
const runId = crypto.randomUUID().slice(0, 8)
const service = `soak-${runId}`
console.log(`soak: ${minutes} min at ${rate} calls/s on ${node.name}; RSS every 10 s; warm-up ${warmupSeconds} s`)

const server = startWorker(["server", node.url, service])
await server.next("ready")
const client = startWorker(["client", node.url, service, "32", "0", "0", String(rate)])
await client.next("ready")
client.send("go")

interface Sample {
  readonly second: number
  readonly serverRss: number
  readonly clientRss: number
  readonly callsPerSecond: number
  readonly failed: number
  readonly p99Ms: number
}
const samples: Array<Sample> = []
const start = performance.now()
const rssOf = async (worker: ReturnType<typeof startWorker>) => {
  const before = worker.lines.length
  worker.send("rss")
  for (let i = 0; i < 100; i++) {
    const line = worker.lines.slice(before).find((l) => l.startsWith("rss "))
    if (line !== undefined) return Number(line.slice(4))
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  throw new Error("a worker did not report its RSS")
}
let ticksSeen = 0
while (performance.now() - start < minutes * 60_000) {
  await new Promise((resolve) => setTimeout(resolve, 10_000))
  const ticks = client.lines.filter((l) => l.startsWith("tick ")).slice(ticksSeen).map((l) => JSON.parse(l.slice(5)))
  ticksSeen += ticks.length
  const calls = ticks.reduce((sum: number, t: { calls: number }) => sum + t.calls, 0)
  const failed = ticks.reduce((sum: number, t: { failed: number }) => sum + t.failed, 0)
  const p99 = Math.max(0, ...ticks.map((t: { p99Ms: number }) => Number.isFinite(t.p99Ms) ? t.p99Ms : 0))
  const sample: Sample = {
    second: Math.round((performance.now() - start) / 1000),
    serverRss: await rssOf(server),
    clientRss: await rssOf(client),
    callsPerSecond: Math.round(calls / Math.max(1, ticks.length)),
    failed,
    p99Ms: Number(p99.toFixed(1))
  }
  samples.push(sample)
  console.log(
    `${sample.second} s: server ${(sample.serverRss / 2 ** 20).toFixed(1)} MiB, client ${(sample.clientRss / 2 ** 20).toFixed(1)} MiB, ${sample.callsPerSecond} calls/s, ${failed} failed, p99 ${sample.p99Ms} ms`
  )
}
await client.stop()
await server.stop()

const cleaner = await import("node:child_process").then(({ spawnSync }) =>
  spawnSync(process.execPath, [join(root, "bench", "scaleCleanup.ts"), node.url, runId], { stdio: "inherit" }))
if (cleaner.status !== 0) console.error("cleanup failed")

/**
 * growth from the first minute after the warm-up to the last minute, each its median: RSS rises and
 * falls with the garbage collector's cycles (tens of MiB here), and a median of six samples follows
 * the trend, not where one sample fell in a cycle
 */
const growth = (pick: (s: Sample) => number) => {
  const after = samples.filter((s) => s.second >= warmupSeconds)
  if (after.length < 12) return Number.NaN
  const base = median(after.slice(0, 6).map(pick))
  return (median(after.slice(-6).map(pick)) - base) / base
}
/** the highest RSS of the second half after the warm-up against that of the first half: a leak raises it */
const peakGrowth = (pick: (s: Sample) => number) => {
  const after = samples.filter((s) => s.second >= warmupSeconds)
  const half = Math.floor(after.length / 2)
  if (half < 1) return Number.NaN
  const first = Math.max(...after.slice(0, half).map(pick))
  return (Math.max(...after.slice(half).map(pick)) - first) / first
}
const serverGrowth = growth((s) => s.serverRss)
const clientGrowth = growth((s) => s.clientRss)
const failed = samples.reduce((sum, s) => sum + s.failed, 0)
const summary = {
  minutes,
  rate,
  warmupSeconds,
  serverGrowthPercent: Number((serverGrowth * 100).toFixed(1)),
  clientGrowthPercent: Number((clientGrowth * 100).toFixed(1)),
  serverPeakGrowthPercent: Number((peakGrowth((s) => s.serverRss) * 100).toFixed(1)),
  clientPeakGrowthPercent: Number((peakGrowth((s) => s.clientRss) * 100).toFixed(1)),
  failed,
  meanCallsPerSecond: Math.round(samples.reduce((sum, s) => sum + s.callsPerSecond, 0) / Math.max(1, samples.length))
}
console.log(JSON.stringify(summary))

const stamp = new Date().toISOString().replace(/[:.]/g, "-")
writeFileSync(join(resultsDir, `${stamp}-soak.json`), JSON.stringify({ summary, samples }, null, 2))
writeFileSync(
  join(resultsDir, `${stamp}-soak.svg`),
  lineChart({
    title: `effect-mesh soak: ${minutes} min at ${rate} calls/s; RSS growth after ${warmupSeconds} s: server ${summary.serverGrowthPercent}%, client ${summary.clientGrowthPercent}%`,
    xLabel: "seconds",
    yLabel: "RSS, MiB",
    series: [
      { name: "server RSS", points: samples.map((s) => [s.second, s.serverRss / 2 ** 20] as const) },
      { name: "client RSS", points: samples.map((s) => [s.second, s.clientRss / 2 ** 20] as const) }
    ]
  })
)
console.log(`wrote bench/results/${stamp}-soak.json and bench/results/${stamp}-soak.svg`)
process.exit(Math.abs(serverGrowth) < 0.1 && Math.abs(clientGrowth) < 0.1 && failed === 0 ? 0 : 1)
