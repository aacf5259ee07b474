/**
 * Two services on one PostgreSQL database (in a real system, each its own):
 * - orders: `place` runs in a transaction of its own (`Sql.handlers`): it takes the stock, writes the
 *   order and its `OrderPlaced` event into the outbox, or refuses with `OutOfStock` and keeps nothing.
 *   The relay (`Outbox.relay`) publishes committed events.
 * - shipping: ships each order once (`Outbox.once`), in a transaction with the record of the event.
 */
import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import { CallContext, Event, Outbox, Service, Sql } from "effect-mesh"
import { OrderPlaced, Orders, OutOfStock, Shipping } from "./contract.ts"

const say = (line: string) => Effect.sync(() => console.log(line))

/** the tables of both services and of the outbox, created when missing */
export const migrate = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`create table if not exists stock (item text primary key, left_ int not null)`
  yield* sql`create table if not exists orders (id text primary key, item text not null, quantity int not null)`
  yield* sql`create table if not exists shipments (order_id text primary key)`
  yield* Outbox.createTables()
})

export const OrdersLive = Service.make(Orders, {
  handlers: Sql.handlers(Orders, {
    place: (order) =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const [stock] = yield* sql<{ readonly left_: number }>`
          update stock set left_ = left_ - ${order.quantity} where item = ${order.item} returning left_`
        yield* sql`insert into orders ${sql.insert(order)}`
        yield* Effect.orDie(Outbox.publish(OrderPlaced, order))
        // the stock was taken and the order and its event written: a refusal now undoes all three
        if (stock === undefined || stock.left_ < 0) {
          return yield* new OutOfStock({ item: order.item, left: (stock?.left_ ?? 0) + order.quantity })
        }
      })
  }),
  entrypoints: [Outbox.relay({ events: [OrderPlaced], interval: "100 millis" })]
})

export const ShippingLive = Service.make(Shipping, {
  handlers: { ping: () => Effect.succeed("pong") },
  entrypoints: [
    Event.handle(
      OrderPlaced,
      {},
      Outbox.once("shipping", (order, { messageId }) =>
        Effect.gen(function*() {
          const sql = yield* SqlClient.SqlClient
          const { correlationId } = yield* CallContext.CallContext
          yield* sql`insert into shipments ${sql.insert({ order_id: order.id })}`
          yield* say(`  shipping: ${order.quantity} x ${order.item} for ${order.id} (event ${messageId.slice(0, 8)}, correlation ${correlationId})`)
        }))
    )
  ]
})
