/**
 * The orders service's contract.
 */
import { Schema } from "effect"
import { Rpc, RpcGroup } from "effect/rpc"
import { ServiceContract } from "effect-mesh"

export class Order extends Schema.Class<Order>("Order")({
  id: Schema.String,
  item: Schema.String,
  quantity: Schema.Int,
  total: Schema.Number
}) {}

export class InvalidQuantity extends Schema.TaggedError<InvalidQuantity>()("InvalidQuantity", {
  quantity: Schema.Number
}) {}

export class OrdersRpcs extends RpcGroup.make(
  Rpc.make("place", {
    payload: { item: Schema.String, quantity: Schema.Int, unitPrice: Schema.Number },
    success: Order,
    error: InvalidQuantity
  })
) {}

export const Orders = ServiceContract.make("orders", OrdersRpcs)
