/**
 * What the benchmark's processes share: the contract and event both peers serve, the messages the
 * orchestrator and its child processes exchange, and small statistics helpers.
 */
import { Effect, Schema } from "effect"
import { Rpc, RpcGroup } from "effect/rpc"
import { Event, ServiceContract, WireFormat } from "effect-mesh"
import * as topology from "../src/internal/topology.ts"

// ---- the workload ----

export class BenchRpcs extends RpcGroup.make(
  Rpc.make("add", { payload: { a: Schema.Number, b: Schema.Number }, success: Schema.Number }),
  Rpc.make("echo", { payload: { data: Schema.String }, success: Schema.String })
) {}

/** the names of one mesh service of the benchmark: its contract and the event it publishes and handles */
const meshNames = (service: string) => {
  const subscription = topology.eventSubscription(service, "tick", "pool", service, undefined)
  return {
    service,
    contract: ServiceContract.make(service, BenchRpcs),
    /** the same service as a caller that writes MessagePack sees it (the service reads both) */
    msgpackContract: ServiceContract.make(service, BenchRpcs, { format: WireFormat.msgPack }),
    event: Event.make(service, "tick", Schema.Struct({ seq: Schema.Number, note: Schema.String })),
    /** what the mesh declares for the service and its subscription, deleted after the run */
    queues: [
      topology.rpcQueue(service),
      topology.rpcDeadLetterQueue(service),
      subscription,
      topology.eventDeadLetterQueue(subscription)
    ],
    exchanges: [topology.eventExchange(service)]
  }
}

export type MeshNames = ReturnType<typeof meshNames>

/** names carry the run id, so runs on a shared broker never meet */
export const names = (runId: string) => {
  // a service (and event source) per queue type: both sets of queues exist side by side, and an event
  // published for one subscription never lands in the other's queue
  const quorum = meshNames(`bench-${runId}`)
  const classic = meshNames(`bench-${runId}-classic`)
  // the observed peers' services: their own, so that a plain peer's calls never reach an observed server
  const observedQuorum = meshNames(`bench-${runId}-observed`)
  const observedClassic = meshNames(`bench-${runId}-classic-observed`)
  const all = [quorum, classic, observedQuorum, observedClassic]
  return {
    ours: { quorum, classic } satisfies Record<QueueType, MeshNames>,
    observed: { quorum: observedQuorum, classic: observedClassic } satisfies Record<QueueType, MeshNames>,
    oursQueues: all.flatMap((m) => m.queues),
    oursExchanges: all.flatMap((m) => m.exchanges),
    raw: {
      rpcQueue: `bench.raw.rpc.${runId}`,
      rpcDeadQueue: `bench.raw.rpc.${runId}.dead`,
      rpcClassicQueue: `bench.raw.rpc-classic.${runId}`,
      eventExchange: `bench.raw.events.${runId}`,
      eventQueue: `bench.raw.events.${runId}.tick`,
      eventDeadQueue: `bench.raw.events.${runId}.tick.dead`,
      eventClassicExchange: `bench.raw.events-classic.${runId}`,
      eventClassicQueue: `bench.raw.events-classic.${runId}.tick`,
      eventClassicDeadQueue: `bench.raw.events-classic.${runId}.tick.dead`
    }
  }
}

export type Names = ReturnType<typeof names>

/** the run id of `--compare`'s peers: the other checkout's service must not share this one's queue */
export const baseRunId = (runId: string): string => `${runId}b`

/** the handlers, for the services and for the direct baseline */
export const handlers = {
  add: ({ a, b }: { readonly a: number; readonly b: number }) => Effect.succeed(a + b),
  echo: ({ data }: { readonly data: string }) => Effect.succeed(data)
}

export const payloadOf = (size: number): string => "x".repeat(size)

/** RPC and event work share this concurrency: the service's prefetch, the subscription's, raw's */
export const serverConcurrency = 64

// ---- processes ----

/** the queue types a mesh peer declares its service's queue and its subscription's with */
export type QueueType = "classic" | "quorum"

/**
 * what a cell measures: `ours` and `ours-classic` are effect-mesh on a quorum and on a classic queue;
 * `raw` is amqplib on a quorum queue, `raw-classic` (rpc) and `raw-events-classic` on a classic one
 */
export type Impl = "ours" | "ours-classic" | "raw" | "raw-classic" | "raw-headers" | "raw-events-classic"

