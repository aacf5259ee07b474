/**
 * AmqpBroker against a real RabbitMQ: the node `test/globalSetup.ts` starts (or `AMQP_URL`), and for
 * the reconnect tests a second private node this file starts, restarts and stops itself, so that
 * restarting it never disturbs other test files running against the shared node.
 */
import { assert, describe, it } from "@effect/vitest"
import { afterAll, beforeAll } from "vitest"
import { Clock, type Duration, Effect, Exit, Fiber, Layer, Option, Queue, Ref, Schedule, Scope, Stream } from "effect"
import { readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import * as AmqpBroker from "../src/AmqpBroker.ts"
import { Broker, type BrokerError, type Consumer, type Delivery, type Incoming } from "../src/Broker.ts"
import { amqpUrl } from "./fixtures/amqpUrl.ts"
import { rabbitNode } from "./fixtures/rabbit.ts"

const suffix = () => crypto.randomUUID().slice(0, 8)
const encode = (s: string) => new TextEncoder().encode(s)
const decode = (b: Uint8Array) => new TextDecoder().decode(b)

const brokerLayer = (url: string = amqpUrl()) =>
  AmqpBroker.layer({ url, reconnect: Schedule.spaced("250 millis"), initialConnect: Schedule.recurs(0) })

/** the next `n` deliveries, failing the test when they do not come within the time limit */
const takeN = (consumer: Consumer, n: number, within: Duration.Input = "5 seconds") =>
  consumer.deliveries.pipe(
    Stream.take(n),
    Stream.runCollect,
    Effect.map((chunk) => Array.from(chunk)),
    Effect.timeoutOrElse({
      duration: within,
      orElse: () => Effect.die(new Error(`expected ${n} deliveries within ${within}`))
    })
  )

/** whether another delivery arrives within `within` */
const nothingWithin = (consumer: Consumer, within: Duration.Input = "300 millis") =>
  consumer.deliveries.pipe(
    Stream.take(1),
    Stream.runCollect,
    Effect.timeoutOption(within),
    Effect.map(Option.isNone)
  )

const nextIncoming = (incoming: Stream.Stream<Incoming, BrokerError>, within: Duration.Input = "5 seconds") =>
  incoming.pipe(
    Stream.take(1),
    Stream.runCollect,
    Effect.map((chunk) => Array.from(chunk)[0]),
    Effect.timeoutOrElse({ duration: within, orElse: () => Effect.die(new Error("no incoming message")) })
  )

const bodies = (deliveries: ReadonlyArray<Delivery>) => deliveries.map((d) => decode(d.body))

describe("AmqpBroker", () => {
  it.live("publish and consume: body, properties and headers round-trip", () =>
    Effect.gen(function*() {
      const broker = yield* Broker
      assert.strictEqual(broker.kind, "amqp")
      const queue = yield* broker.declareQueue(`t.roundtrip.${suffix()}`, { autoDelete: true })
      const consumer = yield* broker.consume(queue, { prefetch: 10 })
      yield* broker.publish("", queue, encode("hello"), {
        contentType: "text/plain",
        correlationId: "corr-1",
        messageId: "msg-1",
        type: "greeting",
        replyTo: "somewhere",
        persistent: true,
        headers: { s: "x", n: 42, f: 1.5, b: true }
      })
      const [delivery] = yield* takeN(consumer, 1)
      assert.strictEqual(decode(delivery.body), "hello")
      assert.strictEqual(delivery.exchange, "")
      assert.strictEqual(delivery.routingKey, queue)
      assert.strictEqual(delivery.redelivered, false)
      assert.strictEqual(delivery.deliveryCount, 0)
      assert.deepStrictEqual(delivery.properties, {
        contentType: "text/plain",
        correlationId: "corr-1",
        messageId: "msg-1",
        type: "greeting",
        replyTo: "somewhere",
        persistent: true,
        headers: { s: "x", n: 42, f: 1.5, b: true }
      })
      yield* delivery.ack
      yield* delivery.ack // settling twice is a no-op, not a channel error
      assert.isTrue(yield* nothingWithin(consumer))
      // the consumer's channel survived the second ack
      yield* broker.publish("", queue, encode("again"))
      assert.deepStrictEqual(bodies(yield* takeN(consumer, 1)), ["again"])
    }).pipe(Effect.provide(brokerLayer())))

  it.live("topic routing", () =>
    Effect.gen(function*() {
      const broker = yield* Broker
      const id = suffix()
      const exchange = `t.topic.${id}`
      yield* broker.declareExchange(exchange, "topic", { autoDelete: true })
      const first = yield* broker.declareQueue(`t.topic.a.${id}`, { autoDelete: true })
      const second = yield* broker.declareQueue(`t.topic.z.${id}`, { autoDelete: true })
      yield* broker.bindQueue(first, exchange, "a.*")
      yield* broker.bindQueue(second, exchange, "#.z")
      const a = yield* broker.consume(first, { prefetch: 10 })
      const z = yield* broker.consume(second, { prefetch: 10 })
      for (const key of ["a.b", "a.z", "c.z", "x.y", "a.b.c"]) {
        yield* broker.publish(exchange, key, encode(key))
      }
      const toA = yield* takeN(a, 2)
      const toZ = yield* takeN(z, 2)
      assert.deepStrictEqual(bodies(toA), ["a.b", "a.z"])
      assert.deepStrictEqual(bodies(toZ), ["a.z", "c.z"])
      assert.deepStrictEqual(toA.map((d) => d.routingKey), ["a.b", "a.z"])
      assert.strictEqual(toA[0].exchange, exchange)
      yield* Effect.forEach([...toA, ...toZ], (d) => d.ack)
      assert.isTrue(yield* nothingWithin(a))
      assert.isTrue(yield* nothingWithin(z, "50 millis"))
      // unbinding stops the routing
      yield* broker.unbindQueue(first, exchange, "a.*")
      yield* broker.publish(exchange, "a.q", encode("a.q"))
      assert.isTrue(yield* nothingWithin(a))
    }).pipe(Effect.provide(brokerLayer())))

  it.live("competing consumers share a queue round-robin", () =>
    Effect.gen(function*() {
      const broker = yield* Broker
      const queue = yield* broker.declareQueue(`t.rr.${suffix()}`, { autoDelete: true })
      const one = yield* broker.consume(queue, { prefetch: 10 })
      const two = yield* broker.consume(queue, { prefetch: 10 })
      for (let i = 0; i < 6; i++) yield* broker.publish("", queue, encode(`m${i}`))
      const toOne = yield* takeN(one, 3)
      const toTwo = yield* takeN(two, 3)
      assert.deepStrictEqual(bodies(toOne), ["m0", "m2", "m4"])
      assert.deepStrictEqual(bodies(toTwo), ["m1", "m3", "m5"])
      yield* Effect.forEach([...toOne, ...toTwo], (d) => d.ack)
    }).pipe(Effect.provide(brokerLayer())))

  it.live("prefetch bounds the unacked deliveries of a consumer", () =>
    Effect.gen(function*() {
      const broker = yield* Broker
      const queue = yield* broker.declareQueue(`t.prefetch.${suffix()}`, { autoDelete: true })
      const consumer = yield* broker.consume(queue, { prefetch: 2 })
      for (let i = 0; i < 5; i++) yield* broker.publish("", queue, encode(`m${i}`))
      const held = yield* takeN(consumer, 2)
      assert.deepStrictEqual(bodies(held), ["m0", "m1"])
      assert.isTrue(yield* nothingWithin(consumer))
      yield* held[0].ack
      assert.deepStrictEqual(bodies(yield* takeN(consumer, 1)), ["m2"])
      assert.isTrue(yield* nothingWithin(consumer))
    }).pipe(Effect.provide(brokerLayer())))

  it.live("nack with requeue redelivers; closing a consumer requeues what it held", () =>
    Effect.gen(function*() {
      const broker = yield* Broker
      const queue = yield* broker.declareQueue(`t.requeue.${suffix()}`, { autoDelete: false })
      const consumer = yield* broker.consume(queue, { prefetch: 1 })
      yield* broker.publish("", queue, encode("again"))
      const [first] = yield* takeN(consumer, 1)
      assert.isFalse(first.redelivered)
      assert.strictEqual(first.deliveryCount, 0)
      yield* first.nack(true)
      const [second] = yield* takeN(consumer, 1)
      assert.strictEqual(decode(second.body), "again")
      assert.isTrue(second.redelivered)
      assert.strictEqual(second.deliveryCount, 1)
      // a consumer in its own scope takes it, then goes away without settling
      yield* broker.publish("", queue, encode("held"))
      yield* Effect.scoped(Effect.gen(function*() {
        const other = yield* broker.consume(queue, { prefetch: 1 })
        const [held] = yield* takeN(other, 1)
        assert.strictEqual(decode(held.body), "held")
      }))
      yield* second.ack
      const [back] = yield* takeN(consumer, 1)
      assert.strictEqual(decode(back.body), "held")
      assert.isTrue(back.redelivered)
      yield* back.ack
      yield* broker.deleteQueue(queue)
    }).pipe(Effect.provide(brokerLayer())))

  it.live("cancel stops deliveries and ends the stream; what was received can still be settled", () =>
    Effect.gen(function*() {
      const broker = yield* Broker
      const queue = yield* broker.declareQueue(`t.cancel.${suffix()}`, { autoDelete: false })
      const consumer = yield* broker.consume(queue, { prefetch: 5 })
      yield* broker.publish("", queue, encode("one"))
      const [one] = yield* takeN(consumer, 1)
      yield* consumer.cancel
      yield* broker.publish("", queue, encode("two"))
      const rest = yield* Stream.runCollect(consumer.deliveries).pipe(Effect.timeout("2 seconds"))
      assert.strictEqual(rest.length, 0)
      yield* one.ack
      const next = yield* broker.consume(queue, { prefetch: 5 })
      const [two] = yield* takeN(next, 1)
      assert.strictEqual(decode(two.body), "two")
      assert.isFalse(two.redelivered)
      yield* two.ack
      yield* broker.deleteQueue(queue)
    }).pipe(Effect.provide(brokerLayer())))

  it.live("reject dead-letters with x-death-reason, and headers stay flat", () =>
    Effect.gen(function*() {
      const broker = yield* Broker
      const id = suffix()
      const dlx = `t.dlx.${id}`
      yield* broker.declareExchange(dlx, "fanout", { autoDelete: true })
      const dead = yield* broker.declareQueue(`t.dead.${id}`, { autoDelete: true })
      yield* broker.bindQueue(dead, dlx, "")
      const work = yield* broker.declareQueue(`t.work.${id}`, { autoDelete: true, deadLetterExchange: dlx })
      const worker = yield* broker.consume(work, { prefetch: 1 })
      const graveyard = yield* broker.consume(dead, { prefetch: 1 })
      yield* broker.publish("", work, encode("bad"), { headers: { origin: "test" } })
      const [delivery] = yield* takeN(worker, 1)
      yield* delivery.nack(false)
      const [corpse] = yield* takeN(graveyard, 1)
      assert.strictEqual(decode(corpse.body), "bad")
      const headers = corpse.properties.headers ?? {}
      assert.strictEqual(headers["x-death-reason"], "rejected")
      assert.strictEqual(headers["origin"], "test")
      assert.isUndefined(headers["x-death"])
      for (const value of Object.values(headers)) {
        assert.include(["string", "number", "boolean"], typeof value)
      }
      yield* corpse.ack
    }).pipe(Effect.provide(brokerLayer())))

  it.live("per-message expiration drops the message into the dead-letter exchange as expired", () =>
    Effect.gen(function*() {
      const broker = yield* Broker
      const id = suffix()
      const dlx = `t.dlx.${id}`
      yield* broker.declareExchange(dlx, "direct", { autoDelete: true })
      const dead = yield* broker.declareQueue(`t.expired.${id}`, { autoDelete: true })
      yield* broker.bindQueue(dead, dlx, "late")
      const work = yield* broker.declareQueue(`t.ttl.${id}`, {
        autoDelete: false,
        deadLetterExchange: dlx,
        deadLetterRoutingKey: "late"
      })
      yield* broker.publish("", work, encode("too late"), { expiration: 50 })
      yield* broker.publish("", work, encode("in time"), { expiration: 60_000 })
      const graveyard = yield* broker.consume(dead, { prefetch: 1 })
      yield* Effect.sleep("200 millis")
      const worker = yield* broker.consume(work, { prefetch: 5 })
      const [expired] = yield* takeN(graveyard, 1)
      assert.strictEqual(decode(expired.body), "too late")
      assert.strictEqual(expired.properties.headers?.["x-death-reason"], "expired")
      assert.isUndefined(expired.properties.expiration)
      const [fresh] = yield* takeN(worker, 1)
      assert.strictEqual(decode(fresh.body), "in time")
      assert.strictEqual(fresh.properties.expiration, 60_000)
      assert.isTrue(yield* nothingWithin(worker))
      yield* Effect.forEach([expired, fresh], (d) => d.ack)
      yield* broker.deleteQueue(work)
    }).pipe(Effect.provide(brokerLayer())))

  it.live("a delivery limit dead-letters after that many deliveries (quorum queue)", () =>
    Effect.gen(function*() {
      const broker = yield* Broker
      const id = suffix()
      const dlx = `t.dlx.${id}`
      yield* broker.declareExchange(dlx, "fanout", { autoDelete: true })
      const dead = yield* broker.declareQueue(`t.limit.dead.${id}`, { autoDelete: true })
      yield* broker.bindQueue(dead, dlx, "")
      const work = yield* broker.declareQueue(`t.limit.${id}`, {
        durable: true,
        deadLetterExchange: dlx,
        deliveryLimit: 2
      })
      const worker = yield* broker.consume(work, { prefetch: 1 })
      const graveyard = yield* broker.consume(dead, { prefetch: 1 })
      yield* broker.publish("", work, encode("poison"))
      const [first] = yield* takeN(worker, 1)
      assert.strictEqual(first.deliveryCount, 0)
      yield* first.nack(true)
      const [second] = yield* takeN(worker, 1)
      assert.strictEqual(second.deliveryCount, 1)
      yield* second.nack(true)
      const [corpse] = yield* takeN(graveyard, 1)
      assert.strictEqual(decode(corpse.body), "poison")
      assert.strictEqual(corpse.properties.headers?.["x-death-reason"], "delivery-limit")
      assert.isTrue(yield* nothingWithin(worker))
      yield* corpse.ack
      yield* broker.deleteQueue(work)
    }).pipe(Effect.provide(brokerLayer())))

  it.live("a single-active-consumer queue delivers to one consumer until it goes away", () =>
    Effect.gen(function*() {
      const broker = yield* Broker
      const queue = yield* broker.declareQueue(`t.sac.${suffix()}`, { singleActiveConsumer: true })
      const scope = yield* Scope.make()
      const active = yield* broker.consume(queue, { prefetch: 10 }).pipe(Scope.provide(scope))
      const standby = yield* broker.consume(queue, { prefetch: 10 })
      for (let i = 0; i < 4; i++) yield* broker.publish("", queue, encode(`m${i}`))
      const got = yield* takeN(active, 4)
      yield* Effect.forEach(got, (d) => d.ack)
      assert.isTrue(yield* nothingWithin(standby))
      yield* Scope.close(scope, Exit.void)
      yield* broker.publish("", queue, encode("next"))
      assert.deepStrictEqual(bodies(yield* takeN(standby, 1)), ["next"])
      yield* broker.deleteQueue(queue)
    }).pipe(Effect.provide(brokerLayer())))

  it.live("an empty queue name gets a unique name from the broker", () =>
    Effect.gen(function*() {
      const broker = yield* Broker
      const one = yield* broker.declareQueue("", { exclusive: true })
      const two = yield* broker.declareQueue("", { exclusive: true })
      assert.notStrictEqual(one, "")
      assert.notStrictEqual(one, two)
      const consumer = yield* broker.consume(one, { prefetch: 1 })
      yield* broker.publish("", one, encode("x"))
      assert.deepStrictEqual(bodies(yield* takeN(consumer, 1)), ["x"])
    }).pipe(Effect.provide(brokerLayer())))

  it.live("reply queue: direct reply-to replies, and mandatory returns arrive on incoming", () =>
    Effect.gen(function*() {
      const broker = yield* Broker
      const service = yield* broker.declareQueue(`t.rpc.${suffix()}`, { autoDelete: true })
      const server = yield* broker.consume(service, { prefetch: 10 })
      yield* server.deliveries.pipe(
        Stream.runForEach((request) =>
          broker.publish("", request.properties.replyTo ?? "", encode(`re: ${decode(request.body)}`), {
            correlationId: request.properties.correlationId
          }).pipe(Effect.andThen(request.ack))
        ),
        Effect.forkScoped
      )
      const replies = yield* broker.replyQueue()
      assert.strictEqual(replies.address, "amq.rabbitmq.reply-to")
      yield* replies.publish("", service, encode("ping"), { correlationId: "c-1", mandatory: true })
      const reply = yield* nextIncoming(replies.incoming)
      assert.strictEqual(reply._tag, "Reply")
      assert.strictEqual(decode(reply.message.body), "re: ping")
      assert.strictEqual(reply.message.properties.correlationId, "c-1")

      const ghost = `t.ghost.${suffix()}`
      yield* replies.publish("", ghost, encode("anyone?"), { correlationId: "c-2", mandatory: true })
      const returned = yield* nextIncoming(replies.incoming)
      assert.strictEqual(returned._tag, "Returned")
      if (returned._tag === "Returned") {
        assert.strictEqual(returned.message.replyText, "NO_ROUTE")
        assert.strictEqual(returned.message.routingKey, ghost)
        assert.strictEqual(returned.message.properties.correlationId, "c-2")
        assert.strictEqual(decode(returned.message.body), "anyone?")
      }
      // with confirm, the return fails the publish instead
      const error = yield* Effect.flip(replies.publish("", ghost, encode("x"), { mandatory: true, confirm: true }))
      assert.strictEqual(error.reason, "Unroutable")
      yield* replies.publish("", service, encode("pong"), { correlationId: "c-3", confirm: true, mandatory: true })
      const again = yield* nextIncoming(replies.incoming)
      assert.strictEqual(again._tag, "Reply")
      assert.strictEqual(again.message.properties.correlationId, "c-3")
    }).pipe(Effect.provide(brokerLayer())))

  it.live("confirmed publishes: Unroutable, NotFound, and the channel recovers", () =>
    Effect.gen(function*() {
      const broker = yield* Broker
      const queue = yield* broker.declareQueue(`t.confirm.${suffix()}`, { autoDelete: true })
      const consumer = yield* broker.consume(queue, { prefetch: 10 })
      yield* broker.publish("", queue, encode("confirmed"), { confirm: true, mandatory: true })
      const unroutable = yield* Effect.flip(
        broker.publish("", `t.nobody.${suffix()}`, encode("x"), { confirm: true, mandatory: true })
      )
      assert.strictEqual(unroutable.reason, "Unroutable")
      // not mandatory: an unroutable message is confirmed (and dropped)
      yield* broker.publish("", `t.nobody.${suffix()}`, encode("x"), { confirm: true })
      const missing = yield* Effect.flip(
        broker.publish(`t.no-exchange.${suffix()}`, "k", encode("x"), { confirm: true })
      )
      assert.strictEqual(missing.reason, "NotFound")
      // both publishing channels still work after the channel error
      yield* broker.publish("", queue, encode("after"), { confirm: true })
      yield* broker.publish(`t.no-exchange.${suffix()}`, "k", encode("lost"))
      yield* Effect.sleep("100 millis")
      yield* broker.publish("", queue, encode("plain"))
      const got = yield* takeN(consumer, 3)
      assert.deepStrictEqual(bodies(got), ["confirmed", "after", "plain"])
      yield* Effect.forEach(got, (d) => d.ack)
      // many concurrent confirmed publishes
      yield* Effect.forEach(
        Array.from({ length: 200 }, (_, i) => i),
        (i) => broker.publish("", queue, encode(`c${i}`), { confirm: true, mandatory: true }),
        { concurrency: "unbounded", discard: true }
      )
      const many = yield* consumer.deliveries.pipe(
        Stream.tap((d) => d.ack),
        Stream.take(200),
        Stream.runCollect,
        Effect.timeout("10 seconds")
      )
      assert.strictEqual(many.length, 200)
    }).pipe(Effect.provide(brokerLayer())))

  it.live("declaration errors are typed and the broker keeps working", () =>
    Effect.gen(function*() {
      const broker = yield* Broker
      const queue = yield* broker.declareQueue(`t.decl.${suffix()}`, { autoDelete: true })
      const conflict = yield* Effect.flip(broker.declareQueue(queue, { autoDelete: true, messageTtl: 1000 }))
      assert.strictEqual(conflict.reason, "Precondition")
      const notFound = yield* Effect.flip(broker.consume(`t.missing.${suffix()}`, { prefetch: 1 }))
      assert.strictEqual(notFound.reason, "NotFound")
      const noExchange = yield* Effect.flip(broker.bindQueue(queue, `t.missing.${suffix()}`, "#"))
      assert.strictEqual(noExchange.reason, "NotFound")
      // concurrent declarations next to a failing one all get their own outcome
      const results = yield* Effect.forEach(
        [0, 1, 2, 3],
        (i) =>
          Effect.exit(i === 1 ? broker.declareQueue(queue, { durable: true }) : broker.declareQueue(`${queue}.${i}`, {
            autoDelete: true
          })),
        { concurrency: "unbounded" }
      )
      assert.deepStrictEqual(results.map(Exit.isSuccess), [true, false, true, true])
      const consumer = yield* broker.consume(queue, { prefetch: 1 })
      yield* broker.publish("", queue, encode("still here"))
      assert.deepStrictEqual(bodies(yield* takeN(consumer, 1)), ["still here"])
    }).pipe(Effect.provide(brokerLayer())))

  it.live("a wrong URL fails the layer with a typed error and no password in it", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        Effect.provide(
          Effect.map(Broker, (broker) => broker.kind),
          AmqpBroker.layer({
            url: "amqp://guest:secret@127.0.0.1:1",
            initialConnect: Schedule.recurs(1),
            connectTimeout: "1 second"
          })
        )
      )
      assert.strictEqual(error._tag, "BrokerError")
      assert.notInclude(error.message, "secret")
    }))
})

