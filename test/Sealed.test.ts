/**
 * Sealed's keys: the service's private key from config, never in a log line, an error or `mesh
 * config`'s output; a service with sealed methods and no key, or a key that is not one, does not
 * start and says why without the key. Nameko's wire (RabbitMQ only) does not carry sealed methods. The broker-crossing behaviour is the conformance suite's
 * (test/fixtures/sealedSuite.ts).
 */
import { assert, describe, it } from "@effect/vitest"
import { Cause, ConfigProvider, Effect, Exit, Layer, Redacted, References, Schema, Stream } from "effect"
import { Rpc, RpcGroup } from "effect/rpc"
import { AmqpBroker, Broker, Discovery, MemoryBroker, MeshConfig, Nameko, Sealed, Service, ServiceClient, ServiceContract } from "effect-mesh"
import * as namekoWire from "../src/internal/namekoWire.ts"
import { amqpUrl } from "./fixtures/amqpUrl.ts"
import { captureLogs } from "./fixtures/logs.ts"

class NoteRpcs extends RpcGroup.make(
  Sealed.seal(Rpc.make("keep", { payload: { note: Schema.String }, success: Schema.String })),
  Rpc.make("ping", { success: Schema.String })
) {}

const Notes = ServiceContract.make("sealed-notes", NoteRpcs)
const notesHandlers = NoteRpcs.of({ keep: ({ note }) => Effect.succeed(`kept ${note}`), ping: () => Effect.succeed("pong") })
const NotesLive = Service.make(Notes, { handlers: notesHandlers })
const namekoNotes = ServiceContract.make(`sealed-nameko-${crypto.randomUUID().slice(0, 8)}`, NoteRpcs)

const config = (values: Record<string, string>) => ConfigProvider.layer(ConfigProvider.fromUnknown(values))

/** the message a Layer that does not build dies with */
const startFailure = <E>(layer: Layer.Layer<never, E>) =>
  Effect.gen(function*() {
    const exit = yield* Effect.exit(Effect.scoped(Layer.build(layer)))
    assert.isTrue(Exit.isFailure(exit))
    return Exit.isFailure(exit) ? Cause.pretty(exit.cause) : ""
  })

