/**
 * A database per call, and events that go out if and only if their transaction commits:
 * `DATABASE_URL=postgres://... node examples/sql/main.ts` (`npm run postgres start` prints a URL of a
 * private PostgreSQL; the example creates its tables, and empties them first).
 *
 * Three orders: two placed, one refused with `OutOfStock`. The refused one leaves no order, takes no
 * stock, and its event never goes out, though the handler had written all three before it failed.
 * The event that arrives twice (as after a relay's crash) is shipped once. Set AMQP_URL to run the
 * same program on RabbitMQ.
 */
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, Logger, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import { AmqpBroker, CallContext, Event, MemoryBroker, ServiceClient } from "effect-mesh"
import { OrderPlaced, Orders } from "./contract.ts"
import { migrate, OrdersLive, ShippingLive } from "./services.ts"

const say = (line: string) => Effect.sync(() => console.log(line))

const program = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const orders = yield* ServiceClient.make(Orders)
  const place = (id: string, item: string, quantity: number) =>
    orders.place({ id, item, quantity }).pipe(
      CallContext.withCorrelationId(`checkout-${id}`),
      Effect.match({
        onFailure: (e) => `  orders: ${id} refused: ${e._tag === "OutOfStock" ? `only ${e.left} ${e.item} left` : e._tag}`,
        onSuccess: () => `  orders: ${id} placed`
      }),
      Effect.flatMap(say)
    )

  yield* say("— three orders, 5 tea in stock")
  yield* place("o-1", "tea", 2)
  yield* place("o-2", "tea", 4)
  yield* place("o-3", "tea", 3)
  yield* Effect.sleep("500 millis")

  yield* say("— the event of o-1 arrives again, with its message id (as after a relay's crash)")
  const [first] = yield* sql<{ readonly id: string }>`select id from mesh_outbox order by seq limit 1`
  yield* Event.publish(OrderPlaced, { id: "o-1", item: "tea", quantity: 2 }, { messageId: first.id })
  yield* Effect.sleep("300 millis")

  const stock = yield* sql<{ readonly left_: number }>`select left_ from stock where item = 'tea'`
  const placed = yield* sql<{ readonly id: string }>`select id from orders order by id`
  const shipped = yield* sql<{ readonly order_id: string }>`select order_id from shipments order by order_id`
  const outbox = yield* sql<{ readonly n: number }>`select count(*)::int as n from mesh_outbox where sent_at is not null`
  yield* say(`— in the database: tea left ${stock[0].left_}; orders ${placed.map((r) => r.id).join(", ")}; ` +
    `shipped ${shipped.map((r) => r.order_id).join(", ")}; outbox rows sent ${outbox[0].n}`)
})

const reset = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* migrate
  yield* sql`truncate stock, orders, shipments, mesh_outbox, mesh_outbox_processed`
  yield* sql`insert into stock ${sql.insert({ item: "tea", left_: 5 })}`
})

const databaseUrl = process.env["DATABASE_URL"]
if (databaseUrl === undefined || databaseUrl === "") {
  console.error("set DATABASE_URL to a PostgreSQL (`npm run postgres start` prints the URL of a private one)")
  process.exit(2)
}
const amqpUrl = process.env["AMQP_URL"]
const Database = PgClient.layer({ url: Redacted.make(databaseUrl) })
const Broker = amqpUrl === undefined || amqpUrl === "" ? MemoryBroker.layer : AmqpBroker.layer({ url: amqpUrl })
// the tables exist before the services start (the relay creates the outbox's if needed)
const MeshLive = Layer.mergeAll(OrdersLive, ShippingLive).pipe(
  Layer.provideMerge(ServiceClient.layer),
  Layer.provideMerge(Broker),
  Layer.provide(Layer.effectDiscard(reset)),
  Layer.provideMerge(Database)
)

program.pipe(
  Effect.provide(MeshLive),
  Effect.provide(Logger.layer([Logger.consolePretty()])),
  Effect.runPromise
)
