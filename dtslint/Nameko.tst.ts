import type { Effect, Layer } from "effect"
import { Effect as E } from "effect"
import { Nameko } from "effect-mesh"
import type { Service, ServiceContract } from "effect-mesh"
import type { Broker, BrokerError } from "effect-mesh/Broker"
import type { ServiceError } from "effect-mesh/ServiceError"
import { describe, expect, it } from "tstyche"
import type { DivisionByZero } from "../examples/calculator/contract.ts"
import { Calculator } from "../examples/calculator/contract.ts"
import type { OutOfStock } from "../examples/nameko/contract.ts"
import { Inventory } from "../examples/nameko/contract.ts"

declare const calc: Nameko.Client<ServiceContract.Rpcs<typeof Calculator>>
declare const inventory: Nameko.Client<ServiceContract.Rpcs<typeof Inventory>>

describe("Nameko", () => {
  it("a client has the contract's unary methods, typed from it, with its errors and the mesh's", () => {
    expect(calc.divide({ a: 1, b: 2 })).type.toBe<Effect.Effect<number, DivisionByZero | ServiceError>>()
    expect(calc.add).type.not.toBeCallableWith({ a: "1", b: 2 })
    expect(inventory.reserve({ sku: "apple", quantity: 1 })).type.toBe<
      Effect.Effect<{ readonly sku: string; readonly quantity: number; readonly price: number; readonly user: string | null }, OutOfStock | ServiceError>
    >()
  })

  it("has no method for a streaming rpc: Nameko has no streams", () => {
    expect(calc).type.not.toHaveProperty("countdown")
  })

  it("declares positional arguments with the payload's own field names", () => {
    expect(Nameko.client).type.toBeCallableWith(Calculator, { args: { add: ["a", "b"] } })
    expect(Nameko.client).type.not.toBeCallableWith(Calculator, { args: { add: ["a", "c"] } })
    expect(Nameko.client).type.not.toBeCallableWith(Calculator, { args: { countdown: ["from"] } })
  })

  it("serve is an entrypoint whose Layer requires the broker and fails with the broker's or Nameko's error", () => {
    const entrypoint = Nameko.serve(Inventory, {
      reserve: ({ quantity, sku }) => E.succeed({ sku, quantity, price: 1, user: null })
    }, { args: { reserve: ["sku", "quantity"] } })
    expect(entrypoint).type.toBe<Service.Entrypoint<BrokerError | Nameko.NamekoError, Broker>>()
  })

  it("the client's transport needs the broker", () => {
    expect(Nameko.layerClient).type.toBe<Layer.Layer<Nameko.Transport, BrokerError | Nameko.NamekoError, Broker>>()
  })
})
