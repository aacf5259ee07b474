/**
 * The WebSocket gateway on real sockets, with a `ws` client: Nameko's JSON framing (RPC and the hub),
 * effect/rpc's WebSocket protocol for typed clients, and broadcasts that cross RabbitMQ between
 * instances.
 */
import { NodeSocket } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Layer, Stream } from "effect"
import { FetchHttpClient } from "effect/http"
import { AmqpBroker, HttpGateway, Hub, MemoryBroker, ServiceClient, WebSocketGateway } from "effect-mesh"
import type { Broker } from "effect-mesh"
import type { BrokerError } from "effect-mesh/Broker"
import { amqpUrl } from "./fixtures/amqpUrl.ts"
import { notifier, notifierService } from "./fixtures/edgeServices.ts"
import { contracts, services } from "./fixtures/services.ts"
import { connectWs, event, result } from "./fixtures/wsClient.ts"

const suffix = () => crypto.randomUUID().slice(0, 8)

/** an edge instance: HTTP server, WebSocket routes, hub, client transport, on its own broker connection */
const edgeInstance = (
  broker: Layer.Layer<Broker.Broker, BrokerError>,
  contractList: ReadonlyArray<{ readonly name: string; readonly group: object }>
) =>
  WebSocketGateway.layer({ contracts: contractList as never, errorStatus: { DivisionByZero: 409 } }).pipe(
    Layer.provideMerge(HttpGateway.layerTest()),
    Layer.provideMerge(Hub.layer),
    Layer.provideMerge(ServiceClient.layer),
    Layer.provideMerge(Layer.fresh(broker)),
    Layer.provide(FetchHttpClient.layer)
  )

const wsUrl = (path: string) => Effect.map(HttpGateway.url, (url) => url.replace(/^http/, "ws") + path)

describe("WebSocketGateway over the memory broker", () => {
  const c = contracts(suffix())
  const n = notifier(suffix())
  const layer = Layer.mergeAll(services(c), notifierService(n, "solo")).pipe(
    Layer.provideMerge(edgeInstance(MemoryBroker.layer, [c.math, n]))
  )

  it.live("connected event, RPC results and errors in Nameko's framing", () =>
    Effect.gen(function*() {
      const ws = yield* connectWs(yield* wsUrl("/ws"))
      const connected = yield* ws.next(event("connected"))
      assert.isString((connected["data"] as { socket_id: string }).socket_id)
      yield* ws.send({ method: `${c.math.name}.add`, data: { a: 1, b: 2 }, correlation_id: "c1" })
      yield* ws.send({ method: `${c.math.name}.divide`, data: { a: 1, b: 0 }, correlation_id: "c2" })
      yield* ws.send({ method: `${c.math.name}.add`, data: { a: "x" }, correlation_id: "c3" })
      yield* ws.send({ method: `ghost.add`, data: {}, correlation_id: "c4" })
      assert.deepStrictEqual(yield* ws.next(result("c1")), { type: "result", success: true, data: 3, correlation_id: "c1" })
      const divide = yield* ws.next(result("c2"))
      assert.strictEqual(divide["success"], false)
      assert.deepInclude(divide["error"] as object, { _tag: "DivisionByZero", dividend: 1, status: 409 })
      const invalid = yield* ws.next(result("c3"))
      assert.strictEqual((invalid["error"] as { _tag: string })._tag, "InvalidPayload")
      const ghost = yield* ws.next(result("c4"))
      assert.strictEqual((ghost["error"] as { _tag: string })._tag, "ServiceNotFound")
    }).pipe(Effect.scoped, Effect.provide(layer)))

  it.live("a streaming method sends chunks, then its result", () =>
    Effect.gen(function*() {
      const ws = yield* connectWs(yield* wsUrl("/ws"))
      yield* ws.send({ method: `${c.math.name}.countdown`, data: { from: 2 }, correlation_id: "s1" })
      yield* ws.next(result("s1"))
      const chunks = ws.frames().filter((f) => f["type"] === "chunk").map((f) => f["data"])
      assert.deepStrictEqual(chunks, [2, 1, 0])
    }).pipe(Effect.scoped, Effect.provide(layer)))

  it.live("subscribers of a channel get its broadcasts, a socket gets its unicasts, others get neither", () =>
    Effect.gen(function*() {
      const alice = yield* connectWs(yield* wsUrl("/ws"))
      const bob = yield* connectWs(yield* wsUrl("/ws"))
      const bobId = ((yield* bob.next(event("connected")))["data"] as { socket_id: string }).socket_id
      yield* alice.send({ method: "subscribe", data: { channel: "news" }, correlation_id: "sub" })
      assert.strictEqual((yield* alice.next(result("sub")))["success"], true)
      yield* Hub.broadcast("news", "headline", { title: "hello" })
      const headline = yield* alice.next(event("headline"))
      assert.deepStrictEqual(headline, { type: "event", event: "headline", data: { title: "hello" }, channel: "news" })
      yield* alice.send({ method: `${n.name}.whisper`, data: { socketId: bobId, text: "psst" }, correlation_id: "w" })
      yield* alice.next(result("w"))
      const whisper = yield* bob.next(event("whisper"))
      assert.deepStrictEqual(whisper["data"], { text: "psst", from: "solo" })
      assert.isUndefined(bob.frames().find(event("headline")))
      assert.isUndefined(alice.frames().find(event("whisper")))
      yield* alice.send({ method: "subscribe", data: { channel: "bad channel!" }, correlation_id: "bad" })
      assert.strictEqual((yield* alice.next(result("bad")))["success"], false)
    }).pipe(Effect.scoped, Effect.provide(layer)))

  it.live("effect/rpc's WebSocket protocol: ServiceClient.make over one socket", () =>
    Effect.gen(function*() {
      const url = (yield* HttpGateway.url).replace(/^http/, "ws")
      yield* Effect.gen(function*() {
        const math = yield* ServiceClient.make(c.math)
        assert.strictEqual(yield* math.add({ a: 40, b: 2 }), 42)
        assert.strictEqual((yield* Effect.flip(math.divide({ a: 1, b: 0 })))._tag, "DivisionByZero")
        assert.deepStrictEqual(Array.from(yield* Stream.runCollect(math.countdown({ from: 2 }))), [2, 1, 0])
        assert.strictEqual((yield* Effect.flip(math.crash({ message: "boom" })))._tag, "RemoteDefect")
      }).pipe(
        Effect.provide(WebSocketGateway.layerClient({ url }).pipe(Layer.provide(NodeSocket.layerWebSocketConstructor)))
      )
    }).pipe(Effect.provide(layer)))
})

