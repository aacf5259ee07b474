import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Layer, Result, Scope, Stream } from "effect"
import { TestClock } from "effect/testing"
import { Broker, type Consumer, type Delivery, type Incoming } from "../src/Broker.ts"
import * as MemoryBroker from "../src/MemoryBroker.ts"

const encoder = new TextEncoder()
const decoder = new TextDecoder()
const bytes = (s: string): Uint8Array => encoder.encode(s)
const text = (b: Uint8Array): string => decoder.decode(b)

/** lets forked fibers (stream consumers) catch up */
const flush = Effect.yieldNow.pipe(Effect.repeat({ times: 50 }))

/** takes exactly `n` deliveries from a consumer */
const take = (consumer: Consumer, n: number) => consumer.deliveries.pipe(Stream.take(n), Stream.runCollect)

/** runs a consumer's stream in the background, collecting its deliveries */
const collect = (consumer: Consumer) =>
  Effect.gen(function*() {
    const seen: Array<Delivery> = []
    const fiber = yield* consumer.deliveries.pipe(
      Stream.runForEach((d) => Effect.sync(() => seen.push(d))),
      Effect.forkScoped
    )
    return { seen, fiber }
  })

const collectIncoming = (incoming: Stream.Stream<Incoming, unknown>) =>
  Effect.gen(function*() {
    const seen: Array<Incoming> = []
    yield* incoming.pipe(Stream.runForEach((i) => Effect.sync(() => seen.push(i))), Effect.forkScoped)
    return seen
  })

const bodies = (ds: ReadonlyArray<Delivery>): Array<string> => ds.map((d) => text(d.body))

const unroutable = (broker: Broker["Service"], exchange: string, routingKey: string) =>
  broker.publish(exchange, routingKey, bytes("probe"), { mandatory: true, confirm: true }).pipe(
    Effect.result,
    Effect.map((r) => Result.isFailure(r) && r.failure.reason === "Unroutable")
  )

