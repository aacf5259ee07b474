/**
 * The vault: `store` and `reveal` are sealed, `count` is not. Run it alone with
 * `mesh run examples/sealed/service.ts`, its key in `MESH_SEALED_PRIVATE_KEY` (`mesh keygen` makes one).
 */
import { Effect, Schema, Stream } from "effect"
import { Rpc, RpcGroup } from "effect/rpc"
import { Sealed, Service, ServiceContract } from "effect-mesh"

export class VaultRpcs extends RpcGroup.make(
  Sealed.seal(Rpc.make("store", { payload: { owner: Schema.String, secret: Schema.String }, success: Schema.String })),
  Sealed.seal(Rpc.make("reveal", { payload: { owner: Schema.String }, success: Schema.String, stream: true })),
  // not sealed: costs nothing more than any call
  Rpc.make("count", { success: Schema.Number })
) {}

export const Vault = ServiceContract.make("vault", VaultRpcs)

const secrets = new Map<string, Array<string>>()

/** the vault's handlers: what it keeps stays in this process */
export const vaultHandlers = VaultRpcs.of({
  store: ({ owner, secret }) =>
    Effect.sync(() => {
      secrets.set(owner, [...(secrets.get(owner) ?? []), secret])
      return `kept ${owner}'s secret`
    }),
  reveal: ({ owner }) => Stream.fromIterable(secrets.get(owner) ?? []),
  count: () => Effect.sync(() => secrets.size)
})

export const VaultLive = Service.make(Vault, { handlers: vaultHandlers })
