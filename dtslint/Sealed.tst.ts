import type { Config, Layer, Redacted } from "effect"
import { Effect, Schema, Stream } from "effect"
import { Rpc, RpcGroup } from "effect/rpc"
import type { Broker, ServiceError } from "effect-mesh"
import { Sealed, Service, ServiceClient, ServiceContract } from "effect-mesh"
import { describe, expect, it } from "tstyche"

class Refused extends Schema.TaggedError<Refused>()("Refused", { why: Schema.String }) {}

const store = Rpc.make("store", { payload: { secret: Schema.String }, success: Schema.String, error: Refused })

class VaultRpcs extends RpcGroup.make(
  Sealed.seal(store),
  Sealed.seal(Rpc.make("reveal", { payload: { owner: Schema.String }, success: Schema.String, stream: true })),
  Rpc.make("ping", { success: Schema.String })
) {}

const Vault = ServiceContract.make("vault", VaultRpcs)

describe("Sealed", () => {
  it("seals an rpc without changing its type: a sealed method's client is any method's", () => {
    expect(Sealed.seal(store)).type.toBe<typeof store>()
    expect(Sealed.seal).type.not.toBeCallableWith("store")
    expect<ServiceClient.ServiceClient<ServiceContract.Rpcs<typeof Vault>>["store"]>().type.toBe<
      (
        payload: { readonly secret: string },
        options?: ServiceClient.CallOptions
      ) => Effect.Effect<string, Refused | ServiceError.ServiceError>
    >()
    expect<ReturnType<ServiceClient.ServiceClient<ServiceContract.Rpcs<typeof Vault>>["reveal"]>>().type.toBe<
      Stream.Stream<string, ServiceError.ServiceError>
    >()
  })

  it("a sealed service's Layer needs no more than any service's: its key comes from config or Sealed.layer", () => {
    const VaultLive = Service.make(Vault, {
      handlers: {
        store: ({ secret }) => secret === "" ? Effect.fail(new Refused({ why: "empty" })) : Effect.succeed(secret),
        reveal: ({ owner }) => Stream.make(owner),
        ping: () => Effect.succeed("pong")
      }
    })
    expect(VaultLive).type.toBe<Layer.Layer<never, Broker.BrokerError, Broker.Broker>>()
  })

  it("keys: a Redacted private key, typed errors for keys that are not keys", () => {
    expect(Sealed.generateKeyPair).type.toBe<Effect.Effect<Sealed.KeyPair>>()
    expect<Sealed.KeyPair["privateKey"]>().type.toBe<Redacted.Redacted<string>>()
    expect(Sealed.layer).type.toBeCallableWith("base64url")
    expect(Sealed.layer("k")).type.toBe<Layer.Layer<never, Sealed.SealedKeyError>>()
    expect(Sealed.layerConfig).type.toBe<Layer.Layer<never, Sealed.SealedKeyError | Config.ConfigError>>()
    expect(Sealed.layerPublicKeys({ vault: "k" })).type.toBe<Layer.Layer<never, Sealed.SealedKeyError>>()
    expect(Sealed.makeServiceKey("k")).type.toBe<Effect.Effect<Sealed.ServiceKey, Sealed.SealedKeyError>>()
  })
})
