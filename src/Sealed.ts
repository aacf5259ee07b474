/**
 * Sealed rpcs (nuropb's `encrypted=True`): a method whose payload and answers cross the broker
 * encrypted end to end, so that RabbitMQ (its queues, its management UI, a dead-letter queue, anyone
 * who can bind a queue) only ever holds ciphertext.
 *
 * A method is sealed in its contract (`Sealed.seal(Rpc.make(...))`, the `Sealed.Sealed` annotation):
 * caller and service agree from the contract alone, and a request to a sealed method that is not
 * sealed is refused. A service that has sealed methods needs its X25519 private key
 * (`Sealed.layerConfig` reads `MESH_SEALED_PRIVATE_KEY`; `Sealed.layer(key)` takes it as a value) and
 * announces its public key through `Discovery`, where callers find it on their first sealed call; a
 * caller can be given it instead (`Sealed.layerPublicKeys`). Each call seals its request with a key
 * pair of its own (X25519, HKDF-SHA256, AES-256-GCM; internal/sealing.ts), and the service seals the
 * answers (the Exit, each stream chunk) for that call's key alone. The service, the method, the
 * correlation id and the direction are authenticated with each body: a sealed body does not open for
 * another method or call.
 *
 * A sealed request that was altered, sealed for another key, or not sealed at all is answered with
 * `InvalidPayload` (whose issue names no key and no content) and dead-lettered with the reason
 * `sealed-refused`; the instance goes on serving. Keys are `Redacted` in config and never logged.
 *
 * ```ts
 * export class VaultRpcs extends RpcGroup.make(
 *   Sealed.seal(Rpc.make("store", { payload: { secret: Schema.String }, success: Schema.String })),
 *   Rpc.make("ping", { success: Schema.String })  // not sealed: no cost
 * ) {}
 * ```
 *
 * @since 0.1.0
 */
import { Config, Context, Effect, Layer, Option, Redacted, Schema } from "effect"
import type { Rpc, RpcMiddleware } from "effect/rpc"
import * as Sealing from "./internal/sealing.ts"

// ---- models ----

/**
 * Whether an rpc is sealed, as an annotation of the rpc (`seal` puts it there).
 *
 * @since 0.1.0
 */
export const Sealed = Context.Reference<boolean>("effect-mesh/Sealed/Sealed", { defaultValue: () => false })

/**
 * An X25519 key pair as text: each key its 32 raw bytes in base64url. The private key is `Redacted`.
 *
 * @since 0.1.0
 */
export interface KeyPair {
  readonly publicKey: string
  readonly privateKey: Redacted.Redacted<string>
}

/**
 * A key given to the mesh is not an X25519 key (32 bytes in base64url). It never says the key.
 *
 * @since 0.1.0
 */
export class SealedKeyError extends Schema.TaggedError<SealedKeyError>()("SealedKeyError", {
  /** which key: the service's private key, or the public key given for a service */
  key: Schema.String
}) {
  override get message(): string {
    return `${this.key} is not an X25519 key (32 bytes in base64url); make one with mesh keygen (Sealed.generateKeyPair)`
  }
}

/**
 * The key a service opens sealed requests with, ready for use. Its `publicKey` is what discovery
 * announces; the private part is a `KeyObject` that prints as no more than its type.
 *
 * @since 0.1.0
 */
export interface ServiceKey {
  readonly publicKey: string
  /** @internal */
  readonly key: Sealing.ServiceKey
}

/**
 * The key of the services built where it is provided (`layer`, `layerConfig`); none by default, and a
 * service with sealed methods refuses to start without one.
 *
 * @since 0.1.0
 */
export const CurrentServiceKey = Context.Reference<ServiceKey | undefined>("effect-mesh/Sealed/CurrentServiceKey", {
  defaultValue: () => undefined
})

/**
 * Services' public keys given to callers, by service name: used before discovery is asked.
 *
 * @since 0.1.0
 */
export const PublicKeys = Context.Reference<ReadonlyMap<string, string>>("effect-mesh/Sealed/PublicKeys", {
  defaultValue: () => new Map()
})

/**
 * The config keys this module reads.
 *
 * @since 0.1.0
 */
export const configKeys = {
  /** the service's X25519 private key, base64url */
  privateKey: "MESH_SEALED_PRIVATE_KEY"
} as const

// ---- constructors ----

/**
 * Seals an rpc: its payload and answers cross the broker encrypted.
 *
 * @since 0.1.0
 */
export const seal = <
  const Tag extends string,
  Payload extends Schema.Top,
  Success extends Schema.Top,
  Error extends Schema.Top,
  Middleware extends RpcMiddleware.AnyService,
  Requires
>(rpc: Rpc.Rpc<Tag, Payload, Success, Error, Middleware, Requires>): Rpc.Rpc<Tag, Payload, Success, Error, Middleware, Requires> =>
  rpc.annotate(Sealed, true)

/**
 * Whether an rpc is sealed.
 *
 * @since 0.1.0
 */
export const isSealed = (rpc: Rpc.Any): boolean => Context.get(rpc.annotations, Sealed)

/**
 * A fresh key pair for a service: give it the private key (config), its callers the public one if they
 * are not to find it through discovery.
 *
 * @since 0.1.0
 */
export const generateKeyPair: Effect.Effect<KeyPair> = Effect.sync(() => {
  const pair = Sealing.generate()
  return { publicKey: pair.publicKey, privateKey: Redacted.make(pair.privateKey, { label: configKeys.privateKey }) }
})

/**
 * A service's key from its private key.
 *
 * @since 0.1.0
 */
export const makeServiceKey = (privateKey: Redacted.Redacted<string> | string): Effect.Effect<ServiceKey, SealedKeyError> =>
  Effect.suspend(() =>
    Option.match(Sealing.serviceKey(typeof privateKey === "string" ? privateKey : Redacted.value(privateKey)), {
      onNone: () => Effect.fail(new SealedKeyError({ key: "the service's private key" })),
      onSome: (key) => Effect.succeed({ publicKey: key.publicKey, key })
    })
  )

// ---- layers ----

/**
 * The services built under this Layer open sealed requests with this private key.
 *
 * @since 0.1.0
 */
export const layer = (privateKey: Redacted.Redacted<string> | string): Layer.Layer<never, SealedKeyError> =>
  Layer.effectContext(Effect.map(makeServiceKey(privateKey), (key) => Context.make(CurrentServiceKey, key)))

/**
 * `layer` with the private key from config, `MESH_SEALED_PRIVATE_KEY` (read `Redacted`; `MeshConfig.show`
 * and `mesh config` print it as `<redacted>`).
 *
 * @since 0.1.0
 */
export const layerConfig: Layer.Layer<never, SealedKeyError | Config.ConfigError> = Layer.unwrap(
  Effect.map(Config.Redacted(configKeys.privateKey), layer)
)

/**
 * Callers under this Layer seal for these public keys (by service name) without asking discovery.
 *
 * @since 0.1.0
 */
export const layerPublicKeys = (keys: Readonly<Record<string, string>>): Layer.Layer<never, SealedKeyError> =>
  Layer.effectContext(Effect.gen(function*() {
    for (const [service, key] of Object.entries(keys)) {
      if (Option.isNone(Sealing.publicKey(key))) return yield* new SealedKeyError({ key: `the public key given for ${service}` })
    }
    return Context.make(PublicKeys, new Map(Object.entries(keys)))
  }))
