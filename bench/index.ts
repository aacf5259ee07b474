/**
 * `npm run bench [-- --quick] [-- --rounds 5] [-- --only rpc,events] [-- --cpu-prof]`
 * `npm run bench -- --scale [--quick]`: throughput with 1, 2 and 4 processes a side, on one node and on
 * a three-node cluster (bench/scale.ts)
 *
 * effect-mesh against hand-written amqplib on a real RabbitMQ, server and client in separate
 * processes, plus the embedded broker in one process. Every scenario runs once per round for every
 * peer, peers interleaved (their order alternates between rounds); the table shows medians over the
 * rounds and, for ratios, the median of the per-round ratios (both peers of a round ran back to back,
 * so a noisy neighbour hurts them alike). The JSON with every measurement goes to bench/results/.
 *
 * Peers: `raw` (amqplib on a quorum queue as the mesh declares one), `raw-classic` (on a classic
 * queue), `raw-headers` (raw with the mesh's request headers), `ours` (effect-mesh on a quorum queue)
 * and `ours-classic` (on a classic one); for events, `raw`, `raw-events-classic`, `ours` and
 * `ours-classic` alike. Each effect-mesh peer is compared with raw on its own queue type (column
 * `vs`), and a "targets" block after the table says which of the goals (`targets` below) the run met.
 *
 * `--timeout "10 seconds"` gives effect-mesh's client that timeout, so every call has a deadline.
 * `--compare <checkout>` adds a peer `ours@base` that runs effect-mesh from another checkout (a git
 * worktree of an older commit, say), measured in the same rounds: the way to see what a change bought.
 *
 * Observability (`rpc1-observed`, `rpc64-observed`): `ours` and `ours-classic` beside the same with
 * what a production user turns on (`ours-observed`, `ours-classic-observed`: effect's OTLP exporters,
 * default intervals, posting to a receiver in this process that answers 200 and counts what it gets,
 * and a Prometheus scrape of the process's metrics every second), in the same rounds; their ratio is
 * observed over plain, and column `spans/call` is what the receiver got (client and server) per call.
 *
 * Wire formats (`echo10k-json`, `echo10k-msgpack`, `echo1m-json`, `echo1m-msgpack`): echo 10 KB and
 * 1 MB with requests and replies in JSON and in MessagePack, raw (msgpackr) and the mesh alike.
 *
 * `--only rpc1,rpc64,events` runs the cells whose ids start so (`rpc64` takes `rpc64-observed` too);
 * `--rounds` is at least 3.
 *
 * RabbitMQ: `AMQP_URL` when set, else a private node of the benchmark's own (the checkout's base port + 1)
 * (`MESH_BENCH_RABBITMQ_PORT`; started with `scripts/rabbitmq.sh start` and left running). While it
 * runs, the benchmark holds a lease on that node as a test run does. Every run deletes what it
 * declared, so the node stays as clean as a fresh one.
 */
import { spawn, spawnSync } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import { cpus, loadavg } from "node:os"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { parseArgs } from "node:util"
import type { Command, EmbeddedMeasure, Format, Impl, ObservedStats, PublishMeasure, Reply, Request, RpcMeasure, RpcRun } from "./shared.ts"
import { baseRunId, median } from "./shared.ts"

const root = join(dirname(fileURLToPath(import.meta.url)), "..")

const { values: flags } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    rounds: { type: "string" },
    only: { type: "string" },
    peers: { type: "string" },
    compare: { type: "string" },
    timeout: { type: "string" },
    "cpu-prof": { type: "boolean", default: false },
    scale: { type: "boolean", default: false }
  }
})
if (flags.scale === true) {
  // how throughput grows with processes, on one node and on a cluster: bench/scale.ts
  const { runScale } = await import("./scale.ts")
  await runScale({ quick: flags.quick === true })
  process.exit(0)
}
const quick = flags.quick === true
const rounds = Math.max(3, Number(flags.rounds ?? (quick ? 3 : 5)))
const list = (flag: string | undefined) => flag?.split(",").map((s) => s.trim()).filter((s) => s !== "")
const only = list(flags.only)
/** for profiling one peer: `--peers ours` (ratios need the baseline too) */
const onlyPeers = list(flags.peers)
const settings = quick
  ? { warmupMs: 300, durationMs: 700, payloadMs: 600, events: 2_000, eventsWarmup: 500 }
  : { warmupMs: 1_000, durationMs: 3_000, payloadMs: 2_000, events: 20_000, eventsWarmup: 3_000 }
const eventsInFlight = 64

// ---- the broker ----

// a node of its own (not the tests'; the checkout's base port + 1, `scripts/rabbitmq.sh port 1`): the
// tests leave thousands of idle queues on theirs, and a node busy with them measured every peer ~25%
// slower and the ratios far noisier
const port = process.env["MESH_BENCH_RABBITMQ_PORT"] ??
  spawnSync("bash", [join(root, "scripts", "rabbitmq.sh"), "port", "1"], { encoding: "utf8" }).stdout.trim()
