/**
 * A real Prometheus scrapes the mesh: `scripts/prometheus.sh start` (installing Debian's prometheus on
 * a fresh machine) runs the checkout's private Prometheus; a mesh on RabbitMQ serves `/metrics` on its
 * HTTP edge; calls are made (successes and declared errors, on two methods); the edge is written as a
 * scrape target; and Prometheus's query API must come to answer the exact call counts, on the
 * server's and the client's histograms, by method and outcome, with their latency buckets.
 *
 * Several test runs of one checkout may share the Prometheus: each writes a target file of its own
 * and holds a lease while it runs; the last to finish stops it, and only if a test run started it.
 */
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Data, Effect, Schedule, Schema } from "effect"
import { Rpc, RpcGroup } from "effect/rpc"
import { AmqpBroker, Discovery, Mesh, Service, ServiceClient, ServiceContract } from "effect-mesh"
import { spawnSync } from "node:child_process"
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { amqpUrl } from "./fixtures/amqpUrl.ts"
import { captureLogs } from "./fixtures/logs.ts"
import { DivisionByZero } from "./fixtures/services.ts"

const root = fileURLToPath(new URL("..", import.meta.url))
const script = join(root, "scripts", "prometheus.sh")

const run = (...args: ReadonlyArray<string>) => {
  const result = spawnSync("bash", [script, ...args], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] })
  if (result.error !== undefined) throw result.error
  return { status: result.status, stdout: result.stdout.trim() }
}

const port = run("port").stdout
const folder = join(process.env["MESH_PROMETHEUS_DIR"] || join(root, ".prometheus"), port)
const leases = join(folder, "leases")
const startedMarker = join(folder, "started-by-tests")
let prometheus = ""

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM"
  }
}

beforeAll(() => {
  const wasRunning = run("status").status === 0
  const started = run("start")
  if (started.status !== 0) {
    throw new Error(`scripts/prometheus.sh start failed with status ${started.status}: its "prometheus.sh:" lines above say why`)
  }
  prometheus = started.stdout.split("\n").pop() ?? ""
  mkdirSync(leases, { recursive: true })
  writeFileSync(join(leases, String(process.pid)), "")
  if (!wasRunning) writeFileSync(startedMarker, "")
}, 900_000)

afterAll(() => {
  rmSync(join(leases, String(process.pid)), { force: true })
  const others = existsSync(leases)
    ? readdirSync(leases).map(Number).filter((pid) => Number.isInteger(pid) && pid !== process.pid && alive(pid))
    : []
  if (others.length === 0 && existsSync(startedMarker)) {
    rmSync(startedMarker, { force: true })
    run("stop")
  }
}, 60_000)

class CalcRpcs extends RpcGroup.make(
  Rpc.make("add", { payload: { a: Schema.Number, b: Schema.Number }, success: Schema.Number }),
  Rpc.make("divide", { payload: { a: Schema.Number, b: Schema.Number }, success: Schema.Number, error: DivisionByZero })
) {}

const calcLive = (contract: ServiceContract.ServiceContract<string, RpcGroup.Rpcs<typeof CalcRpcs>>) =>
  Service.make(contract, {
    handlers: CalcRpcs.of({
      add: ({ a, b }) => Effect.succeed(a + b),
      divide: ({ a, b }) => b === 0 ? Effect.fail(new DivisionByZero({ dividend: a })) : Effect.succeed(a / b)
    })
  })

/** the calls made, by `method/outcome` */
const expected = { "add/success": 5, "divide/success": 3, "divide/DivisionByZero": 2 }

