import { Config, Context, Effect, Layer, Schema, Stream } from "effect"
import type { HttpClient, HttpRouter, HttpServer } from "effect/http"
import type { HttpServerResponse } from "effect/http"
import type { ServeError } from "effect/http/HttpServerError"
import { HttpEntrypoint, HttpGateway, Hub, Service, ServiceClient, Sse, WebSocketGateway } from "effect-mesh"
import type { Broker, BrokerError } from "effect-mesh/Broker"
import { describe, expect, it } from "tstyche"
import { Calculator } from "../examples/calculator/contract.ts"

class Order extends Schema.Class<Order>("dtslint/Order")({ id: Schema.Int, item: Schema.String }) {}
class OrderNotFound extends Schema.TaggedError<OrderNotFound>()("OrderNotFound", { id: Schema.Int }) {}
class Conflict extends Schema.TaggedError<Conflict>()("Conflict", {}) {}
class Orders extends Context.Service<Orders, { readonly find: (id: number) => Effect.Effect<Order, OrderNotFound> }>()(
  "dtslint/Orders"
) {}

describe("HttpEntrypoint.make", () => {
  it("types the handler's input from the schemas", () => {
    HttpEntrypoint.make({
      method: "GET",
      path: "/orders/:id",
      params: Schema.Struct({ id: Schema.FiniteFromString }),
      query: Schema.Struct({ verbose: Schema.optionalKey(Schema.String) }),
      headers: Schema.Struct({ "x-api-version": Schema.Literal("2") }),
      success: Order
    }, (input) => {
      expect(input.params).type.toBe<{ readonly id: number }>()
      expect(input.query).type.toBe<{ readonly verbose?: string }>()
      expect(input.headers).type.toBe<{ readonly "x-api-version": "2" }>()
      expect(input.body).type.toBe<undefined>()
      return Effect.succeed(new Order({ id: input.params.id, item: "book" }))
    })
    HttpEntrypoint.make({
      method: "POST",
      path: "/orders",
      body: Schema.Struct({ item: Schema.String })
    }, ({ body, params }) => {
      expect(body).type.toBe<{ readonly item: string }>()
      expect(params).type.toBe<undefined>()
      return Effect.void
    })
  })

  it("answers the success type, a Reply of it, or a response; nothing without a success schema", () => {
    const route = { method: "GET", path: "/orders", success: Order } as const
    HttpEntrypoint.make(route, () => Effect.succeed(new Order({ id: 1, item: "book" })))
    HttpEntrypoint.make(route, () => Effect.succeed(HttpEntrypoint.reply(new Order({ id: 1, item: "book" }), { status: 201 })))
    HttpEntrypoint.make(route, () => Effect.succeed({} as HttpServerResponse.HttpServerResponse))
    expect(HttpEntrypoint.make).type.not.toBeCallableWith(route, () => Effect.succeed({ id: "1" }))
    expect(HttpEntrypoint.make).type.not.toBeCallableWith(
      { method: "GET", path: "/orders" } as const,
      () => Effect.succeed(1)
    )
  })

  it("lets the handler fail only with the declared errors", () => {
    const route = { method: "GET", path: "/orders/:id", errors: { 404: OrderNotFound, 409: Conflict } } as const
    HttpEntrypoint.make(route, () => Effect.fail(new OrderNotFound({ id: 1 })))
    HttpEntrypoint.make(route, () => Effect.fail(new Conflict()))
    expect(HttpEntrypoint.make).type.not.toBeCallableWith(route, () => Effect.fail(new Error("boom")))
    expect(HttpEntrypoint.make).type.not.toBeCallableWith(
      { method: "GET", path: "/orders/:id" } as const,
      () => Effect.fail(new OrderNotFound({ id: 1 }))
    )
  })

  it("puts the handler's requirements and the router into the entrypoint's type", () => {
    const entrypoint = HttpEntrypoint.make(
      { method: "GET", path: "/orders/:id", params: Schema.Struct({ id: Schema.FiniteFromString }), success: Order, errors: { 404: OrderNotFound } },
      ({ params }) => Effect.flatMap(Orders, (orders) => orders.find(params.id))
    )
    expect(entrypoint).type.toBe<Service.Entrypoint<never, HttpRouter.HttpRouter | Orders>>()
    expect(HttpEntrypoint.layer(entrypoint)).type.toBe<Layer.Layer<never, never, HttpRouter.HttpRouter | Orders>>()
  })
})