const leaseFile = join(process.env["MESH_RABBITMQ_DIR"] ?? join(root, ".rabbitmq"), port, "leases", String(process.pid))

const brokerUrl = (): string => {
  const given = process.env["AMQP_URL"]
  if (given !== undefined && given !== "") return given
  const started = spawnSync("bash", [join(root, "scripts", "rabbitmq.sh"), "start"], {
    env: { ...process.env, MESH_RABBITMQ_PORT: port, MESH_RABBITMQ_FRESH: "1" },
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"]
  })
  if (started.status !== 0) throw new Error(`scripts/rabbitmq.sh start failed (${started.status})`)
  mkdirSync(dirname(leaseFile), { recursive: true })
  writeFileSync(leaseFile, "")
  return started.stdout.trim().split("\n").pop() ?? ""
}

/**
 * CPU time of the private RabbitMQ node, in µs, from /proc (Linux): the broker's share of a call.
 * The node is shared with whoever else uses it meanwhile, so this is an upper bound. `undefined`
 * when the broker is not the private node (AMQP_URL set) or /proc is not there.
 */
const brokerCpu = (): number | undefined => {
  if (process.env["AMQP_URL"] !== undefined && process.env["AMQP_URL"] !== "") return undefined
  const pidFile = join(dirname(dirname(leaseFile)), "rabbitmq.pid")
  if (!existsSync(pidFile)) return undefined
  const stat = join("/proc", readFileSync(pidFile, "utf8").trim(), "stat")
  if (!existsSync(stat)) return undefined
  // the fields after the command name (which may hold spaces): utime and stime are the 12th and 13th
  const fields = readFileSync(stat, "utf8").split(") ")[1]?.split(" ") ?? []
  const ticks = Number(fields[11]) + Number(fields[12])
  return Number.isFinite(ticks) ? ticks * 10_000 : undefined
}

/**
 * Waits (at most 10 s) until the RabbitMQ node is nearly idle (under 10% of a core over 250 ms): the
 * embedded scenario runs in one process without the node, and on 2 cores a node still writing what
 * the previous scenario left (quorum queue logs, deletions) takes one of them. `false` when it did not
 * settle in time.
 */
const settleBroker = async (): Promise<boolean> => {
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
  for (let waited = 0; waited < 10_000; waited += 250) {
    const before = brokerCpu()
    if (before === undefined) return true
    await sleep(250)
    const after = brokerCpu()
    if (after === undefined || after - before < 25_000) return true
  }
  return false
}

// ---- the OTLP receiver ----

/** what the receiver got from one process (`<family>/<role>`, the path its exporters post under) */
interface Received {
  spans: number
  /** POSTs to /v1/traces, /v1/metrics, /v1/logs */
  traces: number
  metrics: number
  logs: number
  bytes: number
}

interface Receiver {
  /** the base URL of one process's exporters: `<receiver>/<family>/<role>` */
  readonly baseUrl: (family: string, role: "client" | "server") => string
  readonly received: (family: string, role: "client" | "server") => Received
  readonly close: () => Promise<void>
}

const spanMarker = Buffer.from(`"startTimeUnixNano"`)

/** spans in an OTLP/JSON traces body: each has one `startTimeUnixNano` (its events and links have none) */
const countSpans = (body: Buffer): number => {
  let count = 0
  for (let at = body.indexOf(spanMarker); at >= 0; at = body.indexOf(spanMarker, at + spanMarker.length)) count++
  return count
}

/**
 * A tiny OTLP/HTTP receiver, as a collector would be to the exporters (in this process, which idles
 * while the peers are measured): it accepts POSTs to `<prefix>/v1/traces`, `/v1/metrics`, `/v1/logs`,
 * answers 200 with an empty JSON response, and counts the spans, without decoding the rest.
 */
const startReceiver = (): Promise<Receiver> =>
  new Promise((resolve, reject) => {
    const counts = new Map<string, Received>()
    const of = (key: string): Received => {
      let r = counts.get(key)
      if (r === undefined) counts.set(key, r = { spans: 0, traces: 0, metrics: 0, logs: 0, bytes: 0 })
      return r
    }
    const server = createServer((request, response) => {
      const chunks: Array<Buffer> = []
      request.on("data", (chunk: Buffer) => chunks.push(chunk))
      request.on("end", () => {
        const match = /^\/(.+)\/v1\/(traces|metrics|logs)$/.exec(request.url ?? "")
        if (request.method !== "POST" || match === null) {
          response.writeHead(404).end()
          return
        }
        const body = Buffer.concat(chunks)
        const r = of(match[1])
        r.bytes += body.length
        if (match[2] === "traces") {
          r.traces++
          r.spans += countSpans(body)
        } else if (match[2] === "metrics") r.metrics++
        else r.logs++
        response.writeHead(200, { "content-type": "application/json" }).end("{}")
      })
    })
    server.on("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as AddressInfo
      resolve({
        baseUrl: (family, role) => `http://127.0.0.1:${port}/${family}/${role}`,
        received: (family, role) => ({ ...of(`${family}/${role}`) }),
        close: () =>
          new Promise((resolve) => {
            server.closeAllConnections()
            server.close(() => resolve())
          })
      })
    })
  })

