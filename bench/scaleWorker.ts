/**
 * One process of `npm run bench -- --scale` (bench/scale.ts) and `npm run soak` (bench/soak.ts),
 * driven over its standard input and output, one line each way:
 *
 *   node bench/scaleWorker.ts server <amqpUrls> <service>[,<service>...]
 *   node bench/scaleWorker.ts client <amqpUrls> <service>[,<service>...] <inFlight> <warmupMs> <durationMs> [<rate>]
 *   node bench/scaleWorker.ts subscriber <amqpUrls> <source>
 *   node bench/scaleWorker.ts publisher <amqpUrls> <source> <count> <inFlight>
 *
 * Every process prints `ready` once connected (a client after a first call), then waits for `go` on
 * its standard input. A server serves `BenchRpcs` (quorum request queue, 64 at once) under each name
 * given; a client calls `add` from `inFlight` fibers, spreading its calls over the services given (a
 * service sharded over several queues), and prints `result <json>` (calls, elapsed, latencies' p50 and
 * p99, and a sample of latencies for merging); with a `rate` (calls/s) it paces itself and runs until
 * killed, printing `tick <json>` every second. A subscriber handles the source's `tick` events (pool,
 * quorum) and prints `handled <n>` every 100 ms; a publisher publishes `count` events, `inFlight` at
 * once, each confirmed, and prints `published <ms>`. On `memory`, every process prints its RSS and,
 * when run with `--expose-gc`, collects its garbage in full and adds the heap left (`memory <json>`);
 * on `snapshot <file>`, it writes a V8 heap snapshot to that file and prints `snapshot <file>`.
 */
import { Effect, Layer, ManagedRuntime, Schema } from "effect"
import { AmqpBroker, Event, Service, ServiceClient, ServiceContract } from "effect-mesh"
import { createInterface } from "node:readline"
import { writeHeapSnapshot } from "node:v8"
import { BenchRpcs, handlers, Latencies, serverConcurrency } from "./shared.ts"

const [role = "", url = "", namesArg = "", ...rest] = process.argv.slice(2)
const names = namesArg.split(",")
const say = (line: string) => process.stdout.write(`${line}\n`)

const Tick = Schema.Struct({ seq: Schema.Number })
const tickOf = (source: string) => Event.make(source, "tick", Tick)

let go: () => void = () => {}
const started = new Promise<void>((resolve) => {
  go = resolve
})
/** what `memory` reports: RSS as it stood, then the heap after a full collection (with `--expose-gc`) */
const memory = () => {
  const rss = process.memoryUsage().rss
  const collect: unknown = Reflect.get(globalThis, "gc")
  if (typeof collect === "function") collect()
  const after = process.memoryUsage()
  return { rss, heapUsed: after.heapUsed, heapTotal: after.heapTotal, external: after.external, collected: typeof collect === "function" }
}
createInterface({ input: process.stdin }).on("line", (line) => {
  if (line === "go") go()
  if (line === "memory") say(`memory ${JSON.stringify(memory())}`)
  if (line.startsWith("snapshot ")) say(`snapshot ${writeHeapSnapshot(line.slice(9))}`)
})

const broker = AmqpBroker.layer({ url })

const serve = async () => {
  const services = names.map((name) =>
    Service.make(ServiceContract.make(name, BenchRpcs), { handlers, queueType: "quorum", concurrency: serverConcurrency })
  )
  const runtime = ManagedRuntime.make(Layer.mergeAll(...services as [typeof services[0]]).pipe(Layer.provideMerge(broker)))
  await runtime.runPromise(Effect.void)
  say("ready")
}

