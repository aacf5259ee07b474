/**
 * Events on the embedded broker: `node examples/events/main.ts`.
 *
 * The shop publishes orders and price changes; billing, cache (two instances), mailer (two
 * instances) and audit subscribe with the three deliveries; a command goes to audit without waiting
 * for a reply. Set AMQP_URL to run the same program on RabbitMQ.
 */
import { Effect, Layer, Logger } from "effect"
import { AmqpBroker, CallContext, Command, Event, MemoryBroker } from "effect-mesh"
import { Audit, OrderPlaced, PriceChanged } from "./contract.ts"
import { AuditLive, BillingLive, cacheInstance, mailerInstance } from "./services.ts"

const say = (line: string) => Effect.sync(() => console.log(line))

const program = Effect.gen(function*() {
  yield* say("— two orders placed (pool: billing once; singleton: one mail each; audit: a batch)")
  yield* Event.publish(OrderPlaced, { id: "o-1", item: "tea", total: 12 }).pipe(CallContext.withCorrelationId("checkout-1"))
  yield* Event.publish(OrderPlaced, { id: "o-2", item: "cake", total: 30 }).pipe(CallContext.withCorrelationId("checkout-2"))
  yield* Effect.sleep("400 millis")

  yield* say("— a price change (broadcast: both cache instances)")
  yield* Event.publish(PriceChanged, { item: "tea", price: 5 })
  yield* Effect.sleep("100 millis")

  yield* say("— a command (fire and forget: no reply awaited)")
  yield* Command.send(Audit, "record", { line: "daily report" })
  yield* Effect.sleep("100 millis")

  yield* say("— an invalid payload is refused before it leaves")
  const refused = yield* Effect.flip(Event.publish(PriceChanged, { item: "tea", price: Infinity }))
  yield* say(`  ${refused._tag} (${refused.reason}): ${refused.message.split("\n")[0]}`)
})

const url = process.env["AMQP_URL"]
const MeshLive = Layer.mergeAll(
  BillingLive,
  AuditLive,
  cacheInstance("A"),
  cacheInstance("B"),
  mailerInstance("A"),
  mailerInstance("B")
).pipe(Layer.provideMerge(url === undefined ? MemoryBroker.layer : AmqpBroker.layer({ url })))

program.pipe(
  Effect.provide(MeshLive),
  Effect.provide(Logger.layer([Logger.consolePretty()])),
  Effect.runPromise
)
