/**
 * The limits of the edge, on real sockets: header lines and the head's size (431), the body (413),
 * a WebSocket message (closed with 1009), an SSE source's lines and events (`SseSourceError`), each
 * from its option or from the configuration, and the edge serving on after each.
 */
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Exit, Layer, Stream } from "effect"
import { FetchHttpClient, HttpRouter, HttpServerResponse } from "effect/http"
import { HttpGateway, Hub, Mesh, MemoryBroker, Service, ServiceClient, ServiceContract, Sse, WebSocketGateway } from "effect-mesh"
import { connect } from "node:net"
import WebSocket from "ws"
import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Rpc, RpcGroup } from "effect/rpc"
import { Schema } from "effect"
import { freePort } from "./fixtures/freePort.ts"

class AddRpcs extends RpcGroup.make(
  Rpc.make("add", { payload: { a: Schema.Number, b: Schema.Number }, success: Schema.Number })
) {}

/** a calculator that adds, under a fresh name */
const calculator = () => {
  const math = ServiceContract.make(`limits-${suffix()}`, AddRpcs)
  return { math, live: Service.make(math, { handlers: { add: ({ a, b }) => Effect.succeed(a + b) } }) }
}

const suffix = () => crypto.randomUUID().slice(0, 8)

/** a route that answers `ok`, and SSE feeds with a long line, a large event, and small events */
const Routes = Layer.mergeAll(
  HttpRouter.add("GET", "/ok", Effect.succeed(HttpServerResponse.text("ok"))),
  HttpRouter.add(
    "GET",
    "/feed/long-line",
    Effect.succeed(HttpServerResponse.text(`data: ${"x".repeat(3000)}\n\n`, { contentType: "text/event-stream" }))
  ),
  HttpRouter.add(
    "GET",
    "/feed/large-event",
    Effect.succeed(HttpServerResponse.text(`${"data: 0123456789\n".repeat(300)}\n`, { contentType: "text/event-stream" }))
  ),
  HttpRouter.add(
    "GET",
    "/feed/small",
    Effect.succeed(HttpServerResponse.text(`${"data: 0123456789\n".repeat(10)}\nid: 2\ndata: two\n\n`, { contentType: "text/event-stream" }))
  )
)

/** the routes above and the RPC gateway to a calculator (`POST /rpc/<name>/add` reads its body) */
const server = (options: Omit<HttpGateway.Options, "port">, c = calculator()) =>
  Routes.pipe(
    Layer.provideMerge(c.live),
    Layer.provideMerge(HttpGateway.layer({ port: 0, disableLogger: true, contracts: [c.math], ...options })),
    Layer.provide(ServiceClient.layer),
    Layer.provide(MemoryBroker.layer)
  )

/** one request written as it is (headers exactly as given), and the status line of its answer */
const raw = (url: string, head: string, body = "") =>
  Effect.callback<{ readonly status: number; readonly text: string }, Error>((resume) => {
    const { hostname, port } = new URL(url)
    const socket = connect(Number(port), hostname === "localhost" ? "127.0.0.1" : hostname)
    let text = ""
    socket.on("data", (data) => (text += data.toString("latin1")))
    socket.on("error", (error) => resume(Effect.fail(error)))
    socket.on("close", () => resume(Effect.succeed({ status: Number(text.slice(9, 12)), text })))
    socket.write(`${head}Connection: close\r\n\r\n${body}`)
  })

const post = (path: string, length: number) =>
  `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\n`


const headerLines = (n: number) => Array.from({ length: n }, (_, i) => `X-H${i}: ${i}\r\n`).join("")

