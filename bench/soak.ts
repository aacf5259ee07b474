/**
 * `npm run soak -- [--minutes 10] [--rate <calls/s>] [--warmup-minutes <m>] [--snapshots]`: one service
 * process and one client process (bench/scaleWorker.ts) on the benchmark's RabbitMQ node
 * (`MESH_BENCH_RABBITMQ_PORT` names another, as for `npm run bench`), the client paced at `rate` calls a
 * second. Without `--rate`, the soak first measures the maximum itself (one service and one client, 64
 * calls in flight, as `--scale` does) and runs at half of it: the machine's maximum at the time, not
 * that of an earlier run.
 *
 * Both processes run with `--expose-gc`. Every 10 s each reports its resident memory (RSS, read as it
 * stands), then collects its garbage in full and reports the JavaScript heap left (`heapUsed` after a
 * full GC: what the process holds on to, where a leak of objects shows; RSS also moves with how much
 * heap V8 keeps reserved and with the native allocator, neither of which is a leak of the process's own
 * objects). The run writes `bench/results/<time>-soak.json` and a chart of both,
 * `bench/results/<time>-soak.svg`, and says how much each grew from the first minute after the warm-up
 * to the last minute (medians of each minute's six samples). It fails (exit code 1) when either
 * process's RSS or heap after GC grew by 10% or more, when calls failed, or when the run was too short
 * to say (under two minutes after the warm-up).
 *
 * The warm-up lasts `--warmup-minutes` (default 2, whatever the run's length: a longer one would hide
 * early growth), and longer when a process's heap after GC still steps down after it (by 1 MiB or more
 * from one sample to the next; it otherwise moves by 0.2 MiB at most), up to the last such step. In the
 * runs measured, V8 sized its heap to the load within 30 s, and the client's heap after GC fell in one
 * or two steps by 6 MiB in all (V8 letting go of what only the start ran), between 50 s and four minutes
 * in, later at lower rates: left in the measure, a step down would offset as much growth, while the
 * warm-up it extends only lowers the base growth is measured from.
 *
 * With `--snapshots`, both processes also write heap snapshots (bench/results/) after `--warmup-minutes`
 * and at the end of the run, to compare object counts by constructor; writing one costs a
 * process tens of MiB of RSS, so the figures of such a run are not the soak's.
 */
import { spawnSync } from "node:child_process"
import { mkdirSync, writeFileSync } from "node:fs"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { parseArgs } from "node:util"
import { lineChart } from "./chart.ts"
import { oneNode, rpcCell, startWorker } from "./scale.ts"
import type { Worker } from "./scale.ts"
import { median } from "./shared.ts"

const root = join(dirname(fileURLToPath(import.meta.url)), "..")
const resultsDir = join(root, "bench", "results")
mkdirSync(resultsDir, { recursive: true })

const { values: flags } = parseArgs({
  options: {
    minutes: { type: "string", default: "10" },
    rate: { type: "string" },
    "warmup-minutes": { type: "string" },
    snapshots: { type: "boolean", default: false }
  }
})
const minutes = Number(flags.minutes)
/** the least warm-up; it lasts longer when the heap after GC still steps down (see `warmupSeconds`) */
const leastWarmupSeconds = Number(flags["warmup-minutes"] ?? "2") * 60
const node = oneNode()
const runId = crypto.randomUUID().slice(0, 8)
const service = `soak-${runId}`
const stamp = new Date().toISOString().replace(/[:.]/g, "-")

/** the maximum now: one service and one client on the node, as `--scale` measures it (a longer run) */
const measuredMaximum = async (): Promise<number> => {
  const cell = await rpcCell(node, 1, 1, 1, runId, { warmupMs: 3000, durationMs: 15_000 })
  console.log(`soak: the maximum now, 1 service and 1 client at 64 in flight: ${cell.callsPerSecond} calls/s (p99 ${cell.p99Ms} ms)`)
  return cell.callsPerSecond
}