// ---- child processes ----

interface Peer {
  readonly name: string
  readonly call: <A>(command: Command) => Promise<A>
  readonly exit: () => Promise<void>
}

const stamp = new Date().toISOString().replace(/[:.]/g, "-")
const profileDir = join(root, "bench", "results", "profiles", stamp)

const startPeer = (args: ReadonlyArray<string>, checkout = root): Promise<Peer> =>
  new Promise((resolve, reject) => {
    const name = `${args.slice(0, 2).join("-")}${checkout === root ? "" : "-base"}`
    const execArgv = flags["cpu-prof"] === true
      ? ["--cpu-prof", `--cpu-prof-dir=${profileDir}`, `--cpu-prof-name=${name}.cpuprofile`]
      : []
    const child: ChildProcess = spawn(process.execPath, [...execArgv, join(checkout, "bench", "peer.ts"), ...args], {
      stdio: ["ignore", "inherit", "inherit", "ipc"],
      env: flags.timeout === undefined ? process.env : { ...process.env, BENCH_CALL_TIMEOUT: flags.timeout }
    })
    const waiting = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void }>()
    let nextId = 0
    let exited: (() => void) | undefined
    child.on("exit", (code) => {
      exited?.()
      const error = new Error(`${name} exited (${code})`)
      for (const w of waiting.values()) w.reject(error)
      reject(error)
    })
    child.on("message", (reply: Reply) => {
      if (reply._tag === "Ready") {
        resolve({
          name,
          call: <A>(command: Command) =>
            new Promise<A>((resolve, reject) => {
              const id = nextId++
              waiting.set(id, { resolve: (value) => resolve(value as A), reject })
              child.send({ id, command } satisfies Request)
            }),
          exit: () =>
            new Promise((resolve) => {
              if (child.exitCode !== null) return resolve()
              exited = resolve
              child.send({ id: -1, command: { _tag: "Exit" } } satisfies Request)
            })
        })
        return
      }
      const w = waiting.get(reply.id)
      if (w === undefined) return
      waiting.delete(reply.id)
      if (reply._tag === "Done") w.resolve(reply.value)
      else w.reject(new Error(`${name}: ${reply.error}`))
    })
  })

// ---- scenarios ----

interface Sample {
  /** calls (or events) per second */
  readonly rate: number
  readonly p50Ms?: number | undefined
  readonly p99Ms?: number | undefined
  readonly clientCpuMicros: number
  readonly serverCpuMicros?: number | undefined
  /** the RabbitMQ node's CPU per call, where it can be read */
  readonly brokerCpuMicros?: number | undefined
  /** an observed peer's: spans the receiver got from its client and server while it measured, per call */
  readonly spansPerCall?: number | undefined
  /** the receiver's CPU (this process's) per call while an observed peer measured: not in total */
  readonly receiverCpuMicros?: number | undefined
  readonly count: number
}

interface Cell {
  readonly id: string
  readonly title: string
  /** in the order they run: each peer next to its baseline, so that both see the same neighbours */
  readonly impls: ReadonlyArray<string>
  /** the peer each peer's ratios are to; a peer without one is a baseline only */
  readonly baselines: Readonly<Record<string, string>>
  readonly measure: (impl: string) => Promise<Sample>
}

/** effect-mesh against raw amqplib on the same queue type; raw's variants against plain raw */
const rpcBaselines = { ours: "raw", "ours-classic": "raw-classic", "raw-classic": "raw", "raw-headers": "raw", "ours@base": "raw" }
const eventBaselines = { ours: "raw", "ours-classic": "raw-events-classic", "raw-events-classic": "raw", "ours@base": "raw" }
/** observed over plain, on the same queue type */
const observedBaselines = { "ours-observed": "ours", "ours-classic-observed": "ours-classic" }
/** the families of the observed cells' peers */
const observedFamilies = ["ours-observed", "ours-classic-observed"] as const

/**
 * A goal of the run (issue 15, and the earlier ones still held). `rate`: calls/s over the baseline's
 * (median of the per-round ratios, as in the table) at least `bound`; `cpu`: client + server CPU per
 * call over the baseline's (likewise) at most `bound`; `calls`: the median calls/s at least `bound`.
 */
interface Target {
  readonly cell: string
  readonly impl: string
  readonly kind: "rate" | "cpu" | "calls"
  readonly bound: number
}

const targets: ReadonlyArray<Target> = [
  // issue 15
  { cell: "rpc1", impl: "ours-classic", kind: "rate", bound: 0.9 },
  { cell: "rpc64", impl: "ours-classic", kind: "rate", bound: 0.9 },
  { cell: "rpc64", impl: "ours", kind: "rate", bound: 0.95 },
  { cell: "events", impl: "ours-classic", kind: "rate", bound: 0.9 },
  { cell: "rpc64", impl: "ours", kind: "cpu", bound: 1.25 },
  { cell: "rpc64", impl: "ours-classic", kind: "cpu", bound: 1.25 },
  { cell: "embedded64", impl: "mesh", kind: "calls", bound: 300_000 },
  // issue "see the mesh in production": exporting costs RPC at 64 in flight at most 5%
  { cell: "rpc64-observed", impl: "ours-observed", kind: "rate", bound: 0.95 },
  { cell: "rpc64-observed", impl: "ours-classic-observed", kind: "rate", bound: 0.95 },
  // the table's earlier ones (its rpc64 one, 0.8x, is above now)
  { cell: "rpc1", impl: "ours", kind: "rate", bound: 0.9 },
  { cell: "events", impl: "ours", kind: "rate", bound: 0.8 }
]

