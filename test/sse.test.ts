/**
 * Server-Sent Events on real sockets: the hub's channels streamed to an SSE client in order (over the
 * memory broker and RabbitMQ), and an external SSE endpoint read into the mesh with reconnection.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Layer, Queue, Schedule, Schema, Stream } from "effect"
import { FetchHttpClient, HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import { Rpc, RpcGroup } from "effect/rpc"
import { AmqpBroker, Event, HttpGateway, Hub, MemoryBroker, Service, ServiceClient, ServiceContract, Sse } from "effect-mesh"
import type { Broker } from "effect-mesh"
import type { BrokerError } from "effect-mesh/Broker"
import { amqpUrl } from "./fixtures/amqpUrl.ts"

const edge = (broker: Layer.Layer<Broker.Broker, BrokerError>) =>
  Sse.layerHub({ heartbeat: "50 millis" }).pipe(
    Layer.provideMerge(HttpGateway.layer({ port: 0, disableLogger: true })),
    Layer.provideMerge(Hub.layer),
    Layer.provideMerge(ServiceClient.layer),
    Layer.provideMerge(Layer.fresh(broker)),
    Layer.provideMerge(FetchHttpClient.layer)
  )

const inOrder = (broker: Layer.Layer<Broker.Broker, BrokerError>) =>
  Effect.gen(function*() {
    const url = yield* HttpGateway.url
    const received = yield* Queue.unbounded<Sse.Received<string>>()
    const reader = yield* Sse.source(`${url}/sse/prices`, { reconnect: false }).pipe(
      Stream.runForEach((event) => Queue.offer(received, event)),
      Effect.forkChild
    )
    const connected = yield* Queue.take(received)
    assert.strictEqual(connected.event, "connected")
    for (let i = 1; i <= 50; i++) yield* Hub.broadcast("prices", "price", { i })
    const events = yield* Effect.forEach(Array.from({ length: 50 }), () => Queue.take(received))
    assert.deepStrictEqual(events.map((e) => e.event), Array.from({ length: 50 }, () => "price"))
    assert.deepStrictEqual(events.map((e) => JSON.parse(e.data).i), Array.from({ length: 50 }, (_, i) => i + 1))
    assert.deepStrictEqual(events.map((e) => e.id), Array.from({ length: 50 }, (_, i) => String(i)))
    yield* Fiber.interrupt(reader)
  }).pipe(Effect.provide(edge(broker)))

describe("Sse.layerHub", () => {
  it.live("an SSE client receives a channel's broadcasts in order (memory broker)", () => inOrder(MemoryBroker.layer))
  it.live("an SSE client receives a channel's broadcasts in order (RabbitMQ)", () =>
    inOrder(AmqpBroker.layer({ url: amqpUrl() })))
  it.live("an invalid channel is 400", () =>
    Effect.gen(function*() {
      const url = yield* HttpGateway.url
      const error = yield* Effect.flip(Stream.runCollect(Sse.source(`${url}/sse/${encodeURIComponent("no spaces")}`, { reconnect: false })))
      assert.include(error.message, "400")
    }).pipe(Effect.provide(edge(MemoryBroker.layer))))
})

/** an external SSE endpoint: three events after the client's Last-Event-ID, a retry hint, then it hangs up */
const Feed = HttpRouter.add(
  "GET",
  "/feed",
  Effect.map(HttpServerRequest.HttpServerRequest, (request) => {
    const last = Number(request.headers["last-event-id"] ?? "0")
    const events = [1, 2, 3].map((k) => `id: ${last + k}\nevent: tick\ndata: {"n":${last + k}}\n\n`).join("")
    return HttpServerResponse.text(`${events}retry: 10\n\n`, { contentType: "text/event-stream" })
  })
)

describe("Sse.source and Sse.entrypoint", () => {
  it.live("a source reconnects with Last-Event-ID and yields every event once, in order", () =>
    Effect.gen(function*() {
      const url = yield* HttpGateway.url
      const events = yield* Sse.source(`${url}/feed`, { reconnect: Schedule.spaced("10 millis") }).pipe(
        Stream.take(9),
        Stream.runCollect
      )
      assert.deepStrictEqual(Array.from(events, (e) => e.id), ["1", "2", "3", "4", "5", "6", "7", "8", "9"])
      assert.deepStrictEqual(Array.from(events, (e) => e.event), Array.from({ length: 9 }, () => "tick"))
    }).pipe(Effect.provide(Feed.pipe(Layer.provideMerge(edge(MemoryBroker.layer))))))

  it.live("an entrypoint feeds an external SSE endpoint into the mesh (here: to the hub)", () =>
    Effect.gen(function*() {
      const url = yield* HttpGateway.url
      const Ticker = ServiceContract.make(`ticker-${crypto.randomUUID().slice(0, 8)}`, RpcGroup.make(Rpc.make("ping")))
      const hub = yield* Hub.Hub
      const ticks = yield* hub.subscribe("ticks")
      yield* Layer.build(Service.make(Ticker, {
        handlers: { ping: () => Effect.void },
        entrypoints: [
          Sse.entrypoint("feed", {
            url: `${url}/feed`,
            schema: Schema.fromJsonString(Schema.Struct({ n: Schema.Number })),
            reconnect: Schedule.spaced("10 millis")
          }, (event) => Hub.broadcast("ticks", "tick", { n: event.data.n, id: event.id ?? "" }).pipe(Effect.orDie))
        ]
      }))
      const got = yield* ticks.pipe(Stream.take(6), Stream.runCollect)
      assert.deepStrictEqual(Array.from(got, (m) => (m.data as { n: number }).n), [1, 2, 3, 4, 5, 6])
    }).pipe(Effect.scoped, Effect.provide(Feed.pipe(Layer.provideMerge(edge(MemoryBroker.layer))))))
})

describe("Sse.layerEvent", () => {
  const OrderPlaced = Event.make(`shop-${crypto.randomUUID().slice(0, 8)}`, "order_placed", Schema.Struct({
    id: Schema.String,
    total: Schema.Number
  }))

  const streamsInOrder = (broker: Layer.Layer<Broker.Broker, BrokerError>) =>
    Effect.gen(function*() {
      const url = yield* HttpGateway.url
      const received = yield* Queue.unbounded<Sse.Received<string>>()
      yield* Sse.source(`${url}/sse/orders`, { reconnect: false }).pipe(
        Stream.runForEach((event) => Queue.offer(received, event)),
        Effect.forkScoped
      )
      assert.strictEqual((yield* Queue.take(received)).event, "connected")
      for (let i = 1; i <= 20; i++) yield* Event.publish(OrderPlaced, { id: `o-${i}`, total: i })
      const events = yield* Effect.forEach(Array.from({ length: 20 }), () => Queue.take(received))
      assert.deepStrictEqual(events.map((e) => e.event), Array.from({ length: 20 }, () => "order_placed"))
      assert.deepStrictEqual(
        events.map((e) => JSON.parse(e.data)),
        Array.from({ length: 20 }, (_, i) => ({ id: `o-${i + 1}`, total: i + 1 }))
      )
    }).pipe(Effect.scoped, Effect.provide(Sse.layerEvent(OrderPlaced, { path: "/sse/orders" }).pipe(Layer.provideMerge(edge(broker)))))

  it.live("streams a mesh event to SSE clients in order (memory broker)", () => streamsInOrder(MemoryBroker.layer))
  it.live("streams a mesh event to SSE clients in order (RabbitMQ)", () => streamsInOrder(AmqpBroker.layer({ url: amqpUrl() })))
})
