/**
 * What only the embedded broker has: it keeps the published body, names its queues and reply
 * addresses as RabbitMQ does, runs on the effect `Clock` (so `TestClock` drives its TTLs), and builds
 * one broker per layer build. The `Broker` contract itself runs over both brokers in
 * `test/fixtures/brokerContract.ts`.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Layer, Result, Scope, Stream } from "effect"
import { TestClock } from "effect/testing"
import { Broker, type Consumer, deathReasonHeader, type Delivery } from "../src/Broker.ts"
import * as MemoryBroker from "../src/MemoryBroker.ts"
import { collect } from "./fixtures/brokerContract.ts"

const encoder = new TextEncoder()
const decoder = new TextDecoder()
const bytes = (s: string): Uint8Array => encoder.encode(s)
const text = (b: Uint8Array): string => decoder.decode(b)

/** lets forked fibers (stream consumers) catch up */
const flush = Effect.yieldNow.pipe(Effect.repeat({ times: 50 }))

/** takes exactly `n` deliveries from a consumer */
const take = (consumer: Consumer, n: number) => consumer.deliveries.pipe(Stream.take(n), Stream.runCollect)

const bodies = (ds: ReadonlyArray<Delivery>): Array<string> => ds.map((d) => text(d.body))

const unroutable = (broker: Broker["Service"], exchange: string, routingKey: string) =>
  broker.publish(exchange, routingKey, bytes("probe"), { mandatory: true, confirm: true }).pipe(
    Effect.result,
    Effect.map((r) => Result.isFailure(r) && r.failure.reason === "Unroutable")
  )

describe("MemoryBroker", () => {
  it.effect("a delivery carries the published body itself, not a copy", () =>
    Effect.gen(function*() {
      const broker = yield* MemoryBroker.make
      assert.strictEqual(broker.kind, "memory")
      yield* broker.declareQueue("q")
      const body = bytes("hello")
      yield* broker.publish("", "q", body, { mandatory: true, confirm: true })
      const [d] = yield* take(yield* broker.consume("q", { prefetch: 10 }), 1)
      assert.strictEqual(d.body, body)
    }))

  it.effect("names as RabbitMQ does: amq.gen- queues, amq.rabbitmq.reply-to. addresses set as replyTo", () =>
    Effect.gen(function*() {
      const broker = yield* MemoryBroker.make
      assert.match(yield* broker.declareQueue(""), /^amq\.gen-/)
      assert.match(yield* broker.declareQueue("", { exclusive: true }), /^amq\.gen-/)
      yield* broker.declareQueue("rpc")
      const reply = yield* broker.replyQueue()
      assert.match(reply.address, /^amq\.rabbitmq\.reply-to\./)
      yield* reply.publish("", "rpc", bytes("request"))
      const [request] = yield* take(yield* broker.consume("rpc", { prefetch: 10 }), 1)
      assert.strictEqual(request.properties.replyTo, reply.address)
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

  it.effect("the effect Clock drives expiration: each message is dead-lettered, reason expired, at its time (TestClock)", () =>
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
      assert.strictEqual(dead.seen[1].properties.headers?.[deathReasonHeader], "expired")
      assert.strictEqual(dead.seen[1].properties.headers?.["n"], 1)
      // dead-lettering removes the expiration, so the message does not expire again
      assert.strictEqual(dead.seen[1].properties.expiration, undefined)
      assert.strictEqual(dead.seen[1].routingKey, "delay")
      yield* TestClock.adjust(200)
      yield* flush
      assert.deepStrictEqual(bodies(dead.seen), ["early", "late", "later"])
    }))

  it.effect("the effect Clock drives queue expiry: to the millisecond (TestClock)", () =>
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
