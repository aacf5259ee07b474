import { Effect, Layer, Schema } from "effect"
import { Rpc, RpcGroup } from "effect/rpc"
import { CallContext, MemoryBroker, Service, ServiceContract } from "effect-mesh"
import type { ServiceError } from "effect-mesh/ServiceError"
import { Forbidden } from "effect-mesh/ServiceError"
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

  it("a service's authorization policy sees the call and answers a boolean; a denial is Forbidden, one of the mesh's errors", () => {
    class Vault extends RpcGroup.make(Rpc.make("open", { payload: { door: Schema.Int }, success: Schema.String })) {}
    const contract = ServiceContract.make("vault", Vault)
    const layer = Service.make(contract, {
      handlers: { open: ({ door }) => Effect.succeed(`door ${door}`) },
      authorize: (call) => {
        expect(call).type.toBe<Service.Call>()
        expect(call.context.verifiedUserId).type.toBe<string | undefined>()
        return Effect.succeed(call.method === "open" && call.context.verifiedUserId === "edge")
      }
    })
    expect(layer).type.toBeAssignableTo<Layer.Layer<never, unknown, Broker>>()
    expect(Service.make).type.not.toBeCallableWith(contract, {
      handlers: { open: () => Effect.succeed("") },
      authorize: () => true
    })
    expect<Forbidden>().type.toBeAssignableTo<ServiceError>()
    // an entrypoint that serves calls on a wire of its own asks its instance's policy
    expect<Service.Instance["authorize"]>().type.toBe<((call: Service.Call) => Effect.Effect<boolean>) | undefined>()
    expect(Service.authorized).type.toBe<(policy: (call: Service.Call) => Effect.Effect<boolean>, call: Service.Call) => Effect.Effect<void>>()
    expect(new Forbidden({ service: "vault", method: "open" }).caller).type.toBe<string | undefined>()
  })
})
