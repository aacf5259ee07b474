import type { Effect } from "effect"
import { Command } from "effect-mesh"
import type { Broker } from "effect-mesh/Broker"
import type { InvalidPayload, ServiceNotFound, TransportError } from "effect-mesh/ServiceError"
import { describe, expect, it } from "tstyche"
import { Calculator } from "../examples/calculator/contract.ts"

describe("Command.send", () => {
  it("takes a method of the contract and its payload", () => {
    expect(Command.send).type.toBeCallableWith(Calculator, "add", { a: 1, b: 2 })
    expect(Command.send).type.not.toBeCallableWith(Calculator, "add", { a: "1", b: 2 })
    expect(Command.send).type.not.toBeCallableWith(Calculator, "subtract", { a: 1, b: 2 })
  })

  it("fails with the mesh's errors of a send and needs the broker", () => {
    expect(Command.send(Calculator, "multiply", { a: 1, b: 2 })).type.toBe<
      Effect.Effect<void, ServiceNotFound | InvalidPayload | TransportError, Broker>
    >()
  })
})

