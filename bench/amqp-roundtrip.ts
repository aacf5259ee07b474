/**
 * Request/reply round-trips over RabbitMQ: raw amqplib against `AmqpBroker`, sequential and with 64
 * in flight. Run with `node bench/amqp-roundtrip.ts` (AMQP_URL, default the test node on 5699).
 */
import amqp from "amqplib"
import { Deferred, Effect, Stream } from "effect"
import * as AmqpBroker from "../src/AmqpBroker.ts"
import { Broker } from "../src/Broker.ts"

const url = process.env["AMQP_URL"] ?? "amqp://guest:guest@127.0.0.1:5699"
const N = Number(process.env["N"] ?? "3000")
const INFLIGHT = 64
const body = Buffer.from(JSON.stringify({ a: 1, b: 2 }))

const raw = async () => {
  const conn = await amqp.connect(url, { noDelay: true })
  const server = await conn.createChannel()
  const queue = `bench.raw.${crypto.randomUUID()}`
  await server.assertQueue(queue, { autoDelete: true })
  await server.prefetch(INFLIGHT)
  await server.consume(queue, (msg) => {
    if (msg === null) return
    server.publish("", msg.properties.replyTo, msg.content, { correlationId: msg.properties.correlationId })
    server.ack(msg)
  })
  const client = await conn.createChannel()
  const pending = new Map<string, () => void>()
  await client.consume("amq.rabbitmq.reply-to", (msg) => {
    if (msg !== null) pending.get(msg.properties.correlationId)?.()
  }, { noAck: true })
  let id = 0
  const call = () =>
    new Promise<void>((resolve) => {
      const correlationId = String(id++)
      pending.set(correlationId, () => {
        pending.delete(correlationId)
        resolve()
      })
      client.publish("", queue, body, { correlationId, replyTo: "amq.rabbitmq.reply-to", mandatory: true })
    })
  const seq = performance.now()
  for (let i = 0; i < N; i++) await call()
  const seqMs = performance.now() - seq
  const par = performance.now()
  let next = 0
  await Promise.all(Array.from({ length: INFLIGHT }, async () => {
    while (next++ < N) await call()
  }))
  const parMs = performance.now() - par
  await conn.close()
  return { seqMs, parMs }
}

const viaBroker = Effect.gen(function*() {
  const broker = yield* Broker
  const queue = yield* broker.declareQueue(`bench.broker.${crypto.randomUUID()}`, { autoDelete: true })
  const consumer = yield* broker.consume(queue, { prefetch: INFLIGHT })
  yield* consumer.deliveries.pipe(
    Stream.runForEach((d) =>
      Effect.andThen(
        broker.publish("", d.properties.replyTo ?? "", d.body, { correlationId: d.properties.correlationId }),
        d.ack
      )
    ),
    Effect.forkScoped
  )
  const replies = yield* broker.replyQueue
  const pending = new Map<string, Deferred.Deferred<void>>()
  yield* replies.incoming.pipe(
    Stream.runForEach((incoming) =>
      Effect.sync(() => {
        const id = incoming.message.properties.correlationId ?? ""
        const deferred = pending.get(id)
        if (deferred !== undefined) {
          pending.delete(id)
          Deferred.doneUnsafe(deferred, Effect.void)
        }
      })
    ),
    Effect.forkScoped
  )
  let id = 0
  const call = Effect.suspend(() => {
    const correlationId = String(id++)
    const deferred = Deferred.makeUnsafe<void>()
    pending.set(correlationId, deferred)
    return Effect.andThen(
      replies.publish("", queue, body, { correlationId, mandatory: true }),
      Deferred.await(deferred)
    )
  })
  const seq = performance.now()
  for (let i = 0; i < N; i++) yield* call
  const seqMs = performance.now() - seq
  const par = performance.now()
  yield* Effect.forEach(Array.from({ length: N }), () => call, { concurrency: INFLIGHT, discard: true })
  const parMs = performance.now() - par
  return { seqMs, parMs }
}).pipe(Effect.scoped, Effect.provide(AmqpBroker.layer({ url })))

const report = (name: string, r: { seqMs: number; parMs: number }) =>
  console.log(
    `${name.padEnd(10)} sequential ${(N / r.seqMs * 1000).toFixed(0).padStart(6)}/s (${
      (r.seqMs / N * 1000).toFixed(0)
    } µs/call)   ${INFLIGHT} in flight ${(N / r.parMs * 1000).toFixed(0).padStart(6)}/s`
  )

for (let round = 0; round < 2; round++) {
  report("amqplib", await raw())
  report("AmqpBroker", await Effect.runPromise(viaBroker))
}
