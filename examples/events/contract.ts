/**
 * The shop's events and the audit service's contract: shared by publishers and subscribers.
 */
import { Schema } from "effect"
import { Rpc, RpcGroup } from "effect/rpc"
import { Event, ServiceContract } from "effect-mesh"

export class Order extends Schema.Class<Order>("examples/events/Order")({
  id: Schema.String,
  item: Schema.String,
  total: Schema.Finite
}) {}

/** the shop emits it once an order is placed */
export const OrderPlaced = Event.make("shop", "order_placed", Order)

/** the shop emits it when a price changes: every cache instance must hear it */
export const PriceChanged = Event.make("shop", "price_changed", Schema.Struct({
  item: Schema.String,
  price: Schema.Finite
}))

export class AuditRpcs extends RpcGroup.make(
  Rpc.make("record", { payload: { line: Schema.String }, success: Schema.Void })
) {}

export const Audit = ServiceContract.make("audit", AuditRpcs)

export class PingRpcs extends RpcGroup.make(Rpc.make("ping", { success: Schema.String })) {}

export const Billing = ServiceContract.make("billing", PingRpcs)
export const Cache = ServiceContract.make("cache", PingRpcs)
export const Mailer = ServiceContract.make("mailer", PingRpcs)
