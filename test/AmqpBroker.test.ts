/**
 * What only the RabbitMQ broker has, against a real RabbitMQ: the node `test/globalSetup.ts` starts
 * (or `AMQP_URL`), and for the reconnect tests a second private node this file starts, restarts and
 * stops itself, so that restarting it never disturbs other test files running against the shared
 * node. Also how amqplib's failures become `BrokerError`s: from the AMQP reply code, amqplib's
 * `IllegalOperationError` and the closed state of a channel, never from a message. The `Broker`
 * contract itself runs over both brokers in `test/fixtures/brokerContract.ts`.
 */
import { assert, describe, it } from "@effect/vitest"
import { afterAll, beforeAll } from "vitest"
import { Clock, type Duration, Effect, Exit, Fiber, Layer, Option, Queue, Ref, Schedule, Schema, Stream } from "effect"
import { Rpc, RpcGroup } from "effect/rpc"
import { readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import * as AmqpBroker from "../src/AmqpBroker.ts"
import { Broker, type BrokerError, type Consumer, type Delivery, type Incoming } from "../src/Broker.ts"
import * as Amqp from "../src/internal/amqplib.ts"
import * as Mesh from "../src/Mesh.ts"
import * as Service from "../src/Service.ts"
import * as ServiceClient from "../src/ServiceClient.ts"
import * as ServiceContract from "../src/ServiceContract.ts"
import { amqpUrl } from "./fixtures/amqpUrl.ts"
import { take as takeN } from "./fixtures/brokerContract.ts"
import { rabbitNode } from "./fixtures/rabbit.ts"
import { checkoutPort } from "./fixtures/ports.ts"
import { freePort } from "./fixtures/freePort.ts"

const suffix = () => crypto.randomUUID().slice(0, 8)

class ReadyRpcs extends RpcGroup.make(Rpc.make("ping", { success: Schema.String })) {}

const encode = (s: string) => new TextEncoder().encode(s)
const decode = (b: Uint8Array) => new TextDecoder().decode(b)

const brokerLayer = (url: string = amqpUrl()) =>
  AmqpBroker.layer({ url, reconnect: Schedule.spaced("250 millis"), initialConnect: Schedule.recurs(0) })

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
  it.live("is RabbitMQ: kind amqp, replies on the direct reply-to pseudo-queue", () =>
    Effect.gen(function*() {
      const broker = yield* Broker
      assert.strictEqual(broker.kind, "amqp")
      const replies = yield* broker.replyQueue()
      assert.strictEqual(replies.address, "amq.rabbitmq.reply-to")
    }).pipe(Effect.scoped, Effect.provide(brokerLayer())))

  it.live("a channel error on a publishing channel (a plain publish to a missing exchange) leaves the next publishes working", () =>
    Effect.gen(function*() {
      const broker = yield* Broker
      const queue = yield* broker.declareQueue(`t.channels.${suffix()}`, { autoDelete: true })
      const consumer = yield* broker.consume(queue, { prefetch: 10 })
      const missing = yield* Effect.flip(broker.publish(`t.no-exchange.${suffix()}`, "k", encode("x"), { confirm: true }))
      assert.strictEqual(missing.reason, "NotFound")
      // the confirm channel, closed by that 404, is opened again
      yield* broker.publish("", queue, encode("after"), { confirm: true })
      // RabbitMQ closes the plain channel a moment after this publish returned
      yield* broker.publish(`t.no-exchange.${suffix()}`, "k", encode("lost"))
      yield* Effect.sleep("100 millis")
      yield* broker.publish("", queue, encode("plain"))
      const got = yield* takeN(consumer, 2)
      assert.deepStrictEqual(bodies(got), ["after", "plain"])
      yield* Effect.forEach(got, (d) => d.ack)
      assert.isTrue(yield* nothingWithin(consumer))
    }).pipe(Effect.provide(brokerLayer())))

  describe("classifying amqplib's failures", () => {
    /** a connection and a channel of amqplib's, closed with the test */
    const raw = Effect.gen(function*() {
      const connection = yield* Effect.acquireRelease(
        Amqp.connect(amqpUrl(), { noDelay: true }),
        (connection) => Effect.ignore(Amqp.closeConnection(connection))
      )
      const channel = yield* Amqp.createChannel(connection)
      return { connection, channel }
    })
    const codeOf = (error: BrokerError): unknown =>
      typeof error.cause === "object" && error.cause !== null && "code" in error.cause ? error.cause.code : undefined

    it.live("a 404 is NotFound, and the error keeps amqplib's as its cause", () =>
      Effect.gen(function*() {
        const broker = yield* Broker
        const consume = yield* Effect.flip(broker.consume(`t.missing.${suffix()}`, { prefetch: 1 }))
        assert.strictEqual(consume.reason, "NotFound")
        assert.instanceOf(consume.cause, Error)
        assert.strictEqual(codeOf(consume), 404)
        const publish = yield* Effect.flip(broker.publish(`t.missing.${suffix()}`, "k", encode("x"), { confirm: true }))
        assert.strictEqual(publish.reason, "NotFound")
        assert.strictEqual(codeOf(publish), 404)
        const bind = yield* Effect.flip(broker.bindQueue(`t.missing.${suffix()}`, "amq.direct", "k"))
        assert.strictEqual(bind.reason, "NotFound")
        assert.strictEqual(codeOf(bind), 404)
      }).pipe(Effect.scoped, Effect.provide(brokerLayer())))

    it.live("a 406 is Precondition", () =>
      Effect.gen(function*() {
        const broker = yield* Broker
        const queue = yield* broker.declareQueue(`t.precondition.${suffix()}`, { autoDelete: true })
        const conflict = yield* Effect.flip(broker.declareQueue(queue, { autoDelete: true, messageTtl: 1000 }))
        assert.strictEqual(conflict.reason, "Precondition")
        assert.strictEqual(codeOf(conflict), 406)
        const exchange = `t.precondition.${suffix()}`
        yield* broker.declareExchange(exchange, "topic", { autoDelete: true })
        const kind = yield* Effect.flip(broker.declareExchange(exchange, "fanout", { autoDelete: true }))
        assert.strictEqual(kind.reason, "Precondition")
        assert.strictEqual(codeOf(kind), 406)
      }).pipe(Effect.scoped, Effect.provide(brokerLayer())))

    it.live("a publish or a declaration on a closed channel is Closed (amqplib's IllegalOperationError)", () =>
      Effect.gen(function*() {
        const { channel } = yield* raw
        yield* Amqp.closeChannel(channel)
        assert.isTrue(Amqp.isClosed(channel))
        const publish = yield* Effect.flip(Amqp.publish(channel, "", "anywhere", Buffer.from("x"), {}))
        assert.strictEqual(publish.reason, "Closed")
        assert.instanceOf(publish.cause, Error)
        assert.strictEqual(publish.cause instanceof Error ? publish.cause.name : "", "IllegalOperationError")
        const declare = yield* Effect.flip(Amqp.assertQueue(channel, `t.closed.${suffix()}`, { autoDelete: true }))
        assert.strictEqual(declare.reason, "Closed")
      }).pipe(Effect.scoped))

    it.live("an operation waiting on a channel that a neighbour's error closed is Closed; the culprit keeps its code", () =>
      Effect.gen(function*() {
        const { channel } = yield* raw
        const queue = yield* Amqp.assertQueue(channel, `t.neighbour.${suffix()}`, { autoDelete: true })
        // one channel answers one operation at a time: the second waits behind the failing first
        const [culprit, bystander] = yield* Effect.all([
          Effect.flip(Amqp.assertQueue(channel, queue, { autoDelete: true, messageTtl: 5 })),
          Effect.flip(Amqp.assertQueue(channel, `t.bystander.${suffix()}`, { autoDelete: true }))
        ], { concurrency: "unbounded" })
        assert.strictEqual(culprit.reason, "Precondition")
        assert.strictEqual(codeOf(culprit), 406)
        // amqplib fails it with a plain Error: the channel's closed state says why
        assert.strictEqual(bystander.reason, "Closed")
        assert.isUndefined(codeOf(bystander))
        assert.isTrue(Amqp.isClosed(channel))
      }).pipe(Effect.scoped))

    it.live("on a closed connection, opening a channel is Closed", () =>
      Effect.gen(function*() {
        const { connection } = yield* raw
        yield* Amqp.closeConnection(connection)
        const error = yield* Effect.flip(Amqp.createChannel(connection))
        assert.strictEqual(error.reason, "Closed")
        assert.strictEqual(error.cause instanceof Error ? error.cause.name : "", "IllegalOperationError")
      }).pipe(Effect.scoped))

    it.live("a broker's nack of a confirmed publish is Nacked (a full queue that rejects publishes)", () =>
      Effect.gen(function*() {
        const { connection } = yield* raw
        const confirms = yield* Amqp.createConfirmChannel(connection)
        const queue = yield* Amqp.assertQueue(confirms, `t.full.${suffix()}`, {
          autoDelete: true,
          arguments: { "x-max-length": 0, "x-overflow": "reject-publish" }
        })
        const error = yield* Effect.flip(Amqp.publishConfirm(confirms, "", queue, Buffer.from("x"), {}))
        assert.strictEqual(error.reason, "Nacked")
        assert.instanceOf(error.cause, Error)
        // the channel stays open
        assert.isFalse(Amqp.isClosed(confirms))
        yield* Amqp.deleteQueue(confirms, queue)
      }).pipe(Effect.scoped))

    it("the reason never comes from an error's message", () => {
      const forced = Object.assign(new Error("x"), { code: 320 })
      assert.strictEqual(Amqp.reasonOf(new Error("Channel closed by server: 404 (NOT-FOUND)"), false), "Transport")
      assert.strictEqual(Amqp.reasonOf(new Error("channel closed"), false), "Transport")
      assert.strictEqual(Amqp.reasonOf(new Error("read ECONNRESET"), false), "Transport")
      assert.strictEqual(Amqp.reasonOf(new Error("anything"), true), "Closed")
      assert.strictEqual(Amqp.reasonOf(Object.assign(new Error("x"), { code: 404 }), true), "NotFound")
      assert.strictEqual(Amqp.reasonOf(Object.assign(new Error("x"), { code: 405 }), false), "Precondition")
      assert.strictEqual(Amqp.reasonOf(Object.assign(new Error("x"), { code: 406 }), false), "Precondition")
      assert.strictEqual(Amqp.reasonOf(forced, false), "Closed")
      assert.strictEqual(Amqp.reasonOf(Object.assign(new Error("x"), { code: "ECONNRESET" }), false), "Closed")
      assert.strictEqual(Amqp.reasonOf(Object.assign(new Error("x"), { code: "ECONNREFUSED" }), false), "Transport")
      const error = Amqp.toBrokerError(forced, "doing", false)
      assert.strictEqual(error.cause, forced)
      assert.strictEqual(error.message, "doing: x")
    })
  })

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

const faultPort = checkoutPort("amqpFaults", process.env["MESH_RABBITMQ_FAULT_PORT"])
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
        const quorum = yield* broker.declareQueue(`t.fault.qq.${id}`, { durable: true, type: "quorum", deliveryLimit: 3 })
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
        // the reply queue opened before the restart said that replies in flight were lost, and works again
        assert.strictEqual((yield* nextIncoming(replies.incoming))._tag, "Lost")
        yield* replies.publish("", `t.ghost.${id}`, encode("x"), { mandatory: true, correlationId: "r-1" })
        const returned = yield* nextIncoming(replies.incoming, "10 seconds")
        assert(returned._tag === "Returned", returned._tag)
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
  it.live("readiness follows the broker: /readyz answers 503 while the node is away and 200 after; the reconnect is counted", () =>
    Effect.gen(function*() {
      const contract = ServiceContract.make(`ready-${suffix()}`, ReadyRpcs)
      const port = yield* freePort
      const base = `http://127.0.0.1:${port}`
      const readyz = Effect.promise(async () => {
        const response = await fetch(`${base}/readyz`)
        return { status: response.status, body: (await response.json()) as unknown }
      })
      const until = (status: number) =>
        readyz.pipe(
          Effect.repeat({ until: (r) => r.status === status, schedule: Schedule.spaced("100 millis") }),
          Effect.timeout("60 seconds")
        )
      yield* Effect.gen(function*() {
        assert.deepStrictEqual(yield* readyz, { status: 200, body: { ready: true, broker: "connected", services: "serving" } })
        yield* rabbit("stop")
        assert.deepStrictEqual(yield* until(503), { status: 503, body: { ready: false, broker: "down", services: "serving" } })
        yield* rabbit("start")
        assert.deepStrictEqual(yield* until(200), { status: 200, body: { ready: true, broker: "connected", services: "serving" } })
        // consumers are back: the service answers
        const client = yield* ServiceClient.make(contract, { timeout: "10 seconds" })
        assert.strictEqual(yield* client.ping(), "pong")
        const metrics = yield* Effect.promise(() => fetch(`${base}/metrics`).then((r) => r.text()))
        assert.match(metrics, /^mesh_broker_reconnects\{messaging_system="rabbitmq"\} [1-9]/m, metrics)
      }).pipe(
        Effect.provide(Mesh.layer(
          Service.make(contract, { handlers: { ping: () => Effect.succeed("pong") } }),
          { broker: brokerLayer(url), metrics: { port, host: "127.0.0.1" } }
        ))
      )
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
