/**
 * Where a caller finds the public key of a service with sealed rpcs (Sealed.ts): the key given to it
 * (`Sealed.PublicKeys`), else the one the service's instances announce through discovery, asked once
 * per broker and service and kept until a call is refused as sealed for another key (the service's
 * key was rotated). The first instance to answer with a key gives it.
 *
 * @internal
 */
import { Deferred, Effect, Option, Stream } from "effect"
import type { Broker, Incoming } from "../Broker.ts"
import * as Sealed from "../Sealed.ts"
import { ServiceNotFound, TransportError } from "../ServiceError.ts"
import * as Sealing from "./sealing.ts"
import * as topology from "./topology.ts"
import * as wire from "./wire.ts"

/** how long a caller waits for an instance to announce its key */
const lookupTimeout = "2 seconds"

const known = new WeakMap<Broker["Service"], Map<string, Sealing.PublicKey>>()

/** the key of `service` for a caller on `broker` */
export const keyFor = (
  broker: Broker["Service"],
  service: string,
  method: string
): Effect.Effect<Sealing.PublicKey, ServiceNotFound | TransportError> =>
  Effect.withFiber((fiber) => {
    const given = fiber.getRef(Sealed.PublicKeys).get(service)
    if (given !== undefined) {
      return Option.match(Sealing.publicKey(given), {
        onNone: () => Effect.fail(new TransportError({ service, method, message: `the public key given for ${service} is not an X25519 key` })),
        onSome: Effect.succeed
      })
    }
    const kept = known.get(broker)?.get(service)
    if (kept !== undefined) return Effect.succeed(kept)
    return Effect.tap(lookup(broker, service, method), (key) =>
      Effect.sync(() => {
        let byService = known.get(broker)
        if (byService === undefined) {
          byService = new Map()
          known.set(broker, byService)
        }
        byService.set(service, key)
      }))
  })

/** forgets the key found for `service`: the next sealed call asks discovery again */
export const forget = (broker: Broker["Service"], service: string): void => {
  known.get(broker)?.delete(service)
}

/** a public key in a description, if it has one that reads as a key */
const keyOf = (body: Uint8Array): Option.Option<Sealing.PublicKey> =>
  Option.flatMap(wire.decodeJson(body), (u) =>
    typeof u === "object" && u !== null && "sealedKey" in u && typeof u.sealedKey === "string"
      ? Sealing.publicKey(u.sealedKey)
      : Option.none())

/** asks the service's instances to describe themselves; the first key that comes back */
const lookup = (broker: Broker["Service"], service: string, method: string) =>
  Effect.scoped(Effect.gen(function*() {
    yield* broker.declareExchange(topology.discoveryExchange, "topic", { durable: true })
    const replies = yield* broker.replyQueue()
    const correlationId = crypto.randomUUID()
    const found = yield* Deferred.make<Sealing.PublicKey>()
    let answered = false
    const onIncoming = (incoming: Incoming) => {
      if (incoming._tag !== "Reply" || incoming.message.properties.correlationId !== correlationId) return Effect.void
      answered = true
      return Option.match(keyOf(incoming.message.body), {
        onNone: () => Effect.void,
        onSome: (key) => Effect.asVoid(Deferred.succeed(found, key))
      })
    }
    yield* replies.incoming.pipe(Stream.runForEach(onIncoming), Effect.forkScoped)
    yield* replies.publish(topology.discoveryExchange, topology.describeKey(service), wire.encodeJson({}), {
      correlationId,
      contentType: wire.contentType
    })
    return yield* Deferred.await(found).pipe(
      Effect.timeoutOrElse({
        duration: lookupTimeout,
        orElse: (): Effect.Effect<never, ServiceNotFound | TransportError> =>
          answered
            ? Effect.fail(new TransportError({ service, method, message: `no instance of ${service} announced a key for its sealed methods` }))
            : Effect.fail(new ServiceNotFound({ service }))
      })
    )
  })).pipe(
    Effect.catchTag("BrokerError", (error) => Effect.fail(new TransportError({ service, method, message: error.message })))
  )
