/**
 * OpenTelemetry export from configuration alone: a mesh started by `Mesh.layerConfig` with
 * `OTEL_EXPORTER_OTLP_ENDPOINT` set sends its traces, logs and metrics over OTLP/HTTP to a receiver
 * this test runs. One request through the HTTP gateway to service A, which calls service B, which
 * publishes an event that service C handles, on RabbitMQ, is one trace tree; the log records of the
 * runs carry its trace id; the call metrics arrive too.
 */
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Layer, Schedule, Schema } from "effect"
import { Rpc, RpcGroup } from "effect/rpc"
import { Event, Mesh, Service, ServiceClient, ServiceContract } from "effect-mesh"
import { createServer, type Server } from "node:http"
import type { AddressInfo } from "node:net"
import { amqpUrl } from "./fixtures/amqpUrl.ts"
import { freePort } from "./fixtures/freePort.ts"

const suffix = () => crypto.randomUUID().slice(0, 8)


interface OtlpSpan {
  readonly traceId: string
  readonly spanId: string
  readonly parentSpanId?: string
  readonly name: string
}
interface OtlpLog {
  readonly traceId?: string
  readonly body?: { readonly stringValue?: string }
}

/** an OTLP/HTTP receiver (JSON): what it was sent, by signal */
const receiver = Effect.acquireRelease(
  Effect.callback<{ readonly server: Server; readonly received: Record<string, Array<unknown>> }>((resume) => {
    const received: Record<string, Array<unknown>> = { traces: [], logs: [], metrics: [] }
    const server = createServer((request, response) => {
      const chunks: Array<Buffer> = []
      request.on("data", (chunk: Buffer) => chunks.push(chunk))
      request.on("end", () => {
        const signal = (request.url ?? "").replace(/^\/v1\//, "")
        received[signal]?.push(JSON.parse(Buffer.concat(chunks).toString("utf8")))
        response.writeHead(200, { "content-type": "application/json" }).end("{}")
      })
    })
    server.listen(0, "127.0.0.1", () => resume(Effect.succeed({ server, received })))
  }),
  ({ server }) => Effect.callback<void>((resume) => void server.close(() => resume(Effect.void)))
)

const spansOf = (bodies: ReadonlyArray<unknown>): Array<OtlpSpan> =>
  bodies.flatMap((body) =>
    (body as { resourceSpans: Array<{ scopeSpans: Array<{ spans: Array<OtlpSpan> }> }> }).resourceSpans
      .flatMap((r) => r.scopeSpans.flatMap((s) => s.spans))
  )

const logsOf = (bodies: ReadonlyArray<unknown>): Array<OtlpLog> =>
  bodies.flatMap((body) =>
    (body as { resourceLogs: Array<{ scopeLogs: Array<{ logRecords: Array<OtlpLog> }> }> }).resourceLogs
      .flatMap((r) => r.scopeLogs.flatMap((s) => s.logRecords))
  )

const metricNamesOf = (bodies: ReadonlyArray<unknown>): Set<string> =>
  new Set(bodies.flatMap((body) =>
    (body as { resourceMetrics: Array<{ scopeMetrics: Array<{ metrics: Array<{ name: string }> }> }> }).resourceMetrics
      .flatMap((r) => r.scopeMetrics.flatMap((s) => s.metrics.map((m) => m.name)))
  ))

const serviceNameOf = (bodies: ReadonlyArray<unknown>): unknown =>
  (bodies[0] as { resourceSpans: Array<{ resource: { attributes: Array<{ key: string; value: { stringValue?: string } }> } }> })
    .resourceSpans[0].resource.attributes.find((a) => a.key === "service.name")?.value.stringValue

describe("OpenTelemetry export (OTEL_EXPORTER_OTLP_ENDPOINT)", () => {
  it.live("HTTP gateway -> service A -> service B -> event -> handler in service C: one trace tree, its logs, the metrics", () =>
    Effect.gen(function*() {
      const id = suffix()
      const Reserved = Event.make(`stock-${id}`, "reserved", Schema.Struct({ sku: Schema.String }))
      const b = ServiceContract.make(
        `stock-${id}`,
        RpcGroup.make(Rpc.make("reserve", { payload: { sku: Schema.String }, success: Schema.String }))
      )
      const a = ServiceContract.make(
        `orders-${id}`,
        RpcGroup.make(Rpc.make("order", { payload: { sku: Schema.String }, success: Schema.String }))
      )
      const c = ServiceContract.make(`mailer-${id}`, RpcGroup.make())
      let handled = 0
      const orders = Service.make(a, {
        handlers: Effect.gen(function*() {
          const stock = yield* ServiceClient.make(b)
          return { order: ({ sku }) => Effect.andThen(Effect.logInfo(`ordering ${sku}`), Effect.orDie(stock.reserve({ sku }))) }
        })
      })
      const stock = Service.make(b, {
        handlers: {
          reserve: ({ sku }) => Effect.as(Event.publish(Reserved, { sku }).pipe(Effect.orDie), `reserved ${sku}`)
        }
      })
      const mailer = Service.make(c, {
        handlers: {},
        entrypoints: [
          Event.handle(Reserved, {}, ({ sku }) =>
            Effect.andThen(Effect.logInfo(`mailing about ${sku}`), Effect.sync(() => handled++)))
        ]
      })
      const { server, received } = yield* receiver
      const port = (server.address() as AddressInfo).port
      const httpPort = yield* freePort
      const edge = yield* Effect.scoped(Effect.gen(function*() {
        const context = yield* Layer.build(
          Mesh.layerConfig([orders, stock, mailer], { port: httpPort, http: { disableLogger: true, host: "127.0.0.1" } })
            .pipe(Layer.provide(ConfigProvider.layer(ConfigProvider.fromUnknown({
              AMQP_URL: amqpUrl(),
              OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`,
              OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
              OTEL_BSP_SCHEDULE_DELAY: "100",
              OTEL_BLRP_SCHEDULE_DELAY: "100",
              OTEL_METRIC_EXPORT_INTERVAL: "200",
              OTEL_RESOURCE_ATTRIBUTES: "deployment.environment=test"
            }))))
        )
        yield* Effect.void.pipe(Effect.provideContext(context))
        const url = `http://127.0.0.1:${httpPort}`
        const response = yield* Effect.promise(() =>
          fetch(`${url}/rpc/${a.name}/order`, {
            method: "POST",
            body: JSON.stringify({ sku: "x-1" }),
            headers: { "content-type": "application/json" }
          }).then(async (r) => ({ status: r.status, body: await r.json() as unknown }))
        )
        assert.deepStrictEqual(response, { status: 200, body: "reserved x-1" })
        yield* Effect.sync(() => handled).pipe(
          Effect.repeat({ until: (n) => n === 1, schedule: Schedule.spaced("20 millis") }),
          Effect.timeout("10 seconds")
        )
        // the handler's span ends with its ack: wait for it to be exported
        yield* Effect.sync(() => spansOf(received["traces"])).pipe(
          Effect.repeat({
            until: (spans) => spans.some((s) => s.name === `${c.name}.event:${Reserved.source}.${Reserved.type}`),
            schedule: Schedule.spaced("50 millis")
          }),
          Effect.timeout("10 seconds")
        )
        return url
      }))
      assert.match(edge, /^http:\/\/127\.0\.0\.1:\d+$/)
      // closing the Layer flushed the rest
      const spans = spansOf(received["traces"])
      const byId = new Map(spans.map((s) => [s.spanId, s]))
      const handler = spans.find((s) => s.name === `${c.name}.event:${Reserved.source}.${Reserved.type}`)!
      const chain: Array<string> = []
      for (let span: OtlpSpan | undefined = handler; span !== undefined; span = byId.get(span.parentSpanId ?? "")) {
        chain.push(span.name)
        assert.strictEqual(span.traceId, handler.traceId)
      }
      // from the handler up to the HTTP request: every hop's span, parented across the wire
      const expected = [
        `${c.name}.event:${Reserved.source}.${Reserved.type}`,
        `${Reserved.source}.${Reserved.type} publish`,
        `${b.name}.reserve`,
        `${b.name}.reserve`,
        `${a.name}.order`,
        `${a.name}.order`
      ]
      assert.deepStrictEqual(chain.slice(0, expected.length), expected, chain.join(" <- "))
      assert.include(chain[chain.length - 1], "POST", chain.join(" <- "))
      assert.strictEqual(serviceNameOf(received["traces"]), `${a.name},${b.name},${c.name}`)
      // the runs' log records carry the trace id
      const logs = logsOf(received["logs"])
      for (const message of ["ordering x-1", "mailing about x-1"]) {
        const record = logs.find((l) => l.body?.stringValue === message)
        assert.isDefined(record, `no log record "${message}"`)
        assert.strictEqual(record!.traceId, handler.traceId, message)
      }
      // and the metrics
      const names = metricNamesOf(received["metrics"])
      for (const name of ["rpc.server.call.duration", "rpc.client.call.duration", "messaging.process.duration"]) {
        assert.isTrue(names.has(name), `${name} not in ${[...names].join(", ")}`)
      }
    }).pipe(Effect.scoped))

  it.live("OTEL_TRACES_SAMPLER: parentbased_traceidratio 0 exports no trace (a callee follows its caller), yet the logs and metrics", () =>
    Effect.gen(function*() {
      const id = suffix()
      const contract = ServiceContract.make(
        `sampled-${id}`,
        RpcGroup.make(Rpc.make("ping", { success: Schema.String }))
      )
      const pinged = Service.make(contract, {
        handlers: { ping: () => Effect.as(Effect.logInfo("pinged"), "pong") }
      })
      const { server, received } = yield* receiver
      const port = (server.address() as AddressInfo).port
      yield* Effect.gen(function*() {
        const client = yield* ServiceClient.make(contract)
        for (let i = 0; i < 20; i++) assert.strictEqual(yield* client.ping().pipe(Effect.withSpan("caller")), "pong")
      }).pipe(
        Effect.provide(Mesh.layerConfig([pinged]).pipe(Layer.provide(ConfigProvider.layer(ConfigProvider.fromUnknown({
          OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`,
          OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
          OTEL_TRACES_SAMPLER: "parentbased_traceidratio",
          OTEL_TRACES_SAMPLER_ARG: "0"
        })))))
      )
      // the Layer is closed: everything was flushed
      assert.deepStrictEqual(spansOf(received["traces"]), [])
      assert.strictEqual(logsOf(received["logs"]).filter((l) => l.body?.stringValue === "pinged").length, 20)
      assert.isTrue(metricNamesOf(received["metrics"]).has("rpc.server.call.duration"))
    }).pipe(Effect.scoped))
})