const maximum = flags.rate !== undefined ? undefined : await measuredMaximum()
const rate = flags.rate !== undefined ? Number(flags.rate) : Math.round((maximum ?? 0) / 2)
console.log(`soak: ${minutes} min at ${rate} calls/s on ${node.name}; memory every 10 s; warm-up at least ${leastWarmupSeconds} s`)

const server = startWorker(["server", node.url, service], ["--expose-gc"])
await server.next("ready")
const client = startWorker(["client", node.url, service, "32", "0", "0", String(rate)], ["--expose-gc"])
await client.next("ready")
client.send("go")

interface Memory {
  readonly rss: number
  readonly heapUsed: number
  readonly heapTotal: number
  readonly external: number
  readonly collected: boolean
}
interface Sample {
  readonly second: number
  readonly server: Memory
  readonly client: Memory
  readonly callsPerSecond: number
  readonly failed: number
  readonly p99Ms: number
}
const samples: Array<Sample> = []
const start = performance.now()
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** sends `command` and waits for the worker's first line after it that starts with `prefix` */
const ask = async (worker: Worker, command: string, prefix: string): Promise<string> => {
  const before = worker.lines.length
  worker.send(command)
  for (let i = 0; i < 1200; i++) {
    const line = worker.lines.slice(before).find((l) => l.startsWith(prefix))
    if (line !== undefined) return line.slice(prefix.length)
    await sleep(50)
  }
  throw new Error(`a worker did not answer '${command}'`)
}
const memoryOf = async (worker: Worker): Promise<Memory> => JSON.parse(await ask(worker, "memory", "memory "))
const snapshot = async (when: string) => {
  for (const [name, worker] of [["server", server], ["client", client]] as const) {
    const file = join(resultsDir, `${stamp}-soak-${name}-${when}.heapsnapshot`)
    await ask(worker, `snapshot ${file}`, "snapshot ")
    console.log(`wrote bench/results/${stamp}-soak-${name}-${when}.heapsnapshot`)
  }
}

const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(1)
let ticksSeen = 0
let warmupSnapshot = false
while (performance.now() - start < minutes * 60_000) {
  await sleep(10_000)
  const ticks = client.lines.filter((l) => l.startsWith("tick ")).slice(ticksSeen).map((l) => JSON.parse(l.slice(5)))
  ticksSeen += ticks.length
  const calls = ticks.reduce((sum: number, t: { calls: number }) => sum + t.calls, 0)
  const failed = ticks.reduce((sum: number, t: { failed: number }) => sum + t.failed, 0)
  const p99 = Math.max(0, ...ticks.map((t: { p99Ms: number }) => Number.isFinite(t.p99Ms) ? t.p99Ms : 0))
  const sample: Sample = {
    second: Math.round((performance.now() - start) / 1000),
    server: await memoryOf(server),
    client: await memoryOf(client),
    callsPerSecond: Math.round(calls / Math.max(1, ticks.length)),
    failed,
    p99Ms: Number(p99.toFixed(1))
  }
  if (!sample.server.collected || !sample.client.collected) throw new Error("a worker runs without --expose-gc")
  samples.push(sample)
  console.log(
    `${sample.second} s: server RSS ${mib(sample.server.rss)} MiB, heap ${mib(sample.server.heapUsed)}/${mib(sample.server.heapTotal)}; ` +
      `client RSS ${mib(sample.client.rss)} MiB, heap ${mib(sample.client.heapUsed)}/${mib(sample.client.heapTotal)}; ` +
      `${sample.callsPerSecond} calls/s, ${failed} failed, p99 ${sample.p99Ms} ms`
  )
  if (flags.snapshots && !warmupSnapshot && sample.second >= leastWarmupSeconds) {
    warmupSnapshot = true
    await snapshot("warm")
  }
}
if (flags.snapshots) await snapshot("end")
await client.stop()
await server.stop()

const cleaner = spawnSync(process.execPath, [join(root, "bench", "scaleCleanup.ts"), node.url, runId], { stdio: "inherit" })
if (cleaner.status !== 0) console.error("cleanup failed")

