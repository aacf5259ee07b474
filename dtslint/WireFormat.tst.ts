import { RpcSerialization } from "effect/rpc"
import { ServiceClient, ServiceContract, WireFormat } from "effect-mesh"
import { describe, expect, it } from "tstyche"
import { Calculator, CalculatorRpcs } from "../examples/calculator/contract.ts"

const PackedCalculator = ServiceContract.make("calculator", CalculatorRpcs, { format: WireFormat.msgPack })

describe("WireFormat", () => {
  it("is one of the formats the mesh knows, each an effect/rpc serialization", () => {
    expect(WireFormat.json.name).type.toBe<"json" | "msgpack">()
    expect(WireFormat.msgPack.serialization).type.toBe<RpcSerialization.RpcSerialization["Service"]>()
    expect(WireFormat.known).type.toBe<ReadonlyArray<WireFormat.WireFormat>>()
  })

  it("is chosen per contract; the contract's types do not change with it", () => {
    expect(ServiceContract.make).type.toBeCallableWith("calculator", CalculatorRpcs, { format: WireFormat.json })
    expect(ServiceContract.make).type.not.toBeCallableWith("calculator", CalculatorRpcs, { format: "msgpack" })
    expect(ServiceContract.make).type.not.toBeCallableWith("calculator", CalculatorRpcs, { format: RpcSerialization.json })
    expect(PackedCalculator).type.toBe<typeof Calculator>()
    expect<ServiceClient.ServiceClient<ServiceContract.Rpcs<typeof PackedCalculator>>>().type.toBe<
      ServiceClient.ServiceClient<ServiceContract.Rpcs<typeof Calculator>>
    >()
  })
})