// ---- faults: a node of its own ----

const faultPort = Number(process.env["MESH_RABBITMQ_FAULT_PORT"] ?? "5697")
const faultNode = rabbitNode(faultPort)
const rabbit = (command: "start" | "stop" | "restart") => faultNode[command]

/** signals the fault node's Erlang VM (its pid is in the script's pid file) */
const signalNode = (signal: NodeJS.Signals) =>
  Effect.sync(() => {
    const pidFile = fileURLToPath(new URL(`../.rabbitmq/${faultPort}/rabbitmq.pid`, import.meta.url))
    process.kill(Number(readFileSync(pidFile, "utf8").trim()), signal)
  })

describe("AmqpBroker faults", () => {
  let url = ""
  beforeAll(async () => {
    url = await Effect.runPromise(rabbit("start"))
  }, 180_000)
  afterAll(async () => {
    await Effect.runPromise(Effect.ignore(rabbit("stop")))
  }, 60_000)

  it.live("survives a node restart: consumers keep receiving, reply queues keep working", () =>
    Effect.gen(function*() {
      yield* Effect.gen(function*() {
        const broker = yield* Broker
        const id = suffix()
        // non-durable on purpose: the broker must declare them again after the restart
        const exchange = `t.fault.${id}`
        yield* broker.declareExchange(exchange, "direct")
        const queue = yield* broker.declareQueue(`t.fault.q.${id}`)
        yield* broker.bindQueue(queue, exchange, "k")
        const quorum = yield* broker.declareQueue(`t.fault.qq.${id}`, { durable: true, deliveryLimit: 3 })
        const consumer = yield* broker.consume(queue, { prefetch: 10 })
        const quorumConsumer = yield* broker.consume(quorum, { prefetch: 10 })
        const received = yield* Queue.unbounded<string>()
        yield* Stream.merge(consumer.deliveries, quorumConsumer.deliveries).pipe(
          Stream.runForEach((d) => Effect.andThen(Queue.offer(received, decode(d.body)), d.ack)),
          Effect.forkScoped
        )
        const replies = yield* broker.replyQueue()
        yield* broker.publish(exchange, "k", encode("before"))
        yield* broker.publish("", quorum, encode("before-qq"))
        const early = [yield* Queue.take(received), yield* Queue.take(received)].sort()
        assert.deepStrictEqual(early, ["before", "before-qq"])

        const restart = yield* Effect.forkChild(rabbit("restart"))
        // during the outage, a publish fails at once with a typed error instead of hanging
        const failure = yield* broker.publish(exchange, "k", encode("during")).pipe(
          Effect.flip,
          Effect.retry(Schedule.spaced("20 millis")),
          Effect.timeout("60 seconds")
        )
        assert.strictEqual(failure.reason, "Closed")
        const start = yield* Clock.currentTimeMillis
        const again = yield* Effect.exit(broker.declareQueue(`t.fault.other.${id}`))
        assert.isTrue(Exit.isFailure(again))
        assert.isBelow((yield* Clock.currentTimeMillis) - start, 500)
        yield* Fiber.join(restart)

        // once reconnected, new publishes work and the old consumers receive them
        yield* broker.publish(exchange, "k", encode("after"), { confirm: true }).pipe(
          Effect.retry(Schedule.max([Schedule.spaced("100 millis"), Schedule.during("30 seconds")]))
        )
        yield* broker.publish("", quorum, encode("after-qq"), { confirm: true })
        const late: Array<string> = []
        while (late.length < 2) {
          const next = yield* Queue.take(received).pipe(Effect.timeout("10 seconds"))
          if (next !== "during") late.push(next)
        }
        assert.deepStrictEqual(late.sort(), ["after", "after-qq"])
        // the reply queue opened before the restart works again
        yield* replies.publish("", `t.ghost.${id}`, encode("x"), { mandatory: true, correlationId: "r-1" })
        const returned = yield* nextIncoming(replies.incoming, "10 seconds")
        assert.strictEqual(returned._tag, "Returned")
        assert.strictEqual(returned.message.properties.correlationId, "r-1")
        yield* broker.deleteQueue(quorum)
      }).pipe(Effect.provide(brokerLayer(url)))
    }), 240_000)

  it.live("a stopped node: operations fail with Closed, streams keep waiting, a restart resumes them", () =>
    Effect.gen(function*() {
      yield* Effect.gen(function*() {
        const broker = yield* Broker
        const queue = yield* broker.declareQueue(`t.down.${suffix()}`)
        const consumer = yield* broker.consume(queue, { prefetch: 1 })
        const received = yield* Ref.make<ReadonlyArray<string>>([])
        const fiber = yield* consumer.deliveries.pipe(
          Stream.runForEach((d) => Effect.andThen(Ref.update(received, (all) => [...all, decode(d.body)]), d.ack)),
          Effect.forkScoped
        )
        yield* rabbit("stop")
        const error = yield* Effect.flip(broker.publish("", queue, encode("x")))
        assert.strictEqual(error.reason, "Closed")
        const replyError = yield* Effect.flip(Effect.scoped(broker.replyQueue()))
        assert.strictEqual(replyError.reason, "Closed")
        yield* Effect.sleep("500 millis")
        assert.isUndefined(fiber.pollUnsafe())
        yield* rabbit("start")
        yield* broker.publish("", queue, encode("back"), { confirm: true }).pipe(
          Effect.retry(Schedule.max([Schedule.spaced("100 millis"), Schedule.during("30 seconds")]))
        )
        yield* Ref.get(received).pipe(
          Effect.flatMap((all) => all.includes("back") ? Effect.void : Effect.fail("not yet")),
          Effect.retry(Schedule.max([Schedule.spaced("50 millis"), Schedule.during("10 seconds")]))
        )
      }).pipe(Effect.provide(brokerLayer(url)))
    }), 240_000)
  it.live("a crashed node (SIGKILL): the connection loss is noticed and the consumer resumes after a start", () =>
    Effect.gen(function*() {
      const broker = yield* Broker
      const queue = yield* broker.declareQueue(`t.crash.${suffix()}`)
      const consumer = yield* broker.consume(queue, { prefetch: 1 })
      const received = yield* Queue.unbounded<string>()
      yield* consumer.deliveries.pipe(
        Stream.runForEach((d) => Effect.andThen(Queue.offer(received, decode(d.body)), d.ack)),
        Effect.forkScoped
      )
      yield* signalNode("SIGKILL")
      const failure = yield* broker.publish("", queue, encode("during")).pipe(
        Effect.flip,
        Effect.retry(Schedule.spaced("20 millis")),
        Effect.timeout("10 seconds")
      )
      assert.strictEqual(failure.reason, "Closed")
      yield* rabbit("start")
      yield* broker.publish("", queue, encode("back"), { confirm: true }).pipe(
        Effect.retry(Schedule.max([Schedule.spaced("100 millis"), Schedule.during("30 seconds")]))
      )
      let next = yield* Queue.take(received).pipe(Effect.timeout("10 seconds"))
      while (next === "during") next = yield* Queue.take(received).pipe(Effect.timeout("10 seconds"))
      assert.strictEqual(next, "back")
    }).pipe(Effect.provide(Layer.suspend(() => brokerLayer(url)))), 240_000)

  it.live("a frozen node (SIGSTOP): heartbeats notice it, and the broker reconnects when it thaws", () =>
    Effect.gen(function*() {
      const broker = yield* Broker
      const queue = yield* broker.declareQueue(`t.frozen.${suffix()}`)
      const consumer = yield* broker.consume(queue, { prefetch: 1 })
      // a broker-named exclusive queue dies with its connection: it is declared again, under the same name
      const exclusive = yield* broker.declareQueue("", { exclusive: true })
      const exclusiveConsumer = yield* broker.consume(exclusive, { prefetch: 1 })
      yield* signalNode("SIGSTOP")
      const thaw = signalNode("SIGCONT")
      yield* Effect.gen(function*() {
        const start = yield* Clock.currentTimeMillis
        // a publish on a frozen peer does not fail by itself: the heartbeat timeout closes the connection
        const failure = yield* broker.publish("", queue, encode("during")).pipe(
          Effect.flip,
          Effect.retry(Schedule.spaced("100 millis")),
          Effect.timeout("20 seconds")
        )
        assert.strictEqual(failure.reason, "Closed")
        assert.isBelow((yield* Clock.currentTimeMillis) - start, 10_000)
      }).pipe(Effect.ensuring(thaw))
      yield* broker.publish("", queue, encode("thawed"), { confirm: true }).pipe(
        Effect.retry(Schedule.max([Schedule.spaced("100 millis"), Schedule.during("60 seconds")]))
      )
      const got = yield* consumer.deliveries.pipe(
        Stream.tap((d) => d.ack),
        Stream.map((d) => decode(d.body)),
        Stream.filter((body) => body === "thawed"),
        Stream.take(1),
        Stream.runCollect,
        Effect.timeout("20 seconds")
      )
      assert.deepStrictEqual(Array.from(got), ["thawed"])
      yield* broker.publish("", exclusive, encode("exclusive"), { confirm: true, mandatory: true })
      assert.deepStrictEqual(bodies(yield* takeN(exclusiveConsumer, 1)), ["exclusive"])
    }).pipe(
      Effect.provide(Layer.suspend(() =>
        AmqpBroker.layer({ url, heartbeat: 1, reconnect: Schedule.spaced("250 millis"), connectTimeout: "2 seconds" })
      ))
    ), 240_000)
})
