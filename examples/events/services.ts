/**
 * Four subscribers, one per delivery:
 * - billing (`pool`): each order is charged once, by one instance; its first attempt fails, so the
 *   event is retried (the broker holds it during the delay);
 * - cache (`broadcast`): every instance updates its own copy of the prices;
 * - mailer (`singleton`): exactly one mail per order, however many mailers run;
 * - audit (a Stream subscription): orders are written in batches; it also takes `record` commands.
 */
import { Effect, Schedule, Stream } from "effect"
import { CallContext, Event, Service } from "effect-mesh"
import { Audit, Billing, Cache, Mailer, OrderPlaced, PriceChanged } from "./contract.ts"

const say = (line: string) => Effect.sync(() => console.log(line))
const ping = { ping: () => Effect.succeed("pong") }

export const BillingLive = Service.make(Billing, {
  handlers: ping,
  entrypoints: [
    Event.handle(
      OrderPlaced,
      { delivery: "pool", retry: Schedule.spaced("100 millis").pipe(Schedule.upTo({ times: 3 })) },
      (order, { attempt }) =>
        Effect.gen(function*() {
          if (attempt === 1) return yield* Effect.fail(new Error("payment provider busy"))
          const { correlationId } = yield* CallContext.CallContext
          yield* say(`  billing: charged ${order.total} for ${order.id} on attempt ${attempt} (correlation ${correlationId})`)
        })
    )
  ]
})

export const cacheInstance = (name: string) =>
  Service.make(Cache, {
    handlers: ping,
    entrypoints: [
      Event.handle(PriceChanged, { delivery: "broadcast" }, ({ item, price }) =>
        say(`  cache ${name}: ${item} now costs ${price}`))
    ]
  })

export const mailerInstance = (name: string) =>
  Service.make(Mailer, {
    handlers: ping,
    entrypoints: [
      Event.handle(OrderPlaced, { delivery: "singleton" }, (order) => say(`  mailer ${name}: mailed the receipt of ${order.id}`))
    ]
  })

export const AuditLive = Service.make(Audit, {
  handlers: { record: ({ line }) => say(`  audit: command "${line}"`) },
  entrypoints: [
    Event.subscribe(OrderPlaced, { delivery: "pool" }, (orders) =>
      orders.pipe(
        Stream.groupedWithin(10, "50 millis"),
        Stream.runForEach((batch) =>
          Effect.andThen(
            say(`  audit: wrote ${batch.length} order(s): ${batch.map((o) => o.payload.id).join(", ")}`),
            Effect.forEach(batch, (o) => o.ack, { discard: true })
          )
        )
      ))
  ]
})
