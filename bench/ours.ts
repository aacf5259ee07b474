/**
 * The same work through effect-mesh: `Service.make` + `ServiceClient` on `AmqpBroker` for RPC,
 * `Event.publish` + `Event.handle(..., { delivery: "pool" })` for events, and the embedded broker
 * (`MemoryBroker`) in one process. A peer runs on one queue type, `quorum` (`ours`) or `classic`
 * (`ours-classic`), with a service and event source of its own, and says the type explicitly for
 * both its request queue and its subscription: the mesh's defaults are not what is measured.
 */
import { ConfigProvider, Duration, Effect, Exit, Layer, ManagedRuntime, Schedule, Scope } from "effect"
import { PrometheusMetrics } from "effect/observability"
import { RpcTest } from "effect/rpc"
import { AmqpBroker, Event, MeshConfig, MeshTest, Service, ServiceClient } from "effect-mesh"
import type { EmbeddedMeasure, EmbeddedRun, MeshNames, Names, ObservedStats, PublishMeasure, PublishRun, QueueType, RpcMeasure, RpcRun } from "./shared.ts"
import { BenchRpcs, cpuMicros, handlers, Latencies, payloadOf, serverConcurrency } from "./shared.ts"

/** an observed peer's exporters: where its OTLP receiver is, and the service name its resource carries */
export interface Observe {
  readonly otlpBaseUrl: string
  readonly serviceName: string
}

interface Scrapes {
  scrapes: number
  lastScrapeBytes: number
  lastScrapeSeries: number
  meshMetrics: boolean
}

/**
 * What a production user turns on: `MeshConfig.layerOtlp` (effect's OTLP exporters) over HTTP/JSON with
 * their default intervals and batch size (spans every 5 s or every 1000, metrics every 10 s, logs every
 * second); and the process's metrics formatted for Prometheus every second (what serving
 * a scraper's `/metrics` costs, less the HTTP exchange). `Layer.empty` for a plain peer.
 */
const observability = (observe: Observe | undefined, scrapes: Scrapes): Layer.Layer<never> => {
  if (observe === undefined) return Layer.empty
  const scrape = PrometheusMetrics.format().pipe(
    Effect.tap((text) =>
      Effect.sync(() => {
        scrapes.scrapes++
        scrapes.lastScrapeBytes = text.length
        scrapes.lastScrapeSeries = text.split("\n").filter((line) => line !== "" && !line.startsWith("#")).length
        scrapes.meshMetrics = text.includes("rpc_server_call_duration") || text.includes("rpc_client_call_duration")
      })
    ),
    Effect.repeat(Schedule.spaced("1 second")),
    Effect.forkScoped
  )
  return Layer.mergeAll(
    // the export a user configures: the standard variables, read by MeshConfig.layerOtlp (JSON here, so
    // that the receiver can count the spans)
    MeshConfig.layerOtlp(observe.serviceName).pipe(
      Layer.provide(ConfigProvider.layer(ConfigProvider.fromUnknown({
        OTEL_EXPORTER_OTLP_ENDPOINT: observe.otlpBaseUrl,
        OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
        // the benchmark's own environment chooses the sampler (default: every trace)
        OTEL_TRACES_SAMPLER: process.env["OTEL_TRACES_SAMPLER"] ?? "parentbased_always_on",
        OTEL_TRACES_SAMPLER_ARG: process.env["OTEL_TRACES_SAMPLER_ARG"] ?? "1"
      }))),
      Layer.orDie
    ),
    Layer.effectDiscard(scrape)
  )
}

const newScrapes = (): Scrapes => ({ scrapes: 0, lastScrapeBytes: 0, lastScrapeSeries: 0, meshMetrics: false })

export interface OursServer {
  readonly expectEvents: (count: number) => Promise<void>
  readonly observed: () => ObservedStats
  readonly close: () => Promise<void>
}

export const server = async (url: string, names: MeshNames, queueType: QueueType, observe?: Observe): Promise<OursServer> => {
  const { contract, event } = names
  const scrapes = newScrapes()
  let expected = 0
  let handled = 0
  let done: (() => void) | undefined
  const onEvent = Effect.sync(() => {
    if (++handled === expected) done?.()
  })
  const ServiceLive = Service.make(contract, {
    handlers,
    queueType,
    concurrency: serverConcurrency,
    entrypoints: [Event.handle(event, { delivery: "pool", queueType, concurrency: serverConcurrency }, () => onEvent)]
  })
  const runtime = ManagedRuntime.make(
    ServiceLive.pipe(Layer.provideMerge(AmqpBroker.layer({ url })), Layer.provideMerge(observability(observe, scrapes)))
  )
  await runtime.runPromise(Effect.void)
  return {
    observed: () => ({ ...scrapes, calls: 0 }),
    expectEvents: (count) => {
      handled = 0
      expected = count
      return new Promise((resolve) => {
        done = resolve
      })
    },
    close: () => runtime.dispose()
  }
}

