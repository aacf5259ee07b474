import type { Layer } from "effect"
import { CallContext, MemoryBroker } from "effect-mesh"
import type { Broker, BrokerErrorReason, Properties, PublishOptions } from "effect-mesh/Broker"
import { describe, expect, it } from "tstyche"

describe("Security", () => {
  it("a handler's context has the verified sender apart from the claimed user id", () => {
    expect<CallContext.CallContext["verifiedUserId"]>().type.toBe<string | undefined>()
    expect<CallContext.CallContext["userId"]>().type.toBe<string | undefined>()
  })

  it("a message says its verified sender; a publish may name it", () => {
    expect<Properties["userId"]>().type.toBe<string | undefined>()
    expect<{ readonly userId: "orders" }>().type.toBeAssignableTo<PublishOptions>()
    expect<{ readonly userId: 1 }>().type.not.toBeAssignableTo<PublishOptions>()
  })

  it("refused logins and TLS failures are reasons of their own", () => {
    expect<"Tls">().type.toBeAssignableTo<BrokerErrorReason>()
    expect<"AccessRefused">().type.toBeAssignableTo<BrokerErrorReason>()
  })

  it("the embedded broker takes an identity", () => {
    expect(MemoryBroker.layerWith({ identity: "orders" })).type.toBe<Layer.Layer<Broker>>()
    expect(MemoryBroker.layerWith).type.not.toBeCallableWith({ identity: 42 })
  })
})