const call = async () => {
  const [inFlight = "64", warmupMs = "500", durationMs = "2000", rate] = rest
  const runtime = ManagedRuntime.make(ServiceClient.layer.pipe(Layer.provideMerge(broker)))
  const clients = await Promise.all(names.map((name) => runtime.runPromise(ServiceClient.make(ServiceContract.make(name, BenchRpcs)))))
  for (const client of clients) await runtime.runPromise(client.add({ a: 1, b: 2 }))
  say("ready")
  await started
  let next = 0
  const add = () => clients[next++ % clients.length].add({ a: 1, b: 2 })
  if (rate !== undefined) {
    // paced: `rate` calls a second from `inFlight` fibers, each waiting its turn; a tick per second
    const interval = (1000 * Number(inFlight)) / Number(rate)
    let calls = 0
    let failed = 0
    let latencies = new Latencies()
    setInterval(() => {
      say(`tick ${JSON.stringify({ calls, failed, ...latencies.summary(), rss: process.memoryUsage().rss })}`)
      calls = 0
      failed = 0
      latencies = new Latencies()
    }, 1000)
    const fiber = Effect.gen(function*() {
      while (true) {
        const t0 = performance.now()
        const exit = yield* Effect.exit(add())
        const took = performance.now() - t0
        if (exit._tag === "Success") {
          calls++
          latencies.record(took)
        } else failed++
        if (took < interval) yield* Effect.sleep(interval - took)
      }
    })
    await runtime.runPromise(Effect.all(Array.from({ length: Number(inFlight) }, () => fiber), { concurrency: "unbounded" }))
    return
  }
  const drive = (ms: number) =>
    Effect.suspend(() => {
      const latencies = new Latencies()
      const sample: Array<number> = []
      let calls = 0
      const start = performance.now()
      const end = start + ms
      const worker = Effect.gen(function*() {
        while (performance.now() < end) {
          const t0 = performance.now()
          yield* add()
          const took = performance.now() - t0
          latencies.record(took)
          if (calls++ % 8 === 0) sample.push(took)
        }
      })
      return Effect.map(
        Effect.all(Array.from({ length: Number(inFlight) }, () => worker), { concurrency: "unbounded", discard: true }),
        () => ({ calls, elapsedMs: performance.now() - start, ...latencies.summary(), sample })
      )
    })
  await runtime.runPromise(drive(Number(warmupMs)))
  const result = await runtime.runPromise(drive(Number(durationMs)))
  say(`result ${JSON.stringify(result)}`)
  await runtime.dispose()
}

const subscribe = async () => {
  let handled = 0
  const source = names[0]
  const Subscriber = Service.make(ServiceContract.make(`${source}-sub`, BenchRpcs), {
    handlers,
    queueType: "quorum",
    concurrency: serverConcurrency,
    entrypoints: [
      Event.handle(tickOf(source), { delivery: "pool", queueType: "quorum", concurrency: serverConcurrency }, () =>
        Effect.sync(() => {
          handled++
        }))
    ]
  })
  const runtime = ManagedRuntime.make(Subscriber.pipe(Layer.provideMerge(broker)))
  await runtime.runPromise(Effect.void)
  say("ready")
  setInterval(() => say(`handled ${handled}`), 100)
}

const publish = async () => {
  const [count = "5000", inFlight = "64"] = rest
  const event = tickOf(names[0])
  const runtime = ManagedRuntime.make(broker)
  await runtime.runPromise(Event.publish(event, { seq: -1 }))
  say("ready")
  await started
  const start = performance.now()
  let next = 0
  const publisher = Effect.gen(function*() {
    while (next < Number(count)) yield* Event.publish(event, { seq: next++ })
  })
  await runtime.runPromise(Effect.all(Array.from({ length: Number(inFlight) }, () => publisher), { concurrency: "unbounded", discard: true }))
  say(`published ${performance.now() - start}`)
}

const roles: Record<string, () => Promise<void>> = { server: serve, client: call, subscriber: subscribe, publisher: publish }
const run = roles[role]
if (run === undefined) {
  console.error(`scaleWorker.ts: no role '${role}' (server, client, subscriber, publisher)`)
  process.exit(2)
}
run().catch((error: unknown) => {
  console.error(error)
  process.exit(1)
})