const cpuDelta = (a: NodeJS.CpuUsage, b: NodeJS.CpuUsage): number => b.user - a.user + b.system - a.system

const main = async () => {
  const runId = Math.random().toString(36).slice(2, 8)
  const wants = (id: string) => only === undefined || only.some((prefix) => id.startsWith(prefix))
  const peers: Array<Peer> = []
  const start = async (args: ReadonlyArray<string>, checkout?: string) => {
    const peer = await startPeer(args, checkout)
    peers.push(peer)
    return peer
  }
  const servers: Partial<Record<string, Peer>> = {}
  const clients: Partial<Record<string, Peer>> = {}
  let embedded: Peer | undefined
  /** the processes a peer runs in: one raw pair serves every raw peer, each effect-mesh peer has its own */
  const familyOf = (impl: string) =>
    impl === "ours" || impl === "ours-classic" || impl === "ours@base" || impl === "ours-observed" || impl === "ours-classic-observed" ? impl : "raw"
  /** what the peer's processes are told to run: the base checkout runs its own `ours`, an observed one its plain one's */
  const implOf = (impl: string): Impl =>
    (impl === "ours@base" || impl === "ours-observed" ? "ours" : impl === "ours-classic-observed" ? "ours-classic" : impl) as Impl
  let receiver: Receiver | undefined
  /** the spans the receiver has from an observed family's client and server; `undefined` for the others */
  const spansOf = (impl: string): number | undefined => {
    const family = familyOf(impl)
    if (receiver === undefined || !observedFamilies.some((f) => f === family)) return undefined
    return receiver.received(family, "client").spans + receiver.received(family, "server").spans
  }

  const rpcCell = (id: string, title: string, method: "add" | "echo", size: number, inFlight: number, impls: ReadonlyArray<string>, durationMs: number, baselines: Readonly<Record<string, string>> = rpcBaselines, format: Format = "json"): Cell => ({
    id,
    title,
    impls,
    baselines,
    measure: async (impl) => {
      const client = clients[familyOf(impl)]!
      const server = servers[familyOf(impl)]!
      const run: RpcRun = { impl: implOf(impl), method, size, format, inFlight, warmupMs: settings.warmupMs, durationMs }
      await client.call({ _tag: "RpcWarmup", run })
      const before = await server.call<NodeJS.CpuUsage>({ _tag: "Cpu" })
      const broker = brokerCpu()
      const spans = spansOf(impl)
      const mine = process.cpuUsage()
      const m = await client.call<RpcMeasure>({ _tag: "RpcMeasure", run })
      const mineUsed = process.cpuUsage(mine)
      const spansAfter = spansOf(impl)
      const brokerAfter = brokerCpu()
      const after = await server.call<NodeJS.CpuUsage>({ _tag: "Cpu" })
      return {
        rate: m.calls / m.elapsedMs * 1000,
        p50Ms: m.p50Ms,
        p99Ms: m.p99Ms,
        clientCpuMicros: m.cpuMicros / m.calls,
        serverCpuMicros: cpuDelta(before, after) / m.calls,
        brokerCpuMicros: broker === undefined || brokerAfter === undefined ? undefined : (brokerAfter - broker) / m.calls,
        ...(spans === undefined || spansAfter === undefined
          ? {}
          : { spansPerCall: (spansAfter - spans) / m.calls, receiverCpuMicros: (mineUsed.user + mineUsed.system) / m.calls }),
        count: m.calls
      }
    }
  })

  const publish = async (impl: string, count: number) => {
    const client = clients[familyOf(impl)]!
    const server = servers[familyOf(impl)]!
    const before = await server.call<NodeJS.CpuUsage>({ _tag: "ExpectEvents", impl: implOf(impl), count })
    const broker = brokerCpu()
    const t0 = performance.now()
    const published = await client.call<PublishMeasure>({
      _tag: "Publish",
      run: { impl: implOf(impl), count, inFlight: eventsInFlight }
    })
    const after = await server.call<NodeJS.CpuUsage>({ _tag: "AwaitEvents" })
    const elapsedMs = performance.now() - t0
    const brokerAfter = brokerCpu()
    const brokerUsed = broker === undefined || brokerAfter === undefined ? undefined : brokerAfter - broker
    return { published, elapsedMs, serverCpu: cpuDelta(before, after), brokerCpu: brokerUsed }
  }

  const embeddedCell = (inFlight: number): Cell => ({
    id: `embedded${inFlight}`,
    title: `embedded broker, add, ${inFlight} in flight (one process)`,
    impls: ["direct", "rpctest", "mesh"],
    baselines: { rpctest: "direct", mesh: "direct" },
    measure: async (impl) => {
      if (!(await settleBroker())) console.error("the RabbitMQ node was still busy after 10 s; measuring anyway")
      const m = await embedded!.call<EmbeddedMeasure>({
        _tag: "Embedded",
        run: { target: impl as "mesh" | "rpctest" | "direct", inFlight, warmupMs: settings.warmupMs, durationMs: settings.durationMs }
      })
      return {
        rate: m.calls / m.elapsedMs * 1000,
        p50Ms: m.p50Ms,
        p99Ms: m.p99Ms,
        clientCpuMicros: m.cpuMicros / m.calls,
        count: m.calls
      }
    }
  })

  const withBase = (impls: ReadonlyArray<string>) => flags.compare === undefined ? impls : [...impls, "ours@base"]
  const rpcImpls = withBase(["raw", "ours", "raw-classic", "ours-classic", "raw-headers"])
  const payloadImpls = withBase(["raw", "ours", "raw-classic", "ours-classic"])
  const observedImpls = ["ours", "ours-observed", "ours-classic", "ours-classic-observed"]
  const cells: Array<Cell> = [
    rpcCell("rpc1", "RPC add, 1 in flight", "add", 0, 1, rpcImpls, settings.durationMs),
    rpcCell("rpc64", "RPC add, 64 in flight", "add", 0, 64, rpcImpls, settings.durationMs),
    rpcCell("rpc1-observed", "RPC add, 1 in flight, plain and with OTLP export + Prometheus scrape", "add", 0, 1, observedImpls, settings.durationMs, observedBaselines),
    rpcCell("rpc64-observed", "RPC add, 64 in flight, plain and with OTLP export + Prometheus scrape", "add", 0, 64, observedImpls, settings.durationMs, observedBaselines),
    rpcCell("payload-100B", "RPC echo 100 B, 1 in flight", "echo", 100, 1, payloadImpls, settings.payloadMs),
    rpcCell("payload-10KB", "RPC echo 10 KB, 1 in flight", "echo", 10_000, 1, payloadImpls, settings.payloadMs),
    rpcCell("payload-1MB", "RPC echo 1 MB, 1 in flight", "echo", 1_000_000, 1, payloadImpls, settings.payloadMs),
    // wire formats: the same echo written in JSON and in MessagePack, raw and the mesh alike
    ...(["json", "msgpack"] as const).flatMap((format) => [
      rpcCell(`echo10k-${format}`, `RPC echo 10 KB in ${format}, 1 in flight`, "echo", 10_000, 1, payloadImpls, settings.payloadMs, rpcBaselines, format),
      rpcCell(`echo1m-${format}`, `RPC echo 1 MB in ${format}, 1 in flight`, "echo", 1_000_000, 1, payloadImpls, settings.payloadMs, rpcBaselines, format)
    ]),
    {
      id: "events",
      title: `events publish → handled, ${eventsInFlight} publishes in flight, pool`,
      impls: withBase(["raw", "ours", "raw-events-classic", "ours-classic"]),
      baselines: eventBaselines,
      measure: async (impl: string) => {
        await publish(impl, settings.eventsWarmup)
        const { brokerCpu, elapsedMs, published, serverCpu } = await publish(impl, settings.events)
        return {
          rate: settings.events / elapsedMs * 1000,
          clientCpuMicros: published.cpuMicros / settings.events,
          serverCpuMicros: serverCpu / settings.events,
          brokerCpuMicros: brokerCpu === undefined ? undefined : brokerCpu / settings.events,
          count: settings.events
        }
      }
    },
    embeddedCell(1),
    embeddedCell(64)
  ].filter((cell) => wants(cell.id))
  if (cells.length === 0) throw new Error(`--only ${flags.only} matches no scenario`)

  if (cells.some((cell) => !cell.id.startsWith("embedded"))) {
    const url = brokerUrl()
    for (const family of ["raw", "ours", "ours-classic"]) {
      servers[family] = await start(["server", family, runId, url])
      clients[family] = await start(["client", family, runId, url])
    }
    if (cells.some((cell) => cell.id.endsWith("-observed"))) {
      const started = await startReceiver()
      receiver = started
      for (const family of observedFamilies) {
        servers[family] = await start(["server", family, runId, url, started.baseUrl(family, "server")])
        clients[family] = await start(["client", family, runId, url, started.baseUrl(family, "client")])
      }
    }
    if (flags.compare !== undefined) {
      // a run id of its own: the two versions must not share the service's queue
      servers["ours@base"] = await start(["server", "ours", baseRunId(runId), url], flags.compare)
      clients["ours@base"] = await start(["client", "ours", baseRunId(runId), url], flags.compare)
    }
  }
  if (cells.some((cell) => cell.id.startsWith("embedded"))) embedded = await start(["embedded", "ours", runId])

  const samples = new Map<string, Map<string, Array<Sample>>>()
  const environment = { node: process.version, cpus: cpus().length, loadStart: loadavg() }
  for (let round = 0; round < rounds; round++) {
    for (const cell of cells) {
      const impls = cell.impls.filter((impl) => onlyPeers === undefined || onlyPeers.includes(impl))
      const order = round % 2 === 0 ? impls : [...impls].reverse()
      for (const impl of order) {
        const sample = await cell.measure(impl)
        let byImpl = samples.get(cell.id)
        if (byImpl === undefined) samples.set(cell.id, byImpl = new Map())
        byImpl.set(impl, [...(byImpl.get(impl) ?? []), sample])
        console.error(`round ${round + 1}/${rounds} ${cell.id.padEnd(13)} ${impl.padEnd(18)} ${fmtRate(sample.rate)}/s`)
      }
    }
  }
  const loadEnd = loadavg()

  // what the observed processes did besides their work, then (after they exit, flushing their
  // exporters) what the receiver got from them in all
  const observedStats = new Map<string, { readonly client: ObservedStats; readonly server: ObservedStats }>()
  if (receiver !== undefined) {
    for (const family of observedFamilies) {
      observedStats.set(family, {
        client: await clients[family]!.call<ObservedStats>({ _tag: "Observed" }),
        server: await servers[family]!.call<ObservedStats>({ _tag: "Observed" })
      })
    }
  }
  for (const peer of [...peers].reverse()) await peer.exit()
  const exported = [...observedStats].map(([family, stats]) => ({
    family,
    stats,
    client: receiver!.received(family, "client"),
    server: receiver!.received(family, "server")
  }))
  await receiver?.close()

  const summary = cells.map((cell) => summarize(cell, samples.get(cell.id) ?? new Map()))
  const checked = checkTargets(summary)
  console.log(table(summary, checked, { quick, rounds, load: [environment.loadStart[0], loadEnd[0]] }))
  if (exported.length > 0) console.log(`\n${exportedBlock(exported)}`)
  console.log(`\n${targetsBlock(checked)}`)
  const results = join(root, "bench", "results")
  mkdirSync(results, { recursive: true })
  const file = join(results, `${stamp}${quick ? "-quick" : ""}.json`)
  writeFileSync(
    file,
    JSON.stringify({ settings: { quick, rounds, ...settings, eventsInFlight }, environment: { ...environment, loadEnd }, summary, targets: checked, exported, samples: Object.fromEntries([...samples].map(([id, m]) => [id, Object.fromEntries(m)])) }, null, 2)
  )
  console.log(`\nwrote ${file}`)
  if (flags["cpu-prof"] === true) console.log(`profiles in ${profileDir} (summarize: node bench/profile.ts <file>)`)
}

