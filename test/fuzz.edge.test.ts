/**
 * Fuzzed inputs at the edge, on real sockets (one edge server on the embedded broker): HTTP bodies and
 * the headers the edge reads (the RPC gateway's JSON calls, effect/rpc's HTTP protocol, a service's
 * HTTP route), WebSocket frames (Nameko's framing and effect/rpc's protocol), and an SSE source reading
 * whatever a server sends. Every input is answered with a typed status or frame, never a 500 or a
 * dropped socket, and the edge serves a valid call after each. Seed and count: test/fixtures/fuzz.ts.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Layer, Option, Schema, Stream } from "effect"
import { FetchHttpClient, HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import type { HttpClient } from "effect/http"
import fc from "fast-check"
import { HttpEntrypoint, HttpGateway, Hub, MemoryBroker, Service, ServiceClient, ServiceContract, Sse, WebSocketGateway } from "effect-mesh"
import WebSocket from "ws"
import { headerValue, jsonText, parameters } from "./fixtures/fuzz.ts"
import { MathRpcs } from "./fixtures/services.ts"

const math = ServiceContract.make(`fuzz-edge-${crypto.randomUUID().slice(0, 8)}`, MathRpcs)

const MathLive = Service.make(math, {
  handlers: {
    add: ({ a, b }) => Effect.succeed(a + b),
    divide: ({ a, b }) => Effect.succeed(a / b),
    countdown: ({ from }) => Stream.range(0, Math.min(from, 3)).pipe(Stream.map((n) => Math.min(from, 3) - n)),
    sleep: () => Effect.succeed("slept"),
    crash: ({ message }) => Effect.die(new Error(message)),
    failUndeclared: () => Effect.succeed(0),
    whoami: () => Effect.succeed("fuzz"),
    numbers: ({ count }) => Stream.range(1, Math.min(count, 3))
  },
  entrypoints: [
    HttpEntrypoint.make({
      method: "POST",
      path: "/orders/:id",
      params: Schema.Struct({ id: Schema.FiniteFromString }),
      query: Schema.Struct({ verbose: Schema.optionalKey(Schema.Literals(["yes", "no"])) }),
      headers: Schema.Struct({ "x-tenant": Schema.optionalKey(Schema.NonEmptyString) }),
      body: Schema.Struct({ items: Schema.Array(Schema.Struct({ sku: Schema.String, qty: Schema.Int })) }),
      success: Schema.Struct({ id: Schema.Number, count: Schema.Number })
    }, ({ params, body }) => Effect.succeed({ id: params.id, count: body.items.length }))
  ]
})

/** a server that sends back, as an SSE stream, the bytes the test put in its query */
const Echo = HttpRouter.add(
  "GET",
  "/echo-sse",
  Effect.map(HttpServerRequest.HttpServerRequest, (request) =>
    HttpServerResponse.uint8Array(Buffer.from(new URL(request.url, "http://edge").searchParams.get("body") ?? "", "base64"), {
      contentType: "text/event-stream"
    }))
)

const layer = Layer.mergeAll(
  WebSocketGateway.layer({ contracts: [math] }).pipe(Layer.provide(Hub.layer)),
  MathLive,
  Echo
).pipe(
  Layer.provideMerge(HttpGateway.layer({ port: 0, disableLogger: true, contracts: [math], maxBodySize: 2000 })),
  Layer.provideMerge(ServiceClient.layer),
  Layer.provideMerge(MemoryBroker.layer),
  Layer.provideMerge(FetchHttpClient.layer)
)

/** header values fetch accepts (no line breaks, no characters above U+00FF) */
const headerText = headerValue.map((v) => String(v).replace(/[^\x20-\x7e]/g, "?"))

const edgeHeaders = fc.record({
  "content-type": fc.constantFrom("application/json", "text/plain", "application/x-www-form-urlencoded", ""),
  "x-correlation-id": headerText,
  "x-user-id": headerText,
  "x-mesh-context": fc.oneof(headerText, jsonText(fc.record({ deadline: fc.double(), callIdStack: fc.array(fc.string()), entries: fc.jsonValue() }, { requiredKeys: [] }).map((v) => v as unknown)).map((t) => t.replace(/[^\x20-\x7e]/g, "?"))),
  traceparent: headerText
}, { requiredKeys: [] })

const body = fc.oneof(
  jsonText(fc.oneof(fc.record({ a: fc.oneof(fc.double(), fc.string()), b: fc.double(), from: fc.integer(), count: fc.integer(), message: fc.string() }, { requiredKeys: [] }).map((v) => v as unknown), fc.jsonValue({ maxDepth: 3 }))),
  fc.uint8Array({ maxLength: 300 }).map((bytes) => Buffer.from(bytes).toString("latin1")),
  fc.constant("x".repeat(2500))
)

const methods = fc.constantFrom("add", "divide", "countdown", "crash", "whoami", "numbers", "nothing", "", "%2e%2e", "__proto__")

