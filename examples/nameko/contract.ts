/**
 * The contracts of the polyglot example: `pricing` (TypeScript, `main.ts`) and `inventory` (Python,
 * `inventory.py`) as effect-mesh sees them. Nameko has no contracts: the TypeScript side writes down
 * what the Python service takes and answers, once, here.
 */
import { Schema } from "effect"
import { Rpc, RpcGroup } from "effect/rpc"
import { Event, ServiceContract } from "effect-mesh"

export class UnknownSku extends Schema.TaggedError<UnknownSku>()("UnknownSku", { sku: Schema.String }) {}

/** served by TypeScript on both wires; Python calls `quote(sku, quantity)` */
export const Pricing = ServiceContract.make(
  "pricing",
  RpcGroup.make(
    Rpc.make("quote", {
      payload: { sku: Schema.String, quantity: Schema.Int },
      success: Schema.Number,
      error: UnknownSku
    })
  )
)

/** Nameko's `OutOfStock(message)` arrives as `exc_type` "OutOfStock" and its message */
export class OutOfStock extends Schema.TaggedError<OutOfStock>()("OutOfStock", { message: Schema.String }) {}

/** served by Python (`inventory.py`) */
export const Inventory = ServiceContract.make(
  "inventory",
  RpcGroup.make(
    Rpc.make("reserve", {
      payload: { sku: Schema.String, quantity: Schema.Int },
      success: Schema.Struct({ sku: Schema.String, quantity: Schema.Int, price: Schema.Number, user: Schema.NullOr(Schema.String) }),
      error: OutOfStock
    })
  )
)

/** dispatched by Python's inventory when stock runs low; handled by TypeScript */
export const StockLow = Event.make("inventory", "stock_low", Schema.Struct({ sku: Schema.String, left: Schema.Int }))