// ---- reporting ----

interface Row {
  readonly impl: string
  /** the peer its ratios are to, `undefined` for a baseline only */
  readonly baseline: string | undefined
  readonly rate: number
  readonly p50Ms: number
  readonly p99Ms: number
  readonly clientCpu: number
  readonly serverCpu: number
  readonly brokerCpu: number
  readonly cpu: number
  /** median of the per-round ratios to the baseline (rate, and CPU per call) */
  readonly ratio: number | undefined
  readonly ratioRange: readonly [number, number] | undefined
  readonly cpuRatio: number | undefined
  /** median spans received per call (observed peers) */
  readonly spansPerCall: number
  /** median of the receiver's CPU per call (observed peers) */
  readonly receiverCpu: number
}

interface Summary {
  readonly id: string
  readonly title: string
  readonly rows: ReadonlyArray<Row>
}

const totalCpu = (s: Sample) => s.clientCpuMicros + (s.serverCpuMicros ?? 0)

const summarize = (cell: Cell, byImpl: Map<string, Array<Sample>>): Summary => {
  const rows = cell.impls.filter((impl) => byImpl.has(impl)).map((impl): Row => {
    const mine = byImpl.get(impl) ?? []
    const baseline = cell.baselines[impl]
    const base = baseline === undefined ? [] : byImpl.get(baseline) ?? []
    // round i of one peer with round i of its baseline: they ran back to back
    const paired = base.length !== mine.length ? [] : mine.map((s, i) => [s, base[i]] as const)
    const ratios = paired.map(([s, b]) => s.rate / b.rate)
    const cpuRatios = paired.map(([s, b]) => totalCpu(s) / totalCpu(b))
    return {
      impl,
      baseline: base.length === 0 ? undefined : baseline,
      rate: median(mine.map((s) => s.rate)),
      p50Ms: median(mine.map((s) => s.p50Ms ?? Number.NaN)),
      p99Ms: median(mine.map((s) => s.p99Ms ?? Number.NaN)),
      clientCpu: median(mine.map((s) => s.clientCpuMicros)),
      serverCpu: median(mine.map((s) => s.serverCpuMicros ?? Number.NaN)),
      brokerCpu: median(mine.map((s) => s.brokerCpuMicros ?? Number.NaN)),
      cpu: median(mine.map(totalCpu)),
      ratio: ratios.length === 0 ? undefined : median(ratios),
      ratioRange: ratios.length === 0 ? undefined : [Math.min(...ratios), Math.max(...ratios)],
      cpuRatio: cpuRatios.length === 0 ? undefined : median(cpuRatios),
      spansPerCall: median(mine.map((s) => s.spansPerCall ?? Number.NaN)),
      receiverCpu: median(mine.map((s) => s.receiverCpuMicros ?? Number.NaN))
    }
  })
  return { id: cell.id, title: cell.title, rows }
}

