import { Context, Effect, Layer, Stream } from "effect"
import type { Scope } from "effect"
import { Event, Service } from "effect-mesh"
import type { Broker, BrokerError } from "effect-mesh/Broker"
import { describe, expect, it } from "tstyche"
import { Billing, Order, OrderPlaced, PriceChanged } from "../examples/events/contract.ts"

class Ledger extends Context.Service<Ledger, { readonly charge: (total: number) => Effect.Effect<void> }>()(
  "dtslint/Ledger"
) {}

const ping = { ping: () => Effect.succeed("pong") }

describe("Event.make", () => {
  it("keeps the source, the type and the schema in the event's type", () => {
    expect(OrderPlaced).type.toBe<Event.Event<"shop", "order_placed", typeof Order>>()
    expect<Event.Payload<typeof OrderPlaced>>().type.toBe<Order>()
    expect<Event.Payload<typeof PriceChanged>>().type.toBe<{ readonly item: string; readonly price: number }>()
  })
})

describe("Event.publish", () => {
  it("takes the payload the schema describes", () => {
    expect(Event.publish).type.toBeCallableWith(PriceChanged, { item: "tea", price: 5 })
    expect(Event.publish).type.toBeCallableWith(OrderPlaced, { id: "o-1", item: "tea", total: 12 })
    expect(Event.publish).type.not.toBeCallableWith(PriceChanged, { item: "tea", price: "5" })
    expect(Event.publish).type.not.toBeCallableWith(PriceChanged, { item: "tea" })
    expect(Event.publish).type.not.toBeCallableWith(OrderPlaced, { id: 1, item: "tea", total: 12 })
  })

  it("fails with EventError and needs the broker", () => {
    expect(Event.publish(PriceChanged, { item: "tea", price: 5 })).type.toBe<
      Effect.Effect<void, Event.EventError, Broker>
    >()
  })
})

describe("Event.handle", () => {
  it("hands the handler the decoded payload and its metadata", () => {
    Event.handle(OrderPlaced, {}, (order, metadata) => {
      expect(order).type.toBe<Order>()
      expect(metadata).type.toBe<Event.Metadata>()
      return Effect.void
    })
    Event.handle(PriceChanged, { delivery: "broadcast" }, ({ price }) => {
      expect(price).type.toBe<number>()
      return Effect.void
    })
  })

  it("puts the handler's requirements into the Service.make Layer", () => {
    const layer = Service.make(Billing, {
      handlers: ping,
      entrypoints: [
        Event.handle(OrderPlaced, { delivery: "pool" }, (order) => Effect.flatMap(Ledger, (l) => l.charge(order.total)))
      ]
    })
    expect(layer).type.toBe<Layer.Layer<never, BrokerError, Broker | Ledger>>()
  })

  it("requires only the broker when the handlers need nothing, and never a Scope", () => {
    const layer = Service.make(Billing, {
      handlers: ping,
      entrypoints: [
        Event.handle(OrderPlaced, {}, () => Effect.void),
        Event.handle(PriceChanged, { delivery: "singleton" }, () => Effect.flatMap(Effect.scope, () => Effect.void))
      ]
    })
    expect(layer).type.toBe<Layer.Layer<never, BrokerError, Broker>>()
  })

  it("accepts `reliable` only for broadcast", () => {
    const handler = () => Effect.void
    expect(Event.handle).type.toBeCallableWith(
      OrderPlaced,
      { delivery: "broadcast" as const, reliable: { instanceId: "cache-1" } },
      handler
    )
    expect(Event.handle).type.not.toBeCallableWith(
      OrderPlaced,
      { delivery: "pool" as const, reliable: { instanceId: "cache-1" } },
      handler
    )
    expect(Event.handle).type.not.toBeCallableWith(OrderPlaced, { delivery: "everyone" as const }, handler)
  })
})

describe("Event.subscribe", () => {
  it("hands a Stream of received events, and adds what the consumer requires", () => {
    const entrypoint = Event.subscribe(OrderPlaced, {}, (orders) => {
      expect(orders).type.toBe<Stream.Stream<Event.Received<Order>, BrokerError>>()
      return orders.pipe(Stream.runForEach((o) => o.handle((order) => Effect.flatMap(Ledger, (l) => l.charge(order.total)))))
    })
    expect(entrypoint).type.toBe<Service.Entrypoint<BrokerError, Broker | Ledger>>()
  })

  it("runs Received.handle without a Scope requirement", () => {
    Event.subscribe(OrderPlaced, {}, (orders) =>
      orders.pipe(Stream.runForEach((o) => {
        const handled = o.handle(() => Effect.scope)
        expect(handled).type.toBe<Effect.Effect<void, never, never>>()
        expect(handled).type.not.toBe<Effect.Effect<void, never, Scope.Scope>>()
        return handled
      })))
  })
})