describe("Hub.contract over effect/rpc's WebSocket protocol", () => {
  const c = contracts(suffix())
  const layer = services(c).pipe(Layer.provideMerge(edgeInstance(MemoryBroker.layer, [c.math])))

  it.live("a typed client subscribes to a channel and gets its broadcasts as a Stream", () =>
    Effect.gen(function*() {
      const url = (yield* HttpGateway.url).replace(/^http/, "ws")
      yield* Effect.gen(function*() {
        const hub = yield* ServiceClient.make(Hub.contract)
        const first = yield* hub.subscribe({ channel: "typed" }).pipe(Stream.take(2), Stream.runCollect, Effect.forkChild)
        // the subscription is set up asynchronously: broadcast until it has been seen twice
        let i = 0
        while (first.pollUnsafe() === undefined && i < 200) {
          yield* Hub.broadcast("typed", "ping", { i: i++ })
          yield* Effect.sleep("20 millis")
        }
        const messages = Array.from(yield* Fiber.join(first))
        assert.strictEqual(messages.length, 2)
        assert.instanceOf(messages[0], Hub.Message)
        assert.strictEqual(messages[0].event, "ping")
        assert.strictEqual(messages[0].channel, "typed")
        const invalid = yield* Effect.flip(Stream.runCollect(hub.subscribe({ channel: "no spaces" })))
        assert.strictEqual(invalid._tag, "InvalidChannel")
      }).pipe(
        Effect.provide(WebSocketGateway.layerClient({ url }).pipe(Layer.provide(NodeSocket.layerWebSocketConstructor)))
      )
    }).pipe(Effect.provide(layer)))
})

describe("WebSocketGateway over RabbitMQ", () => {
  const c = contracts(suffix())
  const n = notifier(suffix())
  const broker = AmqpBroker.layer({ url: amqpUrl() })

  it.live("a ws client calls an RPC and gets a broadcast another instance sent through RabbitMQ, on every gateway", () =>
    Effect.gen(function*() {
      // the services run on their own connection: another instance, as far as the gateways know
      yield* Layer.build(
        Layer.mergeAll(services(c), notifierService(n, "instance-b")).pipe(
          Layer.provideMerge(ServiceClient.layer),
          Layer.provideMerge(Layer.fresh(broker))
        )
      )
      const gatewayA = yield* Layer.build(edgeInstance(broker, [c.math, n]))
      const gatewayC = yield* Layer.build(edgeInstance(broker, [c.math, n]))
      const urlA = yield* wsUrl("/ws").pipe(Effect.provide(gatewayA))
      const urlC = yield* wsUrl("/ws").pipe(Effect.provide(gatewayC))
      assert.notStrictEqual(urlA, urlC)

      const alice = yield* connectWs(urlA)
      const carol = yield* connectWs(urlC)
      yield* alice.send({ method: `${c.math.name}.add`, data: { a: 2, b: 3 }, correlation_id: "add" })
      assert.strictEqual((yield* alice.next(result("add")))["data"], 5)
      for (const ws of [alice, carol]) {
        yield* ws.send({ method: "subscribe", data: { channel: "orders" }, correlation_id: "sub" })
        assert.strictEqual((yield* ws.next(result("sub")))["success"], true)
      }
      yield* alice.send({
        method: `${n.name}.announce`,
        data: { channel: "orders", text: "order 42 shipped" },
        correlation_id: "announce"
      })
      assert.strictEqual((yield* alice.next(result("announce")))["data"], "instance-b")
      for (const ws of [alice, carol]) {
        const announcement = yield* ws.next(event("announcement"))
        assert.deepStrictEqual(announcement["data"], { text: "order 42 shipped", from: "instance-b" })
        assert.strictEqual(announcement["channel"], "orders")
      }
    }).pipe(Effect.scoped))
})