const post = (url: string, payload: string, headers: Record<string, string>) =>
  Effect.promise(async () => {
    const response = await fetch(url, { method: "POST", body: payload, headers })
    return { status: response.status, text: await response.text() }
  })

/** the edge still answers a valid call */
const stillServing = (base: string) =>
  Effect.map(post(`${base}/rpc/${math.name}/add`, `{"a":1,"b":2}`, { "content-type": "application/json" }), (r) =>
    assert.deepStrictEqual(r, { status: 200, text: "3" }))

describe("fuzzed inputs at the edge", () => {
  it.live("HTTP: JSON calls with any body and context headers get 200, 4xx with a typed body, or a stream; never 500", () =>
    Effect.gen(function*() {
      const base = yield* HttpGateway.url
      const context = yield* Effect.context<never>()
      yield* Effect.promise(() =>
        fc.assert(
          fc.asyncProperty(methods, body, edgeHeaders, (method, payload, headers) =>
            Effect.runPromiseWith(context)(Effect.gen(function*() {
              const { status, text } = yield* post(`${base}/rpc/${math.name}/${method}`, payload, headers)
              // `crash` dies on purpose: its defect is the one 500
              const expected = method === "crash" ? [200, 400, 404, 413, 500] : [200, 400, 404, 413, 422]
              assert.include(expected, status, `${status} ${text}`)
              if (status !== 200) assert.include(["InvalidPayload", "MethodNotFound", "PayloadTooLarge", "BadRequest", "NotFound", "RemoteDefect"], JSON.parse(text)._tag)
            }))),
          parameters(150)
        )
      )
      yield* stillServing(base)
    }).pipe(Effect.provide(layer)))

  it.live("HTTP: effect/rpc's protocol and a service's own route answer any body below 500", () =>
    Effect.gen(function*() {
      const base = yield* HttpGateway.url
      const context = yield* Effect.context<never>()
      const ndjson = fc.array(jsonText(fc.record({
        _tag: fc.constantFrom("Request", "Ack", "Interrupt", "Ping", "Eof", "x"),
        id: fc.oneof(fc.string(), fc.integer()),
        tag: fc.constantFrom("add", "countdown", "nothing"),
        payload: fc.jsonValue({ maxDepth: 2 }),
        headers: fc.oneof(fc.array(fc.tuple(fc.string(), fc.string()), { maxLength: 3 }), fc.jsonValue())
      }, { requiredKeys: [] }).map((v) => v as unknown)), { maxLength: 4 }).map((lines) => lines.join("\n")).chain((text) =>
        // over the edge's maxBodySize: effect/rpc's protocol dies of the body it cannot read; the edge answers 413
        fc.oneof({ weight: 5, arbitrary: fc.constant(text) }, { weight: 1, arbitrary: fc.constant(`${text}\n${" ".repeat(2500)}`) })
      )
      const orders = fc.record({
        id: fc.oneof(fc.integer().map(String), fc.constantFrom("x", "1e400", "NaN", "%20")),
        query: fc.oneof(fc.constant(""), fc.constantFrom("?verbose=yes", "?verbose=maybe", "?verbose=yes&verbose=no", "?%zz")),
        tenant: fc.oneof(fc.constant(undefined), headerText),
        payload: fc.oneof(body, jsonText(fc.record({ items: fc.array(fc.record({ sku: fc.oneof(fc.string(), fc.integer()), qty: fc.oneof(fc.integer(), fc.double()) }, { requiredKeys: [] }), { maxLength: 3 }) }, { requiredKeys: [] }).map((v) => v as unknown)))
      })
      yield* Effect.promise(() =>
        fc.assert(
          fc.asyncProperty(ndjson, orders, (rpcBody, order) =>
            Effect.runPromiseWith(context)(Effect.gen(function*() {
              const typed = yield* post(`${base}/rpc/${math.name}`, rpcBody, { "content-type": "application/ndjson" })
              assert.isBelow(typed.status, 500, typed.text)
              if (rpcBody.length > 2000) assert.strictEqual(typed.status, 413, typed.text)
              const headers: Record<string, string> = { "content-type": "application/json" }
              if (order.tenant !== undefined) headers["x-tenant"] = order.tenant
              const route = yield* post(`${base}/orders/${order.id}${order.query}`, order.payload, headers)
              assert.include([200, 400, 404, 413], route.status, route.text)
            }))),
          parameters(150)
        )
      )
      yield* stillServing(base)
    }).pipe(Effect.provide(layer)))

  it.live("WebSocket: every frame on a Nameko-framed socket gets exactly one result frame, and the socket stays open", () =>
    Effect.gen(function*() {
      const url = (yield* HttpGateway.url).replace(/^http/, "ws")
      const frame = fc.oneof(
        jsonText(fc.record({
          method: fc.oneof(methods.map((m) => `${math.name}.${m}`), fc.constantFrom("subscribe", "unsubscribe", "ghost.add", ".", ""), fc.string()),
          data: fc.oneof(fc.record({ a: fc.double(), b: fc.double(), from: fc.integer({ min: -2, max: 5 }), channel: fc.oneof(fc.string(), fc.constantFrom("prices", "a b")) }, { requiredKeys: [] }).map((v) => v as unknown), fc.jsonValue({ maxDepth: 2 })),
          correlation_id: fc.oneof(fc.string(), fc.integer(), fc.constant(null), fc.jsonValue())
        }, { requiredKeys: [] }).map((v) => v as unknown)),
        fc.string({ maxLength: 50 })
      )
      yield* Effect.promise(() =>
        fc.assert(
          fc.asyncProperty(fc.array(frame, { minLength: 1, maxLength: 8 }), (frames) => exchange(`${url}/ws`, frames).then(() => true)),
          parameters(60)
        )
      )
    }).pipe(Effect.provide(layer)))

  it.live("WebSocket: garbage on effect/rpc's protocol leaves the gateway serving typed clients", () =>
    Effect.gen(function*() {
      const url = (yield* HttpGateway.url).replace(/^http/, "ws")
      yield* Effect.promise(() =>
        fc.assert(
          fc.asyncProperty(fc.array(fc.oneof(jsonText(), fc.string({ maxLength: 40 })), { minLength: 1, maxLength: 5 }), (frames) =>
            sendAndClose(`${url}/rpc-ws/${math.name}`, frames)),
          parameters(40)
        )
      )
      const answered = yield* Effect.promise(() => exchange(`${url}/ws`, [JSON.stringify({ method: `${math.name}.add`, data: { a: 1, b: 2 }, correlation_id: "ok" })]))
      assert.deepInclude(answered, { type: "result", success: true, data: 3, correlation_id: "ok" })
      const base = yield* HttpGateway.url
      yield* stillServing(base)
    }).pipe(Effect.provide(layer)))

  it.live("SSE: a source reads whatever a server sends as events, or fails with SseSourceError", () =>
    Effect.gen(function*() {
      const base = yield* HttpGateway.url
      const context = yield* Effect.context<HttpClient.HttpClient>()
      const text = fc.array(fc.oneof(
        fc.string({ maxLength: 30 }),
        fc.constantFrom("data: x\n", "\n", "\r\n", "\r", "id: 1\n", "event: e\n", "retry: 10\n", ": c\n", "data\n", "\uFEFF", "id: \u0000\n", `data: ${"y".repeat(120)}\n`),
        fc.uint8Array({ maxLength: 20 }).map((b) => Buffer.from(b).toString("latin1"))
      ), { maxLength: 30 }).map((parts) => parts.join(""))
      yield* Effect.promise(() =>
        fc.assert(
          fc.asyncProperty(text, (sent) =>
            Effect.runPromiseWith(context)(Effect.gen(function*() {
              const url = `${base}/echo-sse?body=${encodeURIComponent(Buffer.from(sent, "utf8").toString("base64"))}`
              const exit = yield* Effect.exit(Stream.runCollect(Sse.source(url, { reconnect: false, maxLineSize: 100, maxEventSize: 300 })))
              if (Exit.isSuccess(exit)) {
                for (const event of exit.value) assert.isAtMost(event.data.length, 300)
                return
              }
              const error = Exit.findErrorOption(exit)
              assert.isTrue(Option.isSome(error), `a defect: ${String(exit.cause)}`)
              assert.include(["LineTooLong", "EventTooLarge"], Option.getOrThrow(error).reason)
            }))),
          parameters(150)
        )
      )
    }).pipe(Effect.provide(layer)))
})