describe("the edge's Layers", () => {
  it("HttpGateway: serves the router, calls over the mesh", () => {
    expect(HttpGateway.layer({ port: 8080, contracts: [Calculator] })).type.toBe<
      Layer.Layer<HttpRouter.HttpRouter | HttpServer.HttpServer, ServeError, ServiceClient.Transport>
    >()
    expect(HttpGateway.layerClient({ url: "http://localhost:8080" })).type.toBe<
      Layer.Layer<ServiceClient.Transport, never, HttpClient.HttpClient>
    >()
  })

  it("WebSocketGateway and Sse register on the router and need the hub", () => {
    expect(WebSocketGateway.layer({ contracts: [Calculator] })).type.toBe<
      Layer.Layer<never, never, HttpRouter.HttpRouter | ServiceClient.Transport | Hub.Hub>
    >()
    expect(Sse.layerHub()).type.toBe<Layer.Layer<never, never, HttpRouter.HttpRouter | Hub.Hub>>()
    expect(Hub.layer).type.toBe<Layer.Layer<Hub.Hub, BrokerError, Broker>>()
  })

  it("services broadcast with the broker alone", () => {
    expect(Hub.broadcast("news", "headline", { title: "hi" })).type.toBe<
      Effect.Effect<void, BrokerError | Hub.InvalidChannel, Broker>
    >()
    expect(Hub.broadcast).type.not.toBeCallableWith("news", "headline", { date: new Date() })
  })

  it("Sse.entrypoint decodes the data with its schema", () => {
    Sse.entrypoint(
      "ticks",
      { url: "http://example.com/ticks", schema: Schema.fromJsonString(Schema.Struct({ n: Schema.Number })) },
      (event) => {
        expect(event.data).type.toBe<{ readonly n: number }>()
        return Effect.void
      }
    )
  })
})

describe("limits at the edge", () => {
  it("the server takes its limits as options, sizes as bytes or with a unit", () => {
    expect(HttpGateway.layerServer).type.toBeCallableWith({
      port: 0,
      maxBodySize: "256 KiB",
      maxHeaderCount: 50,
      maxHeaderSize: 8192,
      maxWebSocketMessageSize: "64 KiB"
    })
    expect(HttpGateway.layerServer).type.not.toBeCallableWith({ port: 0, maxHeaderCount: "50" })
    expect(HttpGateway.layerServer).type.not.toBeCallableWith({ port: 0, maxWebSocketMessageSize: "big" })
  })

  it("limitsConfig reads the limits a configuration sets", () => {
    expect(HttpGateway.limitsConfig).type.toBe<
      Config.Config<
        Pick<HttpGateway.ServerOptions, "maxBodySize" | "maxHeaderCount" | "maxHeaderSize" | "maxWebSocketMessageSize">
      >
    >()
  })

  it("an SSE source's limits are options; its error says which one with a reason", () => {
    expect(Sse.source).type.toBeCallableWith("http://example.com/ticks", { maxLineSize: 4096, maxEventSize: 65536 })
    expect(Stream.runDrain(Sse.source("http://example.com/ticks"))).type.toBe<
      Effect.Effect<void, Sse.SseSourceError, HttpClient.HttpClient>
    >()
    expect<Sse.SseSourceError["reason"]>().type.toBe<"Request" | "Status" | "LineTooLong" | "EventTooLarge">()
  })
})
