import { Effect, Layer, Schema } from "effect"
import type { SqlClient, SqlError } from "effect/sql"
import { Event, Outbox, Service, Sql } from "effect-mesh"
import type { Broker } from "effect-mesh/Broker"
import { describe, expect, it } from "tstyche"
import { OrderPlaced, Orders, OutOfStock } from "../examples/sql/contract.ts"

declare const sqlError: SqlError.SqlError

describe("Sql.transaction", () => {
  it("needs a SqlClient; a SqlError past it is a defect, the other errors stay", () => {
    const body = Effect.fail(new OutOfStock({ item: "tea", left: 0 })).pipe(Effect.andThen(Effect.fail(sqlError)))
    expect(Sql.transaction(body)).type.toBe<Effect.Effect<never, OutOfStock, SqlClient.SqlClient>>()
  })

  it("transactional keeps a handler's parameters", () => {
    const handler = Sql.transactional((payload: { readonly id: string }, metadata: Event.Metadata) =>
      Effect.as(Effect.fail(sqlError), `${payload.id} ${metadata.attempt}`))
    expect(handler).type.toBe<
      (payload: { readonly id: string }, metadata: Event.Metadata) => Effect.Effect<string, never, SqlClient.SqlClient>
    >()
  })
})

describe("Sql.handlers", () => {
  it("types the handlers from the contract; each may fail with SqlError besides the contract's errors", () => {
    expect(Sql.handlers).type.toBeCallableWith(Orders, { place: ({ quantity }: { readonly quantity: number }) => Effect.fail(sqlError).pipe(Effect.as(void quantity)) })
    expect(Sql.handlers).type.not.toBeCallableWith(Orders, { place: () => Effect.fail("not the contract's error") })
    expect(Sql.handlers).type.not.toBeCallableWith(Orders, { place: ({ quantity }: { readonly quantity: string }) => Effect.log(quantity) })
    expect(Sql.handlers).type.not.toBeCallableWith(Orders, { cancel: () => Effect.void })
  })

  it("makes a service Layer that requires the SqlClient", () => {
    const live = Service.make(Orders, {
      handlers: Sql.handlers(Orders, { place: ({ item }) => item === "" ? Effect.fail(new OutOfStock({ item, left: 0 })) : Effect.void })
    })
    expect(live).type.toBeAssignableTo<Layer.Layer<never, unknown, Broker | SqlClient.SqlClient>>()
    expect(live).type.not.toBeAssignableTo<Layer.Layer<never, unknown, Broker>>()
  })
})

describe("Outbox", () => {
  it("publish takes the event's payload and needs only the SqlClient", () => {
    expect(Outbox.publish(OrderPlaced, { id: "o-1", item: "tea", quantity: 2 })).type.toBe<
      Effect.Effect<void, Event.EventError | SqlError.SqlError, SqlClient.SqlClient>
    >()
    expect(Outbox.publish).type.not.toBeCallableWith(OrderPlaced, { id: "o-1", item: "tea", quantity: "2" })
  })

  it("the relay needs the SqlClient and the broker", () => {
    expect(Outbox.layerRelay({ events: [OrderPlaced] })).type.toBe<
      Layer.Layer<never, SqlError.SqlError, SqlClient.SqlClient | Broker>
    >()
  })

  it("once keeps the handler's payload type and adds the SqlClient", () => {
    const Tick = Event.make("clock", "tick", Schema.Struct({ n: Schema.Int }))
    const entrypoint = Event.handle(Tick, {}, Outbox.once("ticks", (tick: { readonly n: number }) => Effect.succeed(tick.n)))
    expect(entrypoint).type.toBe<Service.Entrypoint<import("effect-mesh/Broker").BrokerError, Broker | SqlClient.SqlClient>>()
  })
})