/**
 * The families of processes that run effect-mesh: `ours` and `ours-classic` as a program runs it
 * with no exporter (the mesh still updates its metrics and makes its spans, with effect's default
 * tracer); `ours-observed` and `ours-classic-observed` the same with what a production user turns on:
 * effect's OTLP exporters (`MeshConfig.layerOtlp`: traces, metrics, logs, default intervals) posting to the
 * benchmark's receiver, and the process's metrics formatted for Prometheus every second, as a
 * scraper would have them.
 */
export type MeshFamily = "ours" | "ours-classic" | "ours-observed" | "ours-classic-observed"

export const isMeshFamily = (family: string): family is MeshFamily =>
  family === "ours" || family === "ours-classic" || family === "ours-observed" || family === "ours-classic-observed"

export const queueTypeOf = (family: MeshFamily): QueueType => family === "ours" || family === "ours-observed" ? "quorum" : "classic"

export const isObserved = (family: MeshFamily): boolean => family === "ours-observed" || family === "ours-classic-observed"

/** what an observed process did besides its work: its Prometheus scrapes (the last one's size) */
export interface ObservedStats {
  readonly scrapes: number
  readonly lastScrapeBytes: number
  readonly lastScrapeSeries: number
  /** whether the last scrape held the mesh's RPC metrics */
  readonly meshMetrics: boolean
  /** calls made since the process started (a client's): what its spans are counted against */
  readonly calls: number
}

/** the wire format a call's request and reply are written in */
export type Format = "json" | "msgpack"

export interface RpcRun {
  readonly impl: Impl
  readonly method: "add" | "echo"
  readonly size: number
  /** JSON unless said */
  readonly format?: Format | undefined
  readonly inFlight: number
  readonly warmupMs: number
  readonly durationMs: number
}

export interface RpcMeasure {
  readonly calls: number
  readonly elapsedMs: number
  readonly p50Ms: number
  readonly p99Ms: number
  /** CPU time of the client process while measuring, in µs */
  readonly cpuMicros: number
}

export interface PublishRun {
  readonly impl: Impl
  readonly count: number
  readonly inFlight: number
}

export interface PublishMeasure {
  readonly elapsedMs: number
  readonly cpuMicros: number
}

export interface EmbeddedRun {
  readonly target: "mesh" | "rpctest" | "direct"
  readonly inFlight: number
  readonly warmupMs: number
  readonly durationMs: number
}

export interface EmbeddedMeasure extends RpcMeasure {}

/** orchestrator → child */
export type Command =
  | { readonly _tag: "Cpu" }
  | { readonly _tag: "ExpectEvents"; readonly impl: Impl; readonly count: number }
  | { readonly _tag: "AwaitEvents" }
  | { readonly _tag: "RpcWarmup"; readonly run: RpcRun }
  | { readonly _tag: "RpcMeasure"; readonly run: RpcRun }
  | { readonly _tag: "Publish"; readonly run: PublishRun }
  | { readonly _tag: "Embedded"; readonly run: EmbeddedRun }
  | { readonly _tag: "Observed" }
  | { readonly _tag: "Exit" }

export interface Request {
  readonly id: number
  readonly command: Command
}

/** child → orchestrator */
export type Reply =
  | { readonly _tag: "Ready" }
  | { readonly _tag: "Done"; readonly id: number; readonly value: unknown }
  | { readonly _tag: "Failed"; readonly id: number; readonly error: string }

export const cpuMicros = (since: NodeJS.CpuUsage): number => {
  const used = process.cpuUsage(since)
  return used.user + used.system
}

// ---- statistics ----

export const median = (values: ReadonlyArray<number>): number => {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

/** the q-quantile (0..1) of latencies, nearest rank */
export const quantile = (sorted: ArrayLike<number>, q: number): number => {
  if (sorted.length === 0) return Number.NaN
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))
  return sorted[rank]
}

/** latencies of one measurement, kept in a preallocated buffer so that recording costs nothing */
export class Latencies {
  private values: Float64Array
  length = 0
  constructor(capacity = 1 << 16) {
    this.values = new Float64Array(capacity)
  }
  record(ms: number): void {
    if (this.length === this.values.length) {
      const next = new Float64Array(this.values.length * 2)
      next.set(this.values)
      this.values = next
    }
    this.values[this.length++] = ms
  }
  summary(): { readonly p50Ms: number; readonly p99Ms: number } {
    const sorted = this.values.subarray(0, this.length).sort()
    return { p50Ms: quantile(sorted, 0.5), p99Ms: quantile(sorted, 0.99) }
  }
}
