/**
 * Sealed rpcs: `node examples/sealed/main.ts` (set AMQP_URL to run it on RabbitMQ).
 *
 * The vault's `store` and `reveal` are sealed in its contract: their payloads, answers and stream
 * chunks cross the broker encrypted for the vault's key and the calling call's own. The vault reads
 * its private key from `MESH_SEALED_PRIVATE_KEY` (one is made for the run when it is not set) and
 * announces its public key through discovery, where the caller finds it. A caller sealing for the
 * wrong key is refused with `InvalidPayload`; its request is in the vault's dead-letter queue, still
 * sealed, with the reason `sealed-refused`.
 */
import { Effect, Layer, Logger, Redacted, Stream } from "effect"
import { AmqpBroker, DeadLetters, MemoryBroker, Sealed, ServiceClient } from "effect-mesh"
import { Vault, VaultLive } from "./service.ts"

const say = (line: string) => Effect.sync(() => console.log(line))

const program = Effect.gen(function*() {
  const vault = yield* ServiceClient.make(Vault)
  yield* say(`store → ${yield* vault.store({ owner: "ada", secret: "the lamp is in the attic" })}`)
  const revealed = yield* Stream.runCollect(vault.reveal({ owner: "ada" }))
  yield* say(`reveal → ${Array.from(revealed).join(", ")}`)
  yield* say(`count → ${yield* vault.count()}`)

  // a caller that was given the wrong public key for the vault
  const stranger = yield* Sealed.generateKeyPair
  const refused = yield* Effect.flip(vault.store({ owner: "eve", secret: "eve's own secret" })).pipe(
    Effect.provide(Sealed.layerPublicKeys({ vault: stranger.publicKey }))
  )
  yield* say(`sealed for the wrong key → ${refused._tag}`)
  const letters = yield* DeadLetters.list("mesh.rpc.vault.dead", { wait: "500 millis" })
  for (const letter of letters) {
    const plain = Buffer.from(letter.body).toString("latin1").includes("eve's own secret")
    yield* say(`dead letter: ${letter.reason}, ${letter.type}, the secret in plain text: ${plain ? "yes" : "no"}`)
  }
  yield* DeadLetters.purge("mesh.rpc.vault.dead", { wait: "200 millis" })
})

// the vault's key: from config, or one for this run
const configured = process.env[Sealed.configKeys.privateKey]
const key = configured === undefined ? Effect.runSync(Sealed.generateKeyPair).privateKey : Redacted.make(configured)

const url = process.env["AMQP_URL"]
const MeshLive = VaultLive.pipe(
  Layer.provide(Sealed.layer(key)),
  Layer.provideMerge(ServiceClient.layer),
  Layer.provideMerge(url === undefined ? MemoryBroker.layer : AmqpBroker.layer({ url }))
)

program.pipe(
  Effect.provide(MeshLive),
  Effect.provide(Logger.layer([Logger.consolePretty()])),
  Effect.runPromise
)