type Frame = { readonly type?: string; readonly [key: string]: unknown }

/** sends the frames on a fresh socket; resolves with every frame received once each got its result */
const exchange = (url: string, frames: ReadonlyArray<string>) =>
  new Promise<ReadonlyArray<Frame>>((resolve, reject) => {
    const received: Array<Frame> = []
    const socket = new WebSocket(url)
    const timer = setTimeout(() => {
      socket.terminate()
      reject(new Error(`not every frame was answered within 10 s: sent ${JSON.stringify(frames)}, got ${JSON.stringify(received)}`))
    }, 10_000)
    socket.on("message", (data) => {
      received.push(JSON.parse(String(data)) as Frame)
      if (received.filter((f) => f.type === "result").length === frames.length) {
        clearTimeout(timer)
        socket.close(1000)
      }
    })
    socket.once("open", () => frames.forEach((f) => socket.send(f)))
    socket.once("close", (code) => {
      clearTimeout(timer)
      if (code === 1000) resolve(received)
      else reject(new Error(`the socket closed with ${code} after ${JSON.stringify(frames)}; got ${JSON.stringify(received)}`))
    })
    socket.once("error", reject)
  })

/** sends the frames on a fresh socket and closes it after a moment */
const sendAndClose = (url: string, frames: ReadonlyArray<string>) =>
  new Promise<void>((resolve, reject) => {
    const socket = new WebSocket(url)
    socket.once("open", () => {
      frames.forEach((f) => socket.send(f))
      setTimeout(() => socket.close(1000), 20)
    })
    socket.once("close", () => resolve())
    socket.once("error", reject)
  })
