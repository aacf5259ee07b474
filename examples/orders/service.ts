/**
 * The orders service: its handler calls the calculator. The call context (correlation id, call-id
 * stack, deadline) travels on by itself.
 */
import { Effect } from "effect"
import { Service, ServiceClient, ServiceError } from "effect-mesh"
import { Calculator } from "../calculator/contract.ts"
import { InvalidQuantity, Order, Orders } from "./contract.ts"

export const OrdersLive = Service.make(Orders, {
  handlers: Effect.gen(function*() {
    const calculator = yield* ServiceClient.make(Calculator, { timeout: "5 seconds" })
    return Orders.group.of({
      place: ({ item, quantity, unitPrice }) =>
        Effect.gen(function*() {
          if (quantity <= 0) return yield* new InvalidQuantity({ quantity })
          // the orders contract does not declare the mesh's errors: the caller gets a RemoteDefect
          const total = yield* calculator.multiply({ a: quantity, b: unitPrice }).pipe(ServiceError.orDie)
          return new Order({ id: crypto.randomUUID(), item, quantity, total })
        })
    })
  })
})