describe("Sealed", () => {
  it.live("the service's private key from config is never logged: start, calls, a refused call, the stop", () => {
    const logs = captureLogs()
    return Effect.gen(function*() {
      const pair = yield* Sealed.generateKeyPair
      const key = Redacted.value(pair.privateKey)
      yield* Effect.gen(function*() {
        const notes = yield* ServiceClient.make(Notes)
        assert.strictEqual(yield* notes.keep({ note: "a" }), "kept a")
        // a request to the sealed method that is not sealed: refused, logged, dead-lettered
        const refused = yield* Effect.flip(Stream.runCollect(ServiceClient.callUntyped(Notes.name, "keep", { note: "b" })))
        assert.strictEqual((refused as { readonly _tag: string })._tag, "InvalidPayload")
        const [described] = yield* Discovery.describe({ service: Notes.name, window: "200 millis" })
        assert.strictEqual(described?.sealedKey, pair.publicKey)
      }).pipe(
        Effect.provide(NotesLive.pipe(Layer.provideMerge(ServiceClient.layer), Layer.provideMerge(Layer.fresh(MemoryBroker.layer)))),
        Effect.provide(config({ [Sealed.configKeys.privateKey]: key }))
      )
      assert.isTrue(logs.lines.some((line) => line.message.includes("dead-lettered")))
      assert.isTrue(logs.lines.some((line) => line.message.includes("instance")))
      for (const line of logs.lines) {
        assert.notInclude(line.message, key)
        assert.notInclude(JSON.stringify(line.annotations), key)
      }
      // the pair itself prints redacted
      assert.notInclude(String(pair.privateKey), key)
      assert.notInclude(JSON.stringify(pair), key)
    }).pipe(
      Effect.provideService(Discovery.LogLevel, "Info"),
      Effect.provideService(References.MinimumLogLevel, "All"),
      Effect.provide(logs.layer)
    )
  })

  it.effect("mesh config (MeshConfig.show) prints the private key as <redacted>", () =>
    Effect.gen(function*() {
      const key = Redacted.value((yield* Sealed.generateKeyPair).privateKey)
      const env = { [Sealed.configKeys.privateKey]: key }
      const settings = yield* MeshConfig.show(undefined, env).pipe(Effect.provide(config(env)))
      const setting = settings.find((s) => s.key === Sealed.configKeys.privateKey)
      assert.deepStrictEqual(setting, { key: Sealed.configKeys.privateKey, value: "<redacted>", source: "env" })
      assert.notInclude(JSON.stringify(settings), key)
    }))

  it.live("a service with sealed methods and no key does not start, and says how to give it one", () =>
    Effect.gen(function*() {
      const message = yield* startFailure(NotesLive.pipe(Layer.provide(Layer.fresh(MemoryBroker.layer))))
      assert.include(message, "sealed-notes has sealed methods (keep) but no key: set MESH_SEALED_PRIVATE_KEY")
    }).pipe(Effect.provide(config({}))))

  it.live("a key that is not one: the service does not start, and the error never shows it", () =>
    Effect.gen(function*() {
      const notAKey = "not-a-key-but-a-secret-all-the-same"
      const message = yield* startFailure(
        NotesLive.pipe(Layer.provide(Layer.fresh(MemoryBroker.layer)), Layer.provide(config({ [Sealed.configKeys.privateKey]: notAKey })))
      )
      assert.include(message, "sealed-notes: the service's private key is not an X25519 key")
      assert.notInclude(message, notAKey)
      const given = yield* Effect.flip(Effect.scoped(Layer.build(Sealed.layer(notAKey))))
      assert.strictEqual(given._tag, "SealedKeyError")
      assert.notInclude(given.message, notAKey)
      const publicKey = yield* Effect.flip(Effect.scoped(Layer.build(Sealed.layerPublicKeys({ notes: notAKey }))))
      assert.strictEqual(publicKey.message.startsWith("the public key given for notes is not an X25519 key"), true)
    }))

  it.live("a sealed method is not served on Nameko's wire (MethodNotFound), an unsealed one beside it is", () =>
    Effect.gen(function*() {
      const broker = yield* Broker.Broker
      const replyTo = crypto.randomUUID()
      const queue = yield* broker.declareQueue("", { exclusive: true, autoDelete: true })
      yield* broker.bindQueue(queue, namekoWire.rpcExchange, replyTo)
      const consumer = yield* broker.consume(queue, { prefetch: 10 })
      const send = (method: string) =>
        broker.publish(namekoWire.rpcExchange, `${namekoNotes.name}.${method}`, Buffer.from(JSON.stringify({ args: [], kwargs: method === "keep" ? { note: "x" } : {} })), {
          replyTo,
          correlationId: method,
          contentType: "application/json"
        })
      yield* send("keep")
      yield* send("ping")
      const replies = yield* consumer.deliveries.pipe(
        Stream.take(2),
        Stream.mapEffect((d) => Effect.as(d.ack, [d.properties.correlationId, namekoWire.readReply(d.body)] as const)),
        Stream.runCollect
      )
      const byId = new Map(replies)
      assert.strictEqual(byId.get("keep")?.error?.exc_type, "MethodNotFound")
      assert.strictEqual(byId.get("ping")?.result, "pong")
    }).pipe(
      Effect.scoped,
      Effect.provide(Service.make(namekoNotes, { handlers: notesHandlers, entrypoints: [Nameko.serve(namekoNotes, notesHandlers)] }).pipe(
        Layer.provide(Sealed.layer(Effect.runSync(Sealed.generateKeyPair).privateKey)),
        Layer.provideMerge(Layer.suspend(() => AmqpBroker.layer({ url: amqpUrl() }))),
        Layer.fresh
      ))
    ))

  it.effect("a key pair: 32-byte keys in base64url; the public key is the one the private key makes", () =>
    Effect.gen(function*() {
      const pair = yield* Sealed.generateKeyPair
      assert.strictEqual(Buffer.from(pair.publicKey, "base64url").length, 32)
      assert.strictEqual(Buffer.from(Redacted.value(pair.privateKey), "base64url").length, 32)
      const key = yield* Sealed.makeServiceKey(pair.privateKey)
      assert.strictEqual(key.publicKey, pair.publicKey)
      assert.deepStrictEqual(Array.from(NoteRpcs.requests.values(), (rpc) => [rpc._tag, Sealed.isSealed(rpc)]), [["keep", true], ["ping", false]])
    }))
})