/** runs `call` from `inFlight` workers until `durationMs` have passed */
const drive = <E>(
  call: () => Effect.Effect<unknown, E>,
  inFlight: number,
  durationMs: number
): Effect.Effect<RpcMeasure, E> =>
  Effect.suspend(() => {
    const latencies = new Latencies()
    let calls = 0
    const cpu = process.cpuUsage()
    const start = performance.now()
    const end = start + durationMs
    const worker = Effect.gen(function*() {
      while (performance.now() < end) {
        const t0 = performance.now()
        yield* call()
        latencies.record(performance.now() - t0)
        calls++
      }
    })
    return Effect.map(
      Effect.all(Array.from({ length: inFlight }, () => worker), { concurrency: "unbounded", discard: true }),
      (): RpcMeasure => ({
        calls,
        elapsedMs: performance.now() - start,
        ...latencies.summary(),
        cpuMicros: cpuMicros(cpu)
      })
    )
  })

export interface OursClient {
  readonly rpc: (run: RpcRun, durationMs: number) => Promise<RpcMeasure>
  readonly publish: (run: PublishRun) => Promise<PublishMeasure>
  readonly observed: () => ObservedStats
  readonly close: () => Promise<void>
}

export const client = async (url: string, names: MeshNames, observe?: Observe): Promise<OursClient> => {
  const { contract, event, msgpackContract } = names
  const scrapes = newScrapes()
  const runtime = ManagedRuntime.make(
    ServiceClient.layer.pipe(Layer.provideMerge(AmqpBroker.layer({ url })), Layer.provideMerge(observability(observe, scrapes)))
  )
  // `npm run bench -- --timeout 10s` sets it: every call then has a deadline, as real clients do
  const timeout = process.env["BENCH_CALL_TIMEOUT"]
  const options = timeout === undefined ? undefined : { timeout: Duration.fromInputUnsafe(timeout as Duration.Input) }
  const calc = await runtime.runPromise(ServiceClient.make(contract, options))
  // the same calls written in MessagePack (`echo10k-msgpack`, ...): the service answers in it
  const packed = await runtime.runPromise(ServiceClient.make(msgpackContract, options))
  const sum = await runtime.runPromise(calc.add({ a: 1, b: 2 }))
  if (sum !== 3) throw new Error(`add returned ${sum}`)
  let calls = 1
  return {
    rpc: async (run, durationMs) => {
      const data = payloadOf(run.size)
      const client = run.format === "msgpack" ? packed : calc
      const call = run.method === "add" ? () => client.add({ a: 1, b: 2 }) : () => client.echo({ data })
      const measured = await runtime.runPromise(drive(call, run.inFlight, durationMs))
      calls += measured.calls
      return measured
    },
    observed: () => ({ ...scrapes, calls }),
    // `inFlight` publishers, each waiting for its confirm before the next: as raw keeps a window
    publish: (run) => {
      const note = payloadOf(40)
      const cpu = process.cpuUsage()
      const start = performance.now()
      let next = 0
      const publisher = Effect.gen(function*() {
        while (next < run.count) yield* Event.publish(event, { seq: next++, note })
      })
      return runtime.runPromise(
        Effect.all(Array.from({ length: run.inFlight }, () => publisher), { concurrency: "unbounded", discard: true }).pipe(
          Effect.map(() => ({ elapsedMs: performance.now() - start, cpuMicros: cpuMicros(cpu) }))
        )
      )
    },
    close: () => runtime.dispose()
  }
}

export interface Embedded {
  readonly run: (run: EmbeddedRun, durationMs: number) => Promise<EmbeddedMeasure>
  readonly close: () => Promise<void>
}

/**
 * Services and client on the embedded broker, in this process; for scale, the same handler called
 * directly, and through effect/rpc alone (`RpcTest`: its client and server joined in memory, no
 * serialization, no broker), the floor of anything built on effect/rpc.
 */
export const embedded = async (n: Names): Promise<Embedded> => {
  const runtime = ManagedRuntime.make(MeshTest.layer(Service.make(n.ours.quorum.contract, { handlers, concurrency: serverConcurrency })))
  const calc = await runtime.runPromise(ServiceClient.make(n.ours.quorum.contract))
  const scope = await Effect.runPromise(Scope.make())
  const rpc = await Effect.runPromise(
    RpcTest.makeClient(BenchRpcs).pipe(Effect.provide(BenchRpcs.toLayer(handlers)), Scope.provide(scope))
  )
  return {
    run: (run, durationMs) =>
      runtime.runPromise(
        run.target === "mesh"
          ? drive(() => calc.add({ a: 1, b: 2 }), run.inFlight, durationMs)
          : run.target === "rpctest"
          ? drive(() => rpc.add({ a: 1, b: 2 }), run.inFlight, durationMs)
          : drive(() => handlers.add({ a: 1, b: 2 }), run.inFlight, durationMs)
      ),
    close: async () => {
      await Effect.runPromise(Scope.close(scope, Exit.void))
      await runtime.dispose()
    }
  }
}