interface Checked extends Target {
  /** the goal in words, with the baseline it is measured against */
  readonly goal: string
  /** the measured figure and what it came from */
  readonly figures: string
  /** `undefined`: the cell ran but this peer (or its baseline) did not */
  readonly met: boolean | undefined
}

/** the targets whose cell ran, checked against the run's medians */
const checkTargets = (summary: ReadonlyArray<Summary>): ReadonlyArray<Checked> =>
  targets.flatMap((target): ReadonlyArray<Checked> => {
    const cell = summary.find((s) => s.id === target.cell)
    if (cell === undefined) return []
    const row = cell.rows.find((r) => r.impl === target.impl)
    const base = cell.rows.find((r) => r.impl === row?.baseline)
    const vs = row?.baseline ?? "its baseline"
    switch (target.kind) {
      case "calls":
        return [{
          ...target,
          goal: `${target.impl} ≥ ${fmtRate(target.bound)} calls/s`,
          figures: row === undefined ? "not measured" : `${fmtRate(row.rate)} calls/s`,
          met: row === undefined ? undefined : row.rate >= target.bound
        }]
      case "rate":
        return [{
          ...target,
          goal: `${target.impl} ≥ ${fmtRatio(target.bound)} ${vs} calls/s`,
          figures: row?.ratio === undefined || base === undefined
            ? "not measured"
            : `${fmtRatio(row.ratio)} (${fmtRate(row.rate)} vs ${fmtRate(base.rate)} calls/s)`,
          met: row?.ratio === undefined ? undefined : row.ratio >= target.bound
        }]
      case "cpu":
        return [{
          ...target,
          goal: `${target.impl} client+server cpu/call ≤ ${fmtRatio(target.bound)} ${vs}'s`,
          figures: row?.cpuRatio === undefined || base === undefined
            ? "not measured"
            : `${fmtRatio(row.cpuRatio)} (${fmtCpu(row.cpu)} vs ${fmtCpu(base.cpu)} µs/call)`,
          met: row?.cpuRatio === undefined ? undefined : row.cpuRatio <= target.bound
        }]
    }
  })

