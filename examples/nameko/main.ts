/**
 * The TypeScript half of the polyglot example: `pricing` serves the mesh's wire and Nameko's at once,
 * handles the `stock_low` events Python's inventory dispatches, and once up reserves stock from the
 * Python service (which calls `pricing.quote` back over Nameko's wire) on behalf of a user.
 *
 *   node examples/nameko/main.ts     (AMQP_URL; start inventory.py first, see README.md)
 */
import { NodeRuntime } from "@effect/platform-node"
import { Cause, Effect, Exit, Layer, Logger } from "effect"
import { AmqpBroker, CallContext, Nameko, Service } from "effect-mesh"
import { Inventory, Pricing, StockLow, UnknownSku } from "./contract.ts"

const prices: Record<string, number> = { apple: 0.5, pear: 0.75 }

const handlers = {
  quote: ({ quantity, sku }: { readonly sku: string; readonly quantity: number }) =>
    prices[sku] === undefined ? Effect.fail(new UnknownSku({ sku })) : Effect.succeed(prices[sku] * quantity)
}

export const PricingLive = Service.make(Pricing, {
  handlers,
  entrypoints: [
    // Python calls `pricing.quote(sku, quantity)`: its two positional arguments fill these fields
    Nameko.serve(Pricing, handlers, { args: { quote: ["sku", "quantity"] } }),
    Nameko.handle(StockLow, { delivery: "pool", method: "on_stock_low" }, ({ left, sku }) =>
      Effect.log(`stock of ${sku} is low: ${left} left`))
  ]
})

const reserve = Effect.gen(function*() {
  const inventory = yield* Nameko.client(Inventory, { args: { reserve: ["sku", "quantity"] } })
  const reserved = yield* inventory.reserve({ sku: "apple", quantity: 6 }).pipe(CallContext.withUserId("ada"))
  yield* Effect.log(`reserved ${reserved.quantity} ${reserved.sku} for ${reserved.user}: ${reserved.price}`)
  const refused = yield* Effect.flip(inventory.reserve({ sku: "pear", quantity: 9 }))
  yield* Effect.log(`refused: ${refused._tag} (${refused.message})`)
})

const main = Layer.effectDiscard(reserve).pipe(
  Layer.provideMerge(PricingLive),
  Layer.provide(Nameko.layerClient),
  Layer.provide(AmqpBroker.layer({ url: process.env["AMQP_URL"] ?? "amqp://guest:guest@localhost:5672" }))
)

// SIGTERM or Ctrl-C stop it: the Layers drain (running calls finish), and a stop that was asked for
// exits 0, as `mesh run` does
NodeRuntime.runMain(Layer.launch(main).pipe(Effect.provide(Logger.layer([Logger.consolePretty()]))), {
  teardown: (exit, onExit) => onExit(Exit.isSuccess(exit) || Cause.hasInterruptsOnly(exit.cause) ? 0 : 1)
})