/** effect's histogram boundaries of the rpc durations, as Prometheus labels them */
const boundaries = ["0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "+Inf"]

const QueryResponse = Schema.Struct({
  status: Schema.Literal("success"),
  data: Schema.Struct({
    result: Schema.Array(Schema.Struct({
      metric: Schema.Record(Schema.String, Schema.String),
      value: Schema.Tuple([Schema.Number, Schema.String])
    }))
  })
})

/** Prometheus's answer does not show the calls yet (or shows something else): what it showed */
class NotYet extends Data.TaggedError("NotYet")<{ readonly query: string; readonly seen: unknown }> {
  override get message() {
    return `Prometheus answers ${this.query}: ${JSON.stringify(this.seen)}`
  }
}

/** an instant query through Prometheus's HTTP API */
const query = (promql: string) =>
  Effect.tryPromise(async () => {
    const response = await fetch(`${prometheus}/api/v1/query?query=${encodeURIComponent(promql)}`)
    return (await response.json()) as unknown
  }).pipe(
    Effect.flatMap(Schema.decodeUnknownEffect(QueryResponse)),
    Effect.map((response) => response.data.result)
  )

/** the samples of a histogram's `_count` by `method/outcome`, and its buckets by `method/outcome` then `le` */
const scraped = (histogram: string, service: string) =>
  Effect.gen(function*() {
    const selector = `{job="mesh", rpc_service="${service}"}`
    const counts = yield* query(`${histogram}_count${selector}`)
    const byCall: Record<string, number> = {}
    for (const sample of counts) {
      const key = `${sample.metric["rpc_method"]}/${sample.metric["outcome"]}`
      if (key in byCall) return yield* new NotYet({ query: histogram, seen: counts })
      byCall[key] = Number(sample.value[1])
    }
    if (JSON.stringify(Object.entries(byCall).sort()) !== JSON.stringify(Object.entries(expected).sort())) {
      return yield* new NotYet({ query: `${histogram}_count`, seen: byCall })
    }
    const buckets = yield* query(`${histogram}_bucket${selector}`)
    const byLe: Record<string, Record<string, number>> = {}
    for (const sample of buckets) {
      const key = `${sample.metric["rpc_method"]}/${sample.metric["outcome"]}`
      const le = sample.metric["le"] ?? ""
      ;(byLe[key] ??= {})[le] = Number(sample.value[1])
    }
    return { counts: byCall, buckets: byLe }
  })

describe("a real Prometheus", () => {
  it.live("scrapes the mesh's /metrics: exact call counts by method and outcome, on both sides, and latency buckets", () =>
    Effect.gen(function*() {
      const contract = ServiceContract.make(`prometheus-${crypto.randomUUID().slice(0, 8)}`, CalcRpcs)
      const logs = captureLogs()
      yield* Effect.gen(function*() {
        // the edge's URL, from the line the mesh logs once it listens (port 0: a free one)
        const announced = logs.lines.map((l) => /^mesh: HTTP on (http:\/\/\S+)$/.exec(l.message)?.[1]).find((u) => u !== undefined)
        assert.isDefined(announced, JSON.stringify(logs.lines))
        const edge = new URL(announced ?? "")

        const client = yield* ServiceClient.make(contract, { timeout: "20 seconds" })
        for (let i = 0; i < 5; i++) assert.strictEqual(yield* client.add({ a: i, b: 1 }), i + 1)
        for (let i = 1; i <= 3; i++) assert.strictEqual(yield* client.divide({ a: 6, b: i }), 6 / i)
        for (let i = 0; i < 2; i++) {
          const error = yield* Effect.flip(client.divide({ a: i, b: 0 }))
          assert.deepStrictEqual(error, new DivisionByZero({ dividend: i }))
        }

        // a target file of this run (Prometheus re-reads the folder's *.json as they change), removed after
        const targets = join(folder, "targets", `test-${process.pid}-${contract.name}.json`)
        yield* Effect.acquireRelease(
          Effect.sync(() => {
            mkdirSync(join(folder, "targets"), { recursive: true })
            writeFileSync(`${targets}.tmp`, JSON.stringify([{ targets: [edge.host] }]))
            renameSync(`${targets}.tmp`, targets)
          }),
          () => Effect.sync(() => rmSync(targets, { force: true }))
        )

        // scraped every second: poll until both histograms show the calls (a noisy machine may take a while)
        const both = yield* Effect.all({
          server: scraped("rpc_server_call_duration", contract.name),
          client: scraped("rpc_client_call_duration", contract.name)
        }).pipe(Effect.retry({ while: (e) => e._tag === "NotYet", schedule: Schedule.spaced("500 millis"), times: 240 }))

        for (const [side, seen] of Object.entries(both)) {
          assert.deepStrictEqual(seen.counts, expected, side)
          for (const [call, count] of Object.entries(expected)) {
            const buckets = seen.buckets[call] ?? {}
            assert.deepStrictEqual(Object.keys(buckets).sort(), [...boundaries].sort(), `${side} ${call}`)
            const cumulative = boundaries.map((le) => buckets[le] ?? -1)
            // cumulative, every call under the last boundary (30s), and +Inf is the count
            assert.isTrue(cumulative.every((n, i) => i === 0 || n >= (cumulative[i - 1] ?? 0)), `${side} ${call}: ${cumulative}`)
            assert.strictEqual(buckets["30"], count, `${side} ${call}`)
            assert.strictEqual(buckets["+Inf"], count, `${side} ${call}`)
          }
        }
      }).pipe(
        Effect.scoped,
        Effect.provide(
          Mesh.layer([calcLive(contract)], {
            broker: AmqpBroker.layer({ url: amqpUrl() }),
            http: { port: 0, host: "127.0.0.1", disableLogger: true }
          })
        ),
        Effect.provideService(Discovery.LogLevel, "Info"),
        Effect.provide(logs.layer)
      )
    }), 300_000)
})
