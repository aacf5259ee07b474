/**
 * Raw AMQP: `node examples/amqp/main.ts` (set AMQP_URL to run it on RabbitMQ).
 *
 * A billing system outside the mesh publishes invoices to its own topic exchange, `billing`, as plain
 * JSON. The ledger service consumes `invoice.*` from it with a schema, as farine's `amqp.consume`
 * does: acked once booked, retried when booking fails, dead-lettered (with the reason) when the body is
 * not an invoice. Here the program publishes as that system would, with `Amqp.publish`.
 */
import { Deferred, Effect, Layer, Logger, Schema } from "effect"
import { Rpc, RpcGroup } from "effect/rpc"
import { Amqp, AmqpBroker, MemoryBroker, Service, ServiceContract } from "effect-mesh"

const Invoice = Schema.Struct({ id: Schema.String, customer: Schema.String, total: Schema.Number })

/** the billing system's exchange, as it declares it */
const billing = { exchange: "billing", type: "topic" } as const

class LedgerRpcs extends RpcGroup.make(Rpc.make("balance", { success: Schema.Number })) {}
const Ledger = ServiceContract.make("ledger", LedgerRpcs)

const program = Effect.gen(function*() {
  const booked = yield* Deferred.make<void>()
  let balance = 0
  const LedgerLive = Service.make(Ledger, {
    handlers: { balance: () => Effect.sync(() => balance) },
    entrypoints: [
      Amqp.consume(Invoice, { ...billing, name: "invoices", pattern: "invoice.*" }, (invoice, metadata) =>
        Effect.gen(function*() {
          balance += invoice.total
          yield* Effect.logInfo(`booked ${invoice.id} for ${invoice.customer} (${metadata.routingKey}): balance ${balance}`)
          if (balance >= 60) yield* Deferred.succeed(booked, undefined)
        }))
    ]
  })
  const url = process.env["AMQP_URL"]
  const broker = url === undefined ? MemoryBroker.layer : AmqpBroker.layer({ url })
  yield* Effect.gen(function*() {
    yield* Amqp.publish(billing, "invoice.created", Invoice, { id: "i-1", customer: "ada", total: 42 })
    yield* Amqp.publish(billing, "invoice.created", Invoice, { id: "i-2", customer: "grace", total: 18 })
    yield* Deferred.await(booked)
    yield* Effect.sync(() => console.log(`ledger balance: ${balance}`))
  }).pipe(Effect.provide(LedgerLive.pipe(Layer.provideMerge(broker))))
})

program.pipe(Effect.provide(Logger.layer([Logger.consolePretty()])), Effect.runPromise)