describe("MemoryBroker", () => {
  describe("routing", () => {
    it.effect("the default exchange routes to the queue named by the routing key, without copying the body", () =>
      Effect.gen(function*() {
        const broker = yield* MemoryBroker.make
        assert.strictEqual(broker.kind, "memory")
        yield* broker.declareQueue("q")
        const body = bytes("hello")
        yield* broker.publish("", "q", body, {
          correlationId: "c1",
          contentType: "application/json",
          headers: { a: 1, b: "x", c: true },
          mandatory: true,
          confirm: true
        })
        const [d] = yield* take(yield* broker.consume("q", { prefetch: 10 }), 1)
        assert.strictEqual(d.body, body)
        assert.strictEqual(d.exchange, "")
        assert.strictEqual(d.routingKey, "q")
        assert.strictEqual(d.redelivered, false)
        assert.strictEqual(d.deliveryCount, 0)
        // publish-only options do not leak into the message properties
        assert.deepStrictEqual(d.properties, {
          correlationId: "c1",
          contentType: "application/json",
          headers: { a: 1, b: "x", c: true }
        })
      }))

    it.effect("direct exchanges route on the exact key", () =>
      Effect.gen(function*() {
        const broker = yield* MemoryBroker.make
        yield* broker.declareExchange("d", "direct")
        yield* broker.declareQueue("a")
        yield* broker.declareQueue("b")
        yield* broker.bindQueue("a", "d", "k1")
        yield* broker.bindQueue("b", "d", "k2")
        yield* broker.bindQueue("b", "d", "k1")
        const a = yield* collect(yield* broker.consume("a", { prefetch: 100 }))
        const b = yield* collect(yield* broker.consume("b", { prefetch: 100 }))
        for (const key of ["k1", "k2", "k1.x", "k", "K1"]) yield* broker.publish("d", key, bytes(key))
        yield* flush
        assert.deepStrictEqual(bodies(a.seen), ["k1"])
        assert.deepStrictEqual(bodies(b.seen), ["k1", "k2"])
        assert.strictEqual(a.seen[0].exchange, "d")
        assert.isTrue(yield* unroutable(broker, "d", "nope"))
      }))

    it.effect("topic exchanges: * is one word, # is zero or more words", () =>
      Effect.gen(function*() {
        const broker = yield* MemoryBroker.make
        yield* broker.declareExchange("t", "topic")
        const patterns = ["a.*", "a.#", "#.z", "*.b.#", "#", "a.*.c", "x"]
        const seen: Record<string, Array<Delivery>> = {}
        for (const pattern of patterns) {
          const queue = yield* broker.declareQueue("")
          yield* broker.bindQueue(queue, "t", pattern)
          seen[pattern] = (yield* collect(yield* broker.consume(queue, { prefetch: 100 }))).seen
        }
        const keys = ["a", "a.b", "a.b.c", "a.b.c.z", "z", "q.b", "x", "x.y", ""]
        for (const key of keys) yield* broker.publish("t", key, bytes(key))
        yield* flush
        const got = (pattern: string) => seen[pattern].map((d) => d.routingKey)
        assert.deepStrictEqual(got("a.*"), ["a.b"])
        assert.deepStrictEqual(got("a.#"), ["a", "a.b", "a.b.c", "a.b.c.z"])
        assert.deepStrictEqual(got("#.z"), ["a.b.c.z", "z"])
        assert.deepStrictEqual(got("*.b.#"), ["a.b", "a.b.c", "a.b.c.z", "q.b"])
        assert.deepStrictEqual(got("#"), keys)
        assert.deepStrictEqual(got("a.*.c"), ["a.b.c"])
        assert.deepStrictEqual(got("x"), ["x"])
      }))

    it.effect("a queue bound twice to one exchange gets a message once; unbinding stops routing", () =>
      Effect.gen(function*() {
        const broker = yield* MemoryBroker.make
        yield* broker.declareExchange("t", "topic")
        yield* broker.declareQueue("q")
        yield* broker.bindQueue("q", "t", "a.*")
        yield* broker.bindQueue("q", "t", "#")
        yield* broker.bindQueue("q", "t", "#") // idempotent
        const c = yield* collect(yield* broker.consume("q", { prefetch: 100 }))
        yield* broker.publish("t", "a.b", bytes("1"))
        yield* broker.unbindQueue("q", "t", "#")
        yield* broker.publish("t", "a.b", bytes("2")) // still routed by a.*
        yield* broker.publish("t", "c", bytes("3")) // routed by nothing now
        yield* broker.unbindQueue("q", "t", "a.*")
        yield* broker.publish("t", "a.b", bytes("4"))
        yield* flush
        assert.deepStrictEqual(bodies(c.seen), ["1", "2"])
      }))

    it.effect("fanout exchanges route to every bound queue, whatever the key", () =>
      Effect.gen(function*() {
        const broker = yield* MemoryBroker.make
        yield* broker.declareExchange("f", "fanout")
        yield* broker.declareQueue("a")
        yield* broker.declareQueue("b")
        yield* broker.declareQueue("c")
        yield* broker.bindQueue("a", "f", "")
        yield* broker.bindQueue("b", "f", "ignored")
        const a = yield* collect(yield* broker.consume("a", { prefetch: 100 }))
        const b = yield* collect(yield* broker.consume("b", { prefetch: 100 }))
        const c = yield* collect(yield* broker.consume("c", { prefetch: 100 }))
        yield* broker.publish("f", "anything", bytes("m"))
        yield* flush
        assert.deepStrictEqual(bodies(a.seen), ["m"])
        assert.deepStrictEqual(bodies(b.seen), ["m"])
        assert.deepStrictEqual(bodies(c.seen), [])
        // each queue has its own delivery state
        assert.notStrictEqual(a.seen[0], b.seen[0])
      }))

    it.effect("publishing to a missing exchange fails with NotFound", () =>
      Effect.gen(function*() {
        const broker = yield* MemoryBroker.make
        const error = yield* Effect.flip(broker.publish("missing", "k", bytes("x")))
        assert.strictEqual(error._tag, "BrokerError")
        assert.strictEqual(error.reason, "NotFound")
        const reply = yield* broker.replyQueue()
        assert.strictEqual((yield* Effect.flip(reply.publish("missing", "k", bytes("x")))).reason, "NotFound")
        assert.strictEqual((yield* Effect.flip(broker.bindQueue("q", "missing", "k"))).reason, "NotFound")
        yield* broker.declareExchange("e", "direct")
        assert.strictEqual((yield* Effect.flip(broker.bindQueue("missing", "e", "k"))).reason, "NotFound")
        assert.strictEqual((yield* Effect.flip(broker.consume("missing", { prefetch: 1 }))).reason, "NotFound")
      }))
  })

  describe("declarations", () => {
    it.effect("redeclaring with the same options is idempotent; other options fail with Precondition", () =>
      Effect.gen(function*() {
        const broker = yield* MemoryBroker.make
        yield* broker.declareExchange("e", "topic", { durable: true })
        yield* broker.declareExchange("e", "topic", { durable: true })
        assert.strictEqual((yield* Effect.flip(broker.declareExchange("e", "direct", { durable: true }))).reason, "Precondition")
        assert.strictEqual((yield* Effect.flip(broker.declareExchange("e", "topic"))).reason, "Precondition")

        const options = { durable: true, deadLetterExchange: "dlx", messageTtl: 1000 }
        assert.strictEqual(yield* broker.declareQueue("q", options), "q")
        yield* broker.publish("", "q", bytes("kept"))
        assert.strictEqual(yield* broker.declareQueue("q", { ...options }), "q")
        assert.strictEqual((yield* Effect.flip(broker.declareQueue("q", { durable: true }))).reason, "Precondition")
        // the redeclaration did not reset the queue
        assert.deepStrictEqual(bodies(yield* take(yield* broker.consume("q", { prefetch: 1 }), 1)), ["kept"])
      }))

    it.effect("declareQueue(\"\") returns a fresh generated name each time", () =>
      Effect.gen(function*() {
        const broker = yield* MemoryBroker.make
        const a = yield* broker.declareQueue("")
        const b = yield* broker.declareQueue("", { exclusive: true })
        assert.match(a, /^amq\.gen-/)
        assert.notStrictEqual(a, b)
        yield* broker.publish("", b, bytes("to b"))
        assert.deepStrictEqual(bodies(yield* take(yield* broker.consume(b, { prefetch: 1 }), 1)), ["to b"])
      }))

    it.effect("deleteQueue removes the queue, its bindings and messages, and ends its consumers", () =>
      Effect.gen(function*() {
        const broker = yield* MemoryBroker.make
        yield* broker.declareExchange("e", "direct")
        yield* broker.declareQueue("q")
        yield* broker.bindQueue("q", "e", "k")
        const consumer = yield* broker.consume("q", { prefetch: 1 })
        const c = yield* collect(consumer)
        yield* broker.publish("e", "k", bytes("1"))
        yield* flush
        yield* broker.deleteQueue("q")
        yield* broker.deleteQueue("q") // missing: fine
        const exit = yield* Fiber.await(c.fiber)
        assert.isTrue(Exit.isSuccess(exit))
        assert.deepStrictEqual(bodies(c.seen), ["1"])
        yield* c.seen[0].ack // settling a delivery of a deleted queue is harmless
        assert.isTrue(yield* unroutable(broker, "e", "k"))
        assert.isTrue(yield* unroutable(broker, "", "q"))
        // a new queue with the same name starts empty and unbound
        yield* broker.declareQueue("q")
        assert.isTrue(yield* unroutable(broker, "e", "k"))
      }))

    it.effect("an autoDelete queue is deleted when its last consumer goes", () =>
      Effect.gen(function*() {
        const broker = yield* MemoryBroker.make
        yield* broker.declareQueue("q", { autoDelete: true })
        const first = yield* Scope.make()
        const second = yield* Scope.make()
        yield* broker.consume("q", { prefetch: 1 }).pipe(Scope.provide(first))
        yield* broker.consume("q", { prefetch: 1 }).pipe(Scope.provide(second))
        yield* Scope.close(first, Exit.void)
        assert.isFalse(yield* unroutable(broker, "", "q"))
        yield* Scope.close(second, Exit.void)
        assert.isTrue(yield* unroutable(broker, "", "q"))
      }))

    it.effect("an autoDelete exchange is deleted when its last binding goes", () =>
      Effect.gen(function*() {
        const broker = yield* MemoryBroker.make
        yield* broker.declareExchange("e", "fanout", { autoDelete: true })
        yield* broker.declareQueue("q")
        yield* broker.bindQueue("q", "e", "")
        yield* broker.publish("e", "", bytes("ok"))
        yield* broker.unbindQueue("q", "e", "")
        assert.strictEqual((yield* Effect.flip(broker.publish("e", "", bytes("x")))).reason, "NotFound")
      }))

    it.effect("a queue with expires is deleted after that long without consumers", () =>
      Effect.gen(function*() {
        const broker = yield* MemoryBroker.make
        yield* broker.declareQueue("idle", { expires: 1000 })
        yield* broker.declareQueue("used", { expires: 1000 })
        const scope = yield* Scope.make()
        yield* broker.consume("used", { prefetch: 1 }).pipe(Scope.provide(scope))
        yield* TestClock.adjust(999)
        assert.isFalse(yield* unroutable(broker, "", "idle"))
        yield* TestClock.adjust(2)
        assert.isTrue(yield* unroutable(broker, "", "idle"))
        assert.isFalse(yield* unroutable(broker, "", "used"))
        yield* Scope.close(scope, Exit.void)
        yield* TestClock.adjust(500)
        assert.isFalse(yield* unroutable(broker, "", "used"))
        yield* TestClock.adjust(501)
        assert.isTrue(yield* unroutable(broker, "", "used"))
      }))
  })

  describe("consumers", () => {
    it.effect("competing consumers get messages round-robin", () =>
      Effect.gen(function*() {
        const broker = yield* MemoryBroker.make
        yield* broker.declareQueue("q")
        const a = yield* collect(yield* broker.consume("q", { prefetch: 100 }))
        const b = yield* collect(yield* broker.consume("q", { prefetch: 100 }))
        const c = yield* collect(yield* broker.consume("q", { prefetch: 100 }))
        for (let i = 1; i <= 7; i++) yield* broker.publish("", "q", bytes(String(i)))
        yield* flush
        assert.deepStrictEqual(bodies(a.seen), ["1", "4", "7"])
        assert.deepStrictEqual(bodies(b.seen), ["2", "5"])
        assert.deepStrictEqual(bodies(c.seen), ["3", "6"])
      }))

    it.effect("prefetch limits unacked deliveries; a consumer at its limit is skipped", () =>
      Effect.gen(function*() {
        const broker = yield* MemoryBroker.make
        yield* broker.declareQueue("q")
        const a = yield* collect(yield* broker.consume("q", { prefetch: 1 }))
        const b = yield* collect(yield* broker.consume("q", { prefetch: 2 }))
        for (let i = 1; i <= 5; i++) yield* broker.publish("", "q", bytes(String(i)))
        yield* flush
        assert.deepStrictEqual(bodies(a.seen), ["1"])
        assert.deepStrictEqual(bodies(b.seen), ["2", "3"])
        yield* b.seen[0].ack
        yield* flush
        assert.deepStrictEqual(bodies(b.seen), ["2", "3", "4"])
        yield* a.seen[0].ack
        yield* flush
        assert.deepStrictEqual(bodies(a.seen), ["1", "5"])
      }))

    it.effect("taking from the stream in pieces loses no buffered delivery", () =>
      Effect.gen(function*() {
        const broker = yield* MemoryBroker.make
        yield* broker.declareQueue("q")
        const consumer = yield* broker.consume("q", { prefetch: 10 })
        for (let i = 1; i <= 3; i++) yield* broker.publish("", "q", bytes(String(i)))
        assert.deepStrictEqual(bodies(yield* take(consumer, 1)), ["1"])
        assert.deepStrictEqual(bodies(yield* take(consumer, 2)), ["2", "3"])
      }))

    it.effect("ack removes a message; nack(true) puts it back at the head, redelivered", () =>
      Effect.gen(function*() {
        const broker = yield* MemoryBroker.make
        yield* broker.declareQueue("q")
        const consumer = yield* broker.consume("q", { prefetch: 1 })
        yield* broker.publish("", "q", bytes("1"))
        yield* broker.publish("", "q", bytes("2"))
        const [first] = yield* take(consumer, 1)
        yield* first.nack(true)
        yield* first.ack // a second settle does nothing
        const [again] = yield* take(consumer, 1)
        assert.strictEqual(text(again.body), "1")
        assert.strictEqual(again.redelivered, true)
        assert.strictEqual(again.deliveryCount, 1)
        assert.deepStrictEqual(again.properties, first.properties)
        yield* again.ack
        const [second] = yield* take(consumer, 1)
        assert.strictEqual(text(second.body), "2")
        assert.strictEqual(second.redelivered, false)
        assert.strictEqual(second.deliveryCount, 0)
        yield* second.ack
        yield* broker.publish("", "q", bytes("3"))
        const [third] = yield* take(consumer, 1)
        assert.strictEqual(text(third.body), "3") // 1 and 2 are gone for good
      }))

    it.effect("nack(false) dead-letters to the dead-letter exchange, or drops without one", () =>
      Effect.gen(function*() {
        const broker = yield* MemoryBroker.make
        yield* broker.declareExchange("dlx", "direct")
        yield* broker.declareQueue("dead-by-key")
        yield* broker.declareQueue("dead-by-original")
        yield* broker.bindQueue("dead-by-key", "dlx", "dead")
        yield* broker.bindQueue("dead-by-original", "dlx", "work1")
        yield* broker.declareQueue("work1", { deadLetterExchange: "dlx" })
        yield* broker.declareQueue("work2", { deadLetterExchange: "dlx", deadLetterRoutingKey: "dead" })
        yield* broker.declareQueue("work3")

        yield* broker.publish("", "work1", bytes("a"), { headers: { keep: "me" }, correlationId: "c" })
        yield* broker.publish("", "work2", bytes("b"))
        yield* broker.publish("", "work3", bytes("c"))
        for (const q of ["work1", "work2", "work3"]) {
          yield* Effect.scoped(Effect.gen(function*() {
            const [d] = yield* take(yield* broker.consume(q, { prefetch: 1 }), 1)
            yield* d.nack(false)
          }))
        }
        const [byOriginal] = yield* take(yield* broker.consume("dead-by-original", { prefetch: 1 }), 1)
        assert.strictEqual(text(byOriginal.body), "a")
        assert.strictEqual(byOriginal.exchange, "dlx")
        assert.strictEqual(byOriginal.routingKey, "work1")
        assert.strictEqual(byOriginal.properties.correlationId, "c")
        assert.deepStrictEqual(byOriginal.properties.headers, { keep: "me", "x-death-reason": "rejected" })
        const [byKey] = yield* take(yield* broker.consume("dead-by-key", { prefetch: 1 }), 1)
        assert.strictEqual(text(byKey.body), "b")
        assert.strictEqual(byKey.routingKey, "dead")
        assert.deepStrictEqual(byKey.properties.headers, { "x-death-reason": "rejected" })
        // work3 had no dead-letter exchange: the message is gone
        yield* broker.publish("", "work3", bytes("next"))
        assert.deepStrictEqual(bodies(yield* take(yield* broker.consume("work3", { prefetch: 1 }), 1)), ["next"])
      }))

    it.effect("closing a consumer's scope requeues its unacked messages to the others", () =>
      Effect.gen(function*() {
        const broker = yield* MemoryBroker.make
        yield* broker.declareQueue("q")
        const scope = yield* Scope.make()
        const first = yield* broker.consume("q", { prefetch: 2 }).pipe(Scope.provide(scope))
        yield* broker.publish("", "q", bytes("1"))
        yield* broker.publish("", "q", bytes("2"))
        const [one] = yield* take(first, 1)
        const other = yield* collect(yield* broker.consume("q", { prefetch: 10 }))
        yield* flush
        assert.deepStrictEqual(other.seen, [])
        yield* Scope.close(scope, Exit.void)
        yield* one.ack // too late: the message went back to the queue
        yield* flush
        assert.deepStrictEqual(bodies(other.seen), ["1", "2"])
        assert.deepStrictEqual(other.seen.map((d) => [d.redelivered, d.deliveryCount]), [[true, 1], [true, 1]])
      }))

    it.effect("interrupting a consumer's stream requeues its unacked messages too", () =>
      Effect.gen(function*() {
        const broker = yield* MemoryBroker.make
        yield* broker.declareQueue("q")
        const first = yield* collect(yield* broker.consume("q", { prefetch: 1 }))
        yield* broker.publish("", "q", bytes("1"))
        yield* flush
        assert.deepStrictEqual(bodies(first.seen), ["1"])
        const other = yield* collect(yield* broker.consume("q", { prefetch: 1 }))
        yield* Fiber.interrupt(first.fiber)
        yield* flush
        assert.deepStrictEqual(bodies(other.seen), ["1"])
        assert.strictEqual(other.seen[0].redelivered, true)
        yield* broker.publish("", "q", bytes("2"))
        yield* other.seen[0].ack
        yield* flush
        assert.deepStrictEqual(bodies(other.seen), ["1", "2"]) // the interrupted one gets nothing more
      }))

    it.effect("cancel stops new deliveries and ends the stream; held deliveries stay settle-able", () =>
      Effect.gen(function*() {
        const broker = yield* MemoryBroker.make
        yield* broker.declareQueue("q")
        const scope = yield* Scope.make()
        const consumer = yield* broker.consume("q", { prefetch: 10 }).pipe(Scope.provide(scope))
        yield* broker.publish("", "q", bytes("1"))
        yield* broker.publish("", "q", bytes("2"))
        yield* consumer.cancel
        yield* broker.publish("", "q", bytes("3"))
        // what was already delivered still arrives, then the stream ends
        const held = yield* Stream.runCollect(consumer.deliveries)
        assert.deepStrictEqual(bodies(held), ["1", "2"])
        yield* held[0].ack
        const other = yield* collect(yield* broker.consume("q", { prefetch: 10 }))
        yield* flush
        assert.deepStrictEqual(bodies(other.seen), ["3"])
        yield* Scope.close(scope, Exit.void)
        yield* flush
        // "1" was acked after cancel; "2" was not, and comes back
        assert.deepStrictEqual(bodies(other.seen), ["3", "2"])
        assert.strictEqual(other.seen[1].redelivered, true)
      }))

    it.effect("deliveryLimit dead-letters a message instead of delivering it again", () =>
      Effect.gen(function*() {
        const broker = yield* MemoryBroker.make
        yield* broker.declareQueue("dead")
        yield* broker.declareQueue("q", { deliveryLimit: 2, deadLetterExchange: "", deadLetterRoutingKey: "dead" })
        yield* broker.publish("", "q", bytes("poison"))
        const consumer = yield* broker.consume("q", { prefetch: 1 })
        const [first] = yield* take(consumer, 1)
        assert.strictEqual(first.deliveryCount, 0)
        yield* first.nack(true)
        const [second] = yield* take(consumer, 1)
        assert.strictEqual(second.deliveryCount, 1)
        yield* second.nack(true)
        yield* broker.publish("", "q", bytes("fresh"))
        const [third] = yield* take(consumer, 1)
        assert.strictEqual(text(third.body), "fresh") // the poison message was delivered twice, no more
        const [dead] = yield* take(yield* broker.consume("dead", { prefetch: 1 }), 1)
        assert.strictEqual(text(dead.body), "poison")
        assert.strictEqual(dead.properties.headers?.["x-death-reason"], "delivery-limit")
      }))

    it.effect("deliveryLimit also counts requeues caused by consumers going away", () =>
      Effect.gen(function*() {
        const broker = yield* MemoryBroker.make
        yield* broker.declareQueue("q", { deliveryLimit: 1 })
        yield* broker.publish("", "q", bytes("once"))
        const scope = yield* Scope.make()
        const consumer = yield* broker.consume("q", { prefetch: 1 }).pipe(Scope.provide(scope))
        assert.deepStrictEqual(bodies(yield* take(consumer, 1)), ["once"])
        yield* Scope.close(scope, Exit.void)
        yield* broker.publish("", "q", bytes("after"))
        assert.deepStrictEqual(bodies(yield* take(yield* broker.consume("q", { prefetch: 1 }), 1)), ["after"])
      }))

    it.effect("singleActiveConsumer: only the first receives; the next takes over with its unacked", () =>
      Effect.gen(function*() {
        const broker = yield* MemoryBroker.make
        yield* broker.declareQueue("q", { singleActiveConsumer: true })
        const scope = yield* Scope.make()
        const active = yield* broker.consume("q", { prefetch: 2 }).pipe(Scope.provide(scope))
        const standby = yield* collect(yield* broker.consume("q", { prefetch: 10 }))
        for (let i = 1; i <= 3; i++) yield* broker.publish("", "q", bytes(String(i)))
        const [one, two] = yield* take(active, 2)
        yield* flush
        assert.deepStrictEqual(bodies([one, two]), ["1", "2"])
        assert.deepStrictEqual(standby.seen, []) // "3" waits: the active one is at its prefetch
        yield* one.ack
        yield* Scope.close(scope, Exit.void)
        yield* flush
        assert.deepStrictEqual(bodies(standby.seen), ["2", "3"])
        assert.deepStrictEqual(standby.seen.map((d) => d.redelivered), [true, true])
      }))
  })

  describe("expiration", () => {
    it.effect("a message that expires while waiting is dead-lettered with reason expired", () =>
      Effect.gen(function*() {
        const broker = yield* MemoryBroker.make
        yield* broker.declareExchange("dlx", "fanout")
        yield* broker.declareQueue("dead")
        yield* broker.bindQueue("dead", "dlx", "")
        yield* broker.declareQueue("delay", { deadLetterExchange: "dlx" })
        const dead = yield* collect(yield* broker.consume("dead", { prefetch: 10 }))
        yield* broker.publish("", "delay", bytes("late"), { expiration: 100, headers: { n: 1 } })
        yield* broker.publish("", "delay", bytes("later"), { expiration: 300 })
        yield* broker.publish("", "delay", bytes("early"), { expiration: 50 })
        yield* TestClock.adjust(99)
        yield* flush
        assert.deepStrictEqual(bodies(dead.seen), ["early"])
        yield* TestClock.adjust(1)
        yield* flush
        assert.deepStrictEqual(bodies(dead.seen), ["early", "late"])
        assert.deepStrictEqual(dead.seen[1].properties.headers, { n: 1, "x-death-reason": "expired" })
        // dead-lettering removes the expiration, so the message does not expire again
        assert.strictEqual(dead.seen[1].properties.expiration, undefined)
        assert.strictEqual(dead.seen[1].routingKey, "delay")
        yield* TestClock.adjust(200)
        yield* flush
        assert.deepStrictEqual(bodies(dead.seen), ["early", "late", "later"])
      }))

    it.effect("queue messageTtl: expired messages are never delivered (dropped without a dead-letter exchange)", () =>
      Effect.gen(function*() {
        const broker = yield* MemoryBroker.make
        yield* broker.declareQueue("q", { messageTtl: 1000 })
        yield* broker.publish("", "q", bytes("old"))
        yield* TestClock.adjust(600)
        yield* broker.publish("", "q", bytes("young"))
        yield* broker.publish("", "q", bytes("shorter"), { expiration: 100 })
        yield* TestClock.adjust(500)
        const [d] = yield* take(yield* broker.consume("q", { prefetch: 10 }), 1)
        assert.strictEqual(text(d.body), "young")
        assert.strictEqual(d.properties.expiration, undefined)
      }))

    it.effect("an expired message met at the head of the queue is not delivered", () =>
      Effect.gen(function*() {
        const broker = yield* MemoryBroker.make
        yield* broker.declareQueue("dead")
        yield* broker.declareQueue("q", { deadLetterExchange: "", deadLetterRoutingKey: "dead" })
        const consumer = yield* broker.consume("q", { prefetch: 1 })
        yield* broker.publish("", "q", bytes("held"))
        yield* broker.publish("", "q", bytes("short"), { expiration: 10 })
        const [held] = yield* take(consumer, 1)
        yield* TestClock.adjust(20)
        yield* broker.publish("", "q", bytes("next"))
        yield* held.ack
        assert.deepStrictEqual(bodies(yield* take(consumer, 1)), ["next"])
        const [dead] = yield* take(yield* broker.consume("dead", { prefetch: 1 }), 1)
        assert.strictEqual(text(dead.body), "short")
        assert.strictEqual(dead.properties.headers?.["x-death-reason"], "expired")
      }))

    it.effect("a message a consumer can take right away is delivered even with a TTL of 0", () =>
      Effect.gen(function*() {
        const broker = yield* MemoryBroker.make
        yield* broker.declareQueue("q", { messageTtl: 0 })
        const consumer = yield* broker.consume("q", { prefetch: 1 })
        yield* broker.publish("", "q", bytes("now"))
        yield* broker.publish("", "q", bytes("never")) // the consumer is at its prefetch
        const [d] = yield* take(consumer, 1)
        yield* d.ack
        yield* broker.publish("", "q", bytes("then"))
        assert.deepStrictEqual(bodies([d, ...(yield* take(consumer, 1))]), ["now", "then"])
      }))
  })

  describe("mandatory publishes and reply queues", () => {
    it.effect("unroutable: mandatory+confirm fails, mandatory alone or plain publishes are dropped", () =>
      Effect.gen(function*() {
        const broker = yield* MemoryBroker.make
        yield* broker.declareExchange("e", "topic")
        const error = yield* Effect.flip(broker.publish("e", "k", bytes("x"), { mandatory: true, confirm: true }))
        assert.strictEqual(error.reason, "Unroutable")
        yield* broker.publish("e", "k", bytes("x"), { mandatory: true })
        yield* broker.publish("e", "k", bytes("x"), { confirm: true })
        yield* broker.publish("e", "k", bytes("x"))
        yield* broker.publish("", "no-such-queue", bytes("x"))
      }))

    it.effect("a reply queue receives what is published to its address, and sets replyTo on its publishes", () =>
      Effect.gen(function*() {
        const broker = yield* MemoryBroker.make
        yield* broker.declareQueue("rpc")
        const reply = yield* broker.replyQueue()
        const incoming = yield* collectIncoming(reply.incoming)
        yield* reply.publish("", "rpc", bytes("request"), { correlationId: "c1" })
        yield* reply.publish("", "rpc", bytes("elsewhere"), { replyTo: "other" })
        const [request, other] = yield* take(yield* broker.consume("rpc", { prefetch: 10 }), 2)
        assert.strictEqual(request.properties.replyTo, reply.address)
        assert.strictEqual(request.properties.correlationId, "c1")
        assert.strictEqual(other.properties.replyTo, "other")
        // the server answers on the default exchange
        yield* broker.publish("", request.properties.replyTo ?? "", bytes("response"), {
          correlationId: "c1",
          mandatory: true,
          confirm: true
        })
        yield* flush
        assert.strictEqual(incoming.length, 1)
        const [got] = incoming
        assert.strictEqual(got._tag, "Reply")
        assert.strictEqual(text(got.message.body), "response")
        assert.strictEqual(got.message.routingKey, reply.address)
        assert.strictEqual(got.message.properties.correlationId, "c1")
      }))

    it.effect("a mandatory publish through a reply queue comes back on it as Returned", () =>
      Effect.gen(function*() {
        const broker = yield* MemoryBroker.make
        yield* broker.declareExchange("e", "direct")
        const reply = yield* broker.replyQueue()
        const other = yield* broker.replyQueue()
        const incoming = yield* collectIncoming(reply.incoming)
        const otherIncoming = yield* collectIncoming(other.incoming)
        yield* reply.publish("e", "nobody", bytes("lost"), { mandatory: true, correlationId: "c2" })
        yield* reply.publish("e", "nobody", bytes("dropped")) // not mandatory: silently dropped
        const error = yield* Effect.flip(reply.publish("e", "nobody", bytes("x"), { mandatory: true, confirm: true }))
        assert.strictEqual(error.reason, "Unroutable")
        yield* flush
        assert.strictEqual(incoming.length, 1)
        const [returned] = incoming
        assert.strictEqual(returned._tag, "Returned")
        if (returned._tag === "Returned") {
          assert.strictEqual(returned.message.replyText, "NO_ROUTE")
          assert.strictEqual(text(returned.message.body), "lost")
          assert.strictEqual(returned.message.exchange, "e")
          assert.strictEqual(returned.message.routingKey, "nobody")
          assert.strictEqual(returned.message.properties.correlationId, "c2")
        }
        assert.deepStrictEqual(otherIncoming, [])
      }))

    it.effect("after a reply queue's scope closes, its address routes nowhere", () =>
      Effect.gen(function*() {
        const broker = yield* MemoryBroker.make
        const scope = yield* Scope.make()
        const reply = yield* broker.replyQueue().pipe(Scope.provide(scope))
        const fiber = yield* reply.incoming.pipe(Stream.runCollect, Effect.forkScoped)
        assert.isFalse(yield* unroutable(broker, "", reply.address))
        yield* Scope.close(scope, Exit.void)
        assert.isTrue(yield* unroutable(broker, "", reply.address))
        yield* broker.publish("", reply.address, bytes("x"))
        const collected = yield* Fiber.join(fiber) // incoming ended
        assert.deepStrictEqual(collected.map((i) => i._tag), ["Reply"]) // only the probe before the close
      }))
  })

  describe("lifecycle", () => {
    it.effect("after the broker's scope closes, operations fail with Closed and streams end", () =>
      Effect.gen(function*() {
        const scope = yield* Scope.make()
        const broker = yield* MemoryBroker.make.pipe(Scope.provide(scope))
        yield* broker.declareQueue("q", { exclusive: true })
        yield* broker.declareExchange("e", "direct")
        const consumer = yield* broker.consume("q", { prefetch: 10 })
        const reply = yield* broker.replyQueue()
        yield* broker.publish("", "q", bytes("pending"))
        const deliveries = yield* Stream.runCollect(consumer.deliveries).pipe(Effect.forkChild)
        const incoming = yield* Stream.runCollect(reply.incoming).pipe(Effect.forkChild)
        yield* flush
        yield* Scope.close(scope, Exit.void)
        const got = yield* Fiber.join(deliveries)
        assert.deepStrictEqual(bodies(got), ["pending"])
        yield* got[0].ack // harmless
        assert.deepStrictEqual(yield* Fiber.join(incoming), [])
        const reasons = yield* Effect.all([
          broker.declareQueue("q", { exclusive: true }),
          broker.declareQueue("other"),
          broker.declareExchange("e", "direct"),
          broker.bindQueue("q", "e", "k"),
          broker.unbindQueue("q", "e", "k"),
          broker.deleteQueue("q"),
          broker.publish("", "q", bytes("x")),
          broker.consume("q", { prefetch: 1 }),
          broker.replyQueue(),
          reply.publish("", "q", bytes("x"))
        ].map((effect) => Effect.flip(effect).pipe(Effect.map((e) => e.reason))))
        assert.deepStrictEqual(reasons, Array(10).fill("Closed"))
      }))

    it.effect("layer builds a broker per provide; nested provides share it unless Layer.fresh", () =>
      Effect.gen(function*() {
        const declareDurable = Broker.use((broker) => broker.declareQueue("shared", { durable: true }))
        const declareTransient = Broker.use((broker) => Effect.result(broker.declareQueue("shared")))
        // one broker: the second declaration conflicts with the first
        const same = yield* Effect.andThen(declareDurable, declareTransient).pipe(Effect.provide(MemoryBroker.layer))
        assert.isTrue(Result.isFailure(same))
        // separate provides build separate brokers
        yield* declareDurable.pipe(Effect.provide(MemoryBroker.layer))
        assert.isTrue(Result.isSuccess(yield* declareTransient.pipe(Effect.provide(MemoryBroker.layer))))
        // a nested provide reuses the memoized broker; Layer.fresh opts out
        const nested = yield* Effect.andThen(declareDurable, declareTransient.pipe(Effect.provide(MemoryBroker.layer)))
          .pipe(Effect.provide(MemoryBroker.layer))
        assert.isTrue(Result.isFailure(nested))
        const fresh = yield* Effect.andThen(
          declareDurable,
          declareTransient.pipe(Effect.provide(Layer.fresh(MemoryBroker.layer)))
        ).pipe(Effect.provide(MemoryBroker.layer))
        assert.isTrue(Result.isSuccess(fresh))
      }))
  })
})
