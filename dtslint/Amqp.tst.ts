import { Context, Effect, Schema } from "effect"
import { Amqp, Service } from "effect-mesh"
import type { Broker, BrokerError } from "effect-mesh/Broker"
import { describe, expect, it } from "tstyche"

const Invoice = Schema.Struct({ id: Schema.String, total: Schema.Number })
const billing = { exchange: "billing", type: "topic" } as const

describe("Amqp", () => {
  it("consume hands the handler the schema's type and the message's metadata; its requirements become the entrypoint's", () => {
    class Books extends Context.Service<Books, { readonly book: (total: number) => Effect.Effect<void> }>()("Books") {}
    const entrypoint = Amqp.consume(Invoice, { ...billing, name: "invoices", pattern: "invoice.*" }, (invoice, metadata) => {
      expect(invoice).type.toBe<{ readonly id: string; readonly total: number }>()
      expect(metadata.routingKey).type.toBe<string>()
      expect(metadata.attempt).type.toBe<number>()
      return Effect.gen(function*() {
        const books = yield* Books
        yield* books.book(invoice.total)
      })
    })
    expect(entrypoint).type.toBe<Service.Entrypoint<BrokerError, Broker | Books>>()
    expect(Amqp.consume).type.not.toBeCallableWith(Invoice, { ...billing }, () => Effect.void)
    expect(Amqp.consume).type.not.toBeCallableWith(Invoice, { exchange: "x", type: "nonsense", name: "n" }, () => Effect.void)
  })

  it("publish takes the schema's input and fails with AmqpError", () => {
    expect(Amqp.publish(billing, "invoice.created", Invoice, { id: "i", total: 1 })).type.toBe<
      Effect.Effect<void, Amqp.AmqpError, Broker>
    >()
    expect(Amqp.publish).type.not.toBeCallableWith(billing, "invoice.created", Invoice, { id: "i", total: "1" })
  })

  it("a headers exchange's binding takes header values", () => {
    expect(Amqp.consume(Invoice, { exchange: "audit", type: "headers", name: "eu", arguments: { "x-match": "any", region: "eu" } }, () => Effect.void)).type.toBeAssignableTo<
      Service.Entrypoint<BrokerError, Broker>
    >()
  })
})