describe("limits at the edge", () => {
  it.live("header lines over maxHeaderCount get 431 RequestHeaderFieldsTooLarge; a head over maxHeaderSize 431", () =>
    Effect.gen(function*() {
      const url = yield* HttpGateway.url
      // Host and Connection count: 8 lines in all is the limit
      const at = yield* raw(url, `GET /ok HTTP/1.1\r\nHost: x\r\n${headerLines(6)}`)
      assert.strictEqual(at.status, 200, at.text)
      const over = yield* raw(url, `GET /ok HTTP/1.1\r\nHost: x\r\n${headerLines(7)}`)
      assert.strictEqual(over.status, 431, over.text)
      assert.include(over.text, `"_tag":"RequestHeaderFieldsTooLarge"`)
      assert.include(over.text, "more than 8 header lines")
      const large = yield* raw(url, `GET /ok HTTP/1.1\r\nHost: x\r\nX-Big: ${"b".repeat(2100)}\r\n`)
      assert.strictEqual(large.status, 431, large.text.slice(0, 200))
      const fits = yield* raw(url, `GET /ok HTTP/1.1\r\nHost: x\r\nX-Big: ${"b".repeat(1500)}\r\n`)
      assert.strictEqual(fits.status, 200, fits.text)
    }).pipe(Effect.provide(server({ maxHeaderCount: 8, maxHeaderSize: 2048 }))))

  it.live("the defaults: 100 header lines, 16 KiB of head, 1 MiB of body", () => {
    const c = calculator()
    return Effect.gen(function*() {
      const url = yield* HttpGateway.url
      assert.strictEqual((yield* raw(url, `GET /ok HTTP/1.1\r\nHost: x\r\n${headerLines(98)}`)).status, 200)
      assert.strictEqual((yield* raw(url, `GET /ok HTTP/1.1\r\nHost: x\r\n${headerLines(99)}`)).status, 431)
      assert.strictEqual((yield* raw(url, `GET /ok HTTP/1.1\r\nHost: x\r\nX-Big: ${"b".repeat(16 * 1024)}\r\n`)).status, 431)
      assert.strictEqual((yield* raw(url, `GET /ok HTTP/1.1\r\nHost: x\r\nX-Big: ${"b".repeat(15 * 1024)}\r\n`)).status, 200)
      const body = JSON.stringify({ a: 1, b: 2, pad: "x".repeat(1024 * 1024) })
      const tooLarge = yield* raw(url, post(`/rpc/${c.math.name}/add`, body.length), body)
      assert.strictEqual(tooLarge.status, 413, tooLarge.text.slice(0, 200))
      const fits = JSON.stringify({ a: 1, b: 2, pad: "x".repeat(1024 * 1000) })
      assert.strictEqual((yield* raw(url, post(`/rpc/${c.math.name}/add`, fits.length), fits)).status, 200)
    }).pipe(Effect.provide(server({}, c)))
  })

  it.live("the limits from the configuration (HTTP_MAX_HEADER_COUNT, HTTP_MAX_HEADER_SIZE, HTTP_MAX_BODY_SIZE, WS_MAX_MESSAGE_SIZE), from a config file's keys", () =>
    Effect.gen(function*() {
      const port = yield* freePort
      const dir = mkdtempSync(join(tmpdir(), "mesh-limits-"))
      const path = join(dir, "mesh.yaml")
      writeFileSync(
        path,
        `http:\n  port: ${port}\n  host: 127.0.0.1\n  maxHeaderCount: 6\n  maxHeaderSize: 1 KiB\n  maxBodySize: 100\nws:\n  maxMessageSize: 50\n`
      )
      const c = calculator()
      const url = `http://127.0.0.1:${port}`
      const add = (extra: string, payload: string) =>
        raw(url, `${post(`/rpc/${c.math.name}/add`, payload.length)}${extra}`, payload)
      const small = JSON.stringify({ a: 1, b: 2 })
      yield* Effect.gen(function*() {
        // Host, Content-Type, Content-Length and Connection count
        const at = yield* add(headerLines(2), small)
        assert.strictEqual(at.status, 200, at.text)
        assert.strictEqual((yield* add(headerLines(3), small)).status, 431)
        assert.strictEqual((yield* add(`X-Big: ${"b".repeat(1100)}\r\n`, small)).status, 431)
        const padded = JSON.stringify({ a: 1, b: 2, pad: "p".repeat(100) })
        const body = yield* add("", padded)
        assert.strictEqual(body.status, 413, body.text)
        assert.include(body.text, "PayloadTooLarge")
        const closed = yield* wsClose(`ws://127.0.0.1:${port}/ws`, JSON.stringify({ method: `${c.math.name}.add`, data: { a: 1, b: 2, pad: "p".repeat(60) } }))
        assert.strictEqual(closed.code, 1009)
      }).pipe(
        Effect.provide(Mesh.layerConfig(c.live, { config: path, http: { disableLogger: true } })),
        Effect.provideService(ConfigProvider.ConfigProvider, ConfigProvider.fromUnknown({}))
      )
    }))

  it.live("a WebSocket message over maxWebSocketMessageSize closes its socket with 1009 (Message Too Big); the gateway serves the next", () => {
    const c = calculator()
    return Effect.gen(function*() {
      const url = (yield* HttpGateway.url).replace(/^http/, "ws") + "/ws"
      const big = JSON.stringify({ method: `${c.math.name}.add`, data: { a: 1, b: 2, pad: "p".repeat(2000) }, correlation_id: "big" })
      const closed = yield* wsClose(url, big)
      assert.strictEqual(closed.code, 1009)
      assert.deepStrictEqual(closed.frames, [], "no answer to the message over the limit")
      const fits = JSON.stringify({ method: `${c.math.name}.add`, data: { a: 1, b: 2, pad: "p".repeat(900) }, correlation_id: "fits" })
      const answered = yield* wsClose(url, fits)
      assert.deepInclude(answered.frames, { type: "result", success: true, data: 3, correlation_id: "fits" })
    }).pipe(
      Effect.provide(
        WebSocketGateway.layer({ contracts: [c.math] }).pipe(
          Layer.provideMerge(c.live),
          Layer.provideMerge(HttpGateway.layer({ port: 0, disableLogger: true, maxWebSocketMessageSize: 1000 })),
          Layer.provideMerge(Hub.layer),
          Layer.provideMerge(ServiceClient.layer),
          Layer.provideMerge(MemoryBroker.layer)
        )
      )
    )
  })

  it.live("an SSE source fails with LineTooLong / EventTooLarge past its limits, and reads events within them", () =>
    Effect.gen(function*() {
      const url = yield* HttpGateway.url
      const read = (path: string, options?: Sse.SourceOptions) =>
        Effect.exit(Stream.runCollect(Sse.source(`${url}${path}`, { reconnect: false, ...options })))
      const reason = (exit: Exit.Exit<unknown, Sse.SseSourceError>) =>
        Exit.isFailure(exit) ? exit.cause.reasons.map((r) => r._tag === "Fail" ? r.error.reason : r._tag).join() : "success"
      assert.strictEqual(reason(yield* read("/feed/long-line", { maxLineSize: 1000 })), "LineTooLong")
      assert.strictEqual(reason(yield* read("/feed/large-event", { maxEventSize: 1000 })), "EventTooLarge")
      // the defaults (64 KiB a line, 1 MiB an event) let both through
      const long = yield* read("/feed/long-line")
      assert.strictEqual(Exit.isSuccess(long) ? long.value[0].data.length : -1, 3000)
      const large = yield* read("/feed/large-event")
      assert.strictEqual(Exit.isSuccess(large) ? large.value[0].data.length : -1, 300 * 11 - 1)
      const small = yield* read("/feed/small", { maxLineSize: 20, maxEventSize: 200 })
      assert.deepStrictEqual(Exit.isSuccess(small) ? small.value.map((e) => e.id) : [], [undefined, "2"])
    }).pipe(Effect.provide(server({})), Effect.provide(FetchHttpClient.layer)))
})

/** sends one message on a fresh socket; what came back before the socket closed, and its close code */
const wsClose = (url: string, message: string) =>
  Effect.callback<{ readonly code: number; readonly frames: ReadonlyArray<unknown> }, Error>((resume) => {
    const frames: Array<unknown> = []
    const socket = new WebSocket(url)
    socket.on("message", (data) => {
      const frame = JSON.parse(String(data)) as { readonly type?: string }
      if (frame.type === "result") {
        frames.push(frame)
        socket.close(1000)
      }
    })
    socket.once("open", () => socket.send(message))
    socket.once("close", (code) => resume(Effect.succeed({ code, frames })))
    socket.once("error", () => {})
  })
