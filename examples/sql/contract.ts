/**
 * The shop's contract and event, shared by the orders service, its clients and its subscribers.
 */
import { Schema } from "effect"
import { Rpc, RpcGroup } from "effect/rpc"
import { Event, ServiceContract } from "effect-mesh"

export const Order = Schema.Struct({ id: Schema.String, item: Schema.String, quantity: Schema.Int })

/** not enough of the item in stock: the order is refused, and nothing of it is kept */
export class OutOfStock extends Schema.TaggedError<OutOfStock>()("OutOfStock", {
  item: Schema.String,
  left: Schema.Int
}) {}

export class OrdersRpcs extends RpcGroup.make(
  Rpc.make("place", { payload: Order, success: Schema.Void, error: OutOfStock })
) {}

export const Orders = ServiceContract.make("orders", OrdersRpcs)

/** emitted through the outbox: if and only if the order's transaction commits */
export const OrderPlaced = Event.make("orders", "order_placed", Order)

export class PingRpcs extends RpcGroup.make(Rpc.make("ping", { success: Schema.String })) {}

export const Shipping = ServiceContract.make("shipping", PingRpcs)