/** the warm-up: at least `leastWarmupSeconds`, and up to the last step down of a heap after GC (see above) */
const stepDown = 2 ** 20
const lastStepDown = samples.reduce((last, s, i) => {
  const before = samples[i - 1]
  return before !== undefined &&
      (before.server.heapUsed - s.server.heapUsed >= stepDown || before.client.heapUsed - s.client.heapUsed >= stepDown)
    ? s.second
    : last
}, 0)
const warmupSeconds = Math.max(leastWarmupSeconds, lastStepDown)
if (samples.filter((s) => s.second >= warmupSeconds).length < 12) {
  console.log(
    warmupSeconds > leastWarmupSeconds
      ? `a heap after GC stepped down at ${lastStepDown} s: too late to measure growth after it`
      : "the run is too short to measure growth after the warm-up"
  )
}

/**
 * growth from the first minute after the warm-up to the last minute, each its median: RSS rises and
 * falls with the garbage collector's cycles, and a median of six samples follows the trend, not where
 * one sample fell in a cycle
 */
const growth = (pick: (s: Sample) => number) => {
  const after = samples.filter((s) => s.second >= warmupSeconds)
  if (after.length < 12) return Number.NaN
  const base = median(after.slice(0, 6).map(pick))
  return (median(after.slice(-6).map(pick)) - base) / base
}
const percent = (fraction: number) => Number((fraction * 100).toFixed(1))
const range = (pick: (s: Sample) => number) => {
  const after = samples.filter((s) => s.second >= warmupSeconds).map(pick)
  return after.length === 0 ? [] : [Number(mib(Math.min(...after))), Number(mib(Math.max(...after)))]
}
const growths = {
  serverRss: growth((s) => s.server.rss),
  serverHeap: growth((s) => s.server.heapUsed),
  clientRss: growth((s) => s.client.rss),
  clientHeap: growth((s) => s.client.heapUsed)
}
const failed = samples.reduce((sum, s) => sum + s.failed, 0)
const summary = {
  minutes,
  maximumCallsPerSecond: maximum,
  rate,
  warmupSeconds,
  meanCallsPerSecond: Math.round(samples.reduce((sum, s) => sum + s.callsPerSecond, 0) / Math.max(1, samples.length)),
  failed,
  serverRssGrowthPercent: percent(growths.serverRss),
  serverHeapGrowthPercent: percent(growths.serverHeap),
  clientRssGrowthPercent: percent(growths.clientRss),
  clientHeapGrowthPercent: percent(growths.clientHeap),
  afterWarmupMiB: {
    serverRss: range((s) => s.server.rss),
    serverHeap: range((s) => s.server.heapUsed),
    clientRss: range((s) => s.client.rss),
    clientHeap: range((s) => s.client.heapUsed)
  }
}
console.log(JSON.stringify(summary))

writeFileSync(join(resultsDir, `${stamp}-soak.json`), JSON.stringify({ summary, samples }, null, 2))
const series = (name: string, pick: (s: Sample) => number) => ({
  name,
  points: samples.map((s) => [s.second, pick(s) / 2 ** 20] as const)
})
writeFileSync(
  join(resultsDir, `${stamp}-soak.svg`),
  lineChart({
    // growth after the warm-up, RSS / heap after GC
    title: `soak, ${minutes} min at ${rate}/s; growth RSS / heap: ` +
      `server ${summary.serverRssGrowthPercent}% / ${summary.serverHeapGrowthPercent}%, ` +
      `client ${summary.clientRssGrowthPercent}% / ${summary.clientHeapGrowthPercent}%`,
    xLabel: "seconds",
    yLabel: "MiB",
    series: [
      series("server RSS", (s) => s.server.rss),
      series("client RSS", (s) => s.client.rss),
      series("server heap after GC", (s) => s.server.heapUsed),
      series("client heap after GC", (s) => s.client.heapUsed)
    ]
  })
)
console.log(`wrote bench/results/${stamp}-soak.json and bench/results/${stamp}-soak.svg`)
// the bar is growth: memory given back is no leak (a figure missing, for a run too short, fails)
const grewTooMuch = Object.values(growths).some((g) => !(g < 0.1))
process.exit(!grewTooMuch && failed === 0 ? 0 : 1)