const verdict = (met: boolean | undefined) => met === undefined ? "-" : met ? "met" : "MISSED"

const fmtRate = (n: number) => Number.isNaN(n) ? "-" : n >= 100 ? Math.round(n).toLocaleString("en-US") : n.toFixed(1)
const fmtMs = (n: number) => Number.isNaN(n) ? "-" : n < 1 ? n.toFixed(3) : n < 100 ? n.toFixed(2) : n.toFixed(0)
const fmtCpu = (n: number) => Number.isNaN(n) ? "-" : n < 10 ? n.toFixed(2) : n.toFixed(0)
const fmtRatio = (n: number | undefined) => n === undefined ? "" : `${n < 0.1 ? n.toPrecision(2) : n.toFixed(2)}x`

/** columns padded to their widest cell: the first `left` ones to the left, the others to the right */
const columns = (lines: ReadonlyArray<ReadonlyArray<string>>, left: number): Array<string> => {
  const widths = lines[0].map((_, i) => Math.max(...lines.map((l) => l[i].length)))
  return lines.map((l) => l.map((c, i) => i < left ? c.padEnd(widths[i]) : c.padStart(widths[i])).join("  ").trimEnd())
}

/** the row's rate target, in the table (the cpu ones are in the targets block) */
const targetCell = (checked: ReadonlyArray<Checked>, cell: string, impl: string): string =>
  checked
    .filter((t) => t.cell === cell && t.impl === impl && t.kind === "rate" && t.met !== undefined)
    .map((t) => `${verdict(t.met)} (≥${t.bound})`)
    .join(", ")

