/**
 * `npm start`: a small mesh on the embedded broker. The calculator and orders services run as Layers;
 * the program calls them through typed clients and prints what happened.
 *
 * Set AMQP_URL to run the same program on RabbitMQ.
 */
import { Effect, Layer, Logger, Stream } from "effect"
import { AmqpBroker, CallContext, MemoryBroker, ServiceClient, ServiceContract } from "effect-mesh"
import { Calculator } from "./calculator/contract.ts"
import { CalculatorLive } from "./calculator/service.ts"
import { Orders } from "./orders/contract.ts"
import { OrdersLive } from "./orders/service.ts"

const say = (line: string) => Effect.sync(() => console.log(line))

const program = Effect.gen(function*() {
  const calc = yield* ServiceClient.make(Calculator, { timeout: "5 seconds" })

  yield* say("— sequential calls")
  yield* say(`  add(1, 2) = ${yield* calc.add({ a: 1, b: 2 })}`)
  yield* say(`  divide(10, 4) = ${yield* calc.divide({ a: 10, b: 4 })}`)

  yield* say("— parallel calls (Effect.all, concurrency 10)")
  const sums = yield* Effect.all(
    Array.from({ length: 10 }, (_, i) => calc.add({ a: i, b: i })),
    { concurrency: 10 }
  )
  yield* say(`  ${sums.join(", ")}`)

  yield* say("— a typed business error")
  const error = yield* calc.divide({ a: 1, b: 0 }).pipe(
    Effect.catchTag("DivisionByZero", (e) => Effect.succeed(`DivisionByZero (dividend ${e.dividend})`))
  )
  yield* say(`  divide(1, 0) failed with ${error}`)

  yield* say("— a streaming call")
  const countdown = yield* Stream.runCollect(calc.countdown({ from: 5 }))
  yield* say(`  countdown(5) streamed ${Array.from(countdown).join(" ")}`)

  yield* say("— a service that does not exist")
  const ghost = yield* ServiceClient.make(ServiceContract.make("inventory", Calculator.group))
  const missing = yield* ghost.add({ a: 1, b: 1 }).pipe(
    Effect.catchTag("ServiceNotFound", (e) => Effect.succeed(`ServiceNotFound: ${e.message}`))
  )
  yield* say(`  ${missing}`)

  yield* say("— a timeout")
  const slow = yield* calc.sleep({ millis: 2_000 }, { timeout: "100 millis" }).pipe(
    Effect.catchTag("CallTimeout", (e) => Effect.succeed(`CallTimeout: ${e.message}`))
  )
  yield* say(`  ${slow}`)

  yield* say("— orders.place calls calculator.multiply (the calculator logs the context it sees)")
  const orders = yield* ServiceClient.make(Orders)
  const order = yield* orders.place({ item: "widget", quantity: 3, unitPrice: 2.5 }).pipe(
    CallContext.withCorrelationId("demo-order-1"),
    CallContext.withUserId("ada")
  )
  yield* say(`  order ${order.id.slice(0, 8)}: ${order.quantity} x ${order.item} = ${order.total}`)
})

// embedded: calls within this process travel as values (MESH_QUEUED_CALLS=1 serializes them)
const Broker = process.env["AMQP_URL"] !== undefined
  ? AmqpBroker.layerConfig
  : MemoryBroker.layerWith({ directCalls: process.env["MESH_QUEUED_CALLS"] === undefined })

const MeshLive = Layer.mergeAll(CalculatorLive, OrdersLive).pipe(
  Layer.provideMerge(ServiceClient.layer),
  Layer.provideMerge(Broker),
  Layer.provide(Logger.layer([Logger.consolePretty()]))
)

await Effect.runPromise(program.pipe(Effect.provide(MeshLive)))
console.log("done")