const table = (summary: ReadonlyArray<Summary>, checked: ReadonlyArray<Checked>, meta: { quick: boolean; rounds: number; load: ReadonlyArray<number> }): string => {
  const spans = summary.some((s) => s.rows.some((r) => !Number.isNaN(r.spansPerCall)))
  const header = ["scenario", "peer", "calls/s", "p50 ms", "p99 ms", "cpu µs/call client", "server", "total", "(broker)", "vs", "ratio (rounds)", "cpu ratio", ...(spans ? ["spans/call"] : []), "target"]
  const lines: Array<Array<string>> = [header]
  for (const s of summary) {
    for (const row of s.rows) {
      lines.push([
        row === s.rows[0] ? s.id : "",
        row.impl,
        fmtRate(row.rate),
        fmtMs(row.p50Ms),
        fmtMs(row.p99Ms),
        fmtCpu(row.clientCpu),
        fmtCpu(row.serverCpu),
        fmtCpu(row.cpu),
        fmtCpu(row.brokerCpu),
        row.baseline ?? "",
        row.ratio === undefined ? "" : `${fmtRatio(row.ratio)} (${fmtRatio(row.ratioRange?.[0])}–${fmtRatio(row.ratioRange?.[1])})`,
        fmtRatio(row.cpuRatio),
        ...(spans ? [Number.isNaN(row.spansPerCall) ? "" : row.spansPerCall.toFixed(2)] : []),
        targetCell(checked, s.id, row.impl)
      ])
    }
  }
  const notes = [
    `${meta.rounds} rounds${meta.quick ? " (quick)" : ""}${flags.timeout === undefined ? "" : `, effect-mesh calls with a ${flags.timeout} timeout`}, medians; ratio = calls/s over those of the peer in column vs, per round, median (min–max); load avg ${meta.load.map((l) => l.toFixed(1)).join(" → ")}`,
    ...(summary.some((s) => s.rows.some((r) => r.impl.startsWith("raw")))
      ? ["queues: raw, raw-headers, ours: quorum; raw-classic, raw-events-classic, ours-classic: classic"]
      : []),
    "cpu: client and server process time per call (total = both; cpu ratio: total over vs's, per round, median); (broker): the RabbitMQ node's, shared with anyone else using it, not in total",
    ...(spans
      ? [
        `observed: effect's OTLP exporters (MeshConfig.layerOtlp from OTEL_EXPORTER_OTLP_ENDPOINT, http/json, default intervals; sampler ${process.env["OTEL_TRACES_SAMPLER"] ?? "parentbased_always_on"} ${process.env["OTEL_TRACES_SAMPLER_ARG"] ?? ""}) in the client and server processes, posting to a receiver in the orchestrator, and PrometheusMetrics.format every second in each; spans/call: spans the receiver got from both while the peer measured, per call (exports are batched, so a window's count is near, not exact)`,
        `the receiver's CPU (the orchestrator's, not in total), median µs/call: ${
          summary.flatMap((s) => s.rows.filter((r) => !Number.isNaN(r.receiverCpu)).map((r) => `${s.id} ${r.impl} ${fmtCpu(r.receiverCpu)}`)).join(", ")
        }`
      ]
      : []),
    ...summary.map((s) => `${s.id}: ${s.title}`),
    ...summary.filter((s) => s.id.startsWith("embedded")).map((s) => {
      const rate = (impl: string) => s.rows.find((r) => r.impl === impl)?.rate ?? Number.NaN
      return `${s.id}: mesh = ${(rate("mesh") / rate("rpctest")).toFixed(2)}x effect/rpc alone (RpcTest: no broker, no serialization)`
    })
  ]
  return [...columns(lines, 2), "", ...notes].join("\n")
}

interface Exported {
  readonly family: string
  readonly stats: { readonly client: ObservedStats; readonly server: ObservedStats }
  readonly client: Received
  readonly server: Received
}

/** what the observed processes exported over the whole run (after their final flush), and their scrapes */
const exportedBlock = (exported: ReadonlyArray<Exported>): string => {
  const lines = [["peer", "calls", "spans client", "server", "per call", "OTLP posts traces/metrics/logs", "MB", "scrapes client/server", "series", "mesh metrics"]]
  for (const e of exported) {
    const calls = e.stats.client.calls
    lines.push([
      e.family,
      calls.toLocaleString("en-US"),
      e.client.spans.toLocaleString("en-US"),
      e.server.spans.toLocaleString("en-US"),
      `${(e.client.spans / calls).toFixed(2)} + ${(e.server.spans / calls).toFixed(2)}`,
      [e.client, e.server].map((r) => `${r.traces}/${r.metrics}/${r.logs}`).join(", "),
      ((e.client.bytes + e.server.bytes) / 1e6).toFixed(1),
      `${e.stats.client.scrapes}/${e.stats.server.scrapes}`,
      `${e.stats.client.lastScrapeSeries}/${e.stats.server.lastScrapeSeries}`,
      e.stats.client.meshMetrics && e.stats.server.meshMetrics ? "yes" : "NO"
    ])
  }
  return [
    "exported over the run (every call the observed clients made, warm-ups included; the receiver's counts after the processes' final flush)",
    ...columns(lines, 1)
  ].join("\n")
}

/** every target whose cell ran, one a line: met or MISSED, with the figures it was judged on */
const targetsBlock = (checked: ReadonlyArray<Checked>): string => {
  if (checked.length === 0) return "targets: none of their cells ran"
  const lines = checked.map((t) => [`  ${t.cell}`, t.goal, t.figures, verdict(t.met)])
  const missed = checked.filter((t) => t.met === false).length
  return [
    "targets (ratios: median of the per-round ratios, as in the table; calls/s and µs/call: medians)",
    ...columns(lines, 3),
    `${checked.filter((t) => t.met === true).length} of ${checked.length} met${missed === 0 ? "" : `, ${missed} MISSED`}${
      checked.some((t) => t.met === undefined) ? `, ${checked.filter((t) => t.met === undefined).length} not measured` : ""
    }`
  ].join("\n")
}

try {
  await main()
} finally {
  rmSync(leaseFile, { force: true })
}
