/**
 * The floor: what a careful hand-written amqplib program does for the same work.
 *
 * RPC: a durable quorum queue with a delivery limit and dead-lettering, like the service queues
 * `Service.make({ queueType: "quorum" })` declares, and a durable classic queue with dead-lettering
 * like `queueType: "classic"` declares (`raw-classic`); `raw-headers` uses the quorum queue with
 * requests that carry headers like effect-mesh's. The server parses the JSON request, publishes the
 * JSON reply to the caller's direct reply-to address, then acks; a request in MessagePack (msgpackr,
 * standard maps, as the mesh writes it) is read and answered in MessagePack. The client publishes `mandatory`
 * requests with a correlation id and matches replies on `amq.rabbitmq.reply-to`.
 * Events: a durable topic exchange and a queue as `Event.handle` declares them, quorum (`raw`) or
 * classic (`raw-events-classic`), each source with an exchange of its own; persistent messages
 * published on a confirm channel, a consumer (the mesh's prefetch) that parses each event and acks it.
 * Every connection has `noDelay`.
 */
import amqp from "amqplib"
import { Packr, Unpackr } from "msgpackr"
import type { Impl, Names, PublishMeasure, PublishRun, RpcMeasure, RpcRun } from "./shared.ts"
import { cpuMicros, Latencies, payloadOf, serverConcurrency } from "./shared.ts"

const contentType = "application/json"
const msgpackType = "application/msgpack"
const packr = new Packr({ useRecords: false })
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true })
const directReplyTo = "amq.rabbitmq.reply-to"

const quorum = (deadQueue: string, deliveryLimit: number): amqp.Options.AssertQueue => ({
  durable: true,
  deadLetterExchange: "",
  deadLetterRoutingKey: deadQueue,
  arguments: { "x-queue-type": "quorum", "x-delivery-limit": deliveryLimit }
})

/** a classic queue as the mesh declares one: durable, dead-lettering, its type said explicitly */
const classic = (deadQueue: string): amqp.Options.AssertQueue => ({
  durable: true,
  deadLetterExchange: "",
  deadLetterRoutingKey: deadQueue,
  arguments: { "x-queue-type": "classic" }
})

const waitDrain = (channel: amqp.Channel): Promise<void> =>
  new Promise((resolve) => channel.once("drain", () => resolve()))

export interface RawServer {
  readonly expectEvents: (count: number) => Promise<void>
  readonly close: () => Promise<void>
}

/** `base`: the names `--compare`'s peers use, whose queues this server removes too when it stops */
export const server = async (url: string, n: Names, base: Names): Promise<RawServer> => {
  const connection = await amqp.connect(url, { noDelay: true })
  const setup = await connection.createChannel()
  await setup.assertQueue(n.raw.rpcDeadQueue, { durable: true })
  await setup.assertQueue(n.raw.rpcQueue, quorum(n.raw.rpcDeadQueue, 4))
  await setup.assertQueue(n.raw.rpcClassicQueue, classic(n.raw.rpcDeadQueue))
  await setup.assertExchange(n.raw.eventExchange, "topic", { durable: true })
  await setup.assertQueue(n.raw.eventDeadQueue, { durable: true })
  await setup.assertQueue(n.raw.eventQueue, quorum(n.raw.eventDeadQueue, 9))
  await setup.bindQueue(n.raw.eventQueue, n.raw.eventExchange, "tick")
  await setup.assertExchange(n.raw.eventClassicExchange, "topic", { durable: true })
  await setup.assertQueue(n.raw.eventClassicDeadQueue, { durable: true })
  await setup.assertQueue(n.raw.eventClassicQueue, classic(n.raw.eventClassicDeadQueue))
  await setup.bindQueue(n.raw.eventClassicQueue, n.raw.eventClassicExchange, "tick")

  const serveRpc = async (queue: string) => {
    const channel = await connection.createChannel()
    await channel.prefetch(serverConcurrency)
    await channel.consume(queue, (message) => {
      if (message === null) return
      const { replyTo, correlationId, type } = message.properties as { replyTo: string; correlationId: string; type: string }
      const packed = message.properties.contentType === msgpackType
      const payload = (packed ? unpackr.unpack(message.content) : JSON.parse(message.content.toString("utf8"))) as { a: number; b: number; data: string }
      const result = type === "echo" ? payload.data : payload.a + payload.b
      if (packed) channel.publish("", replyTo, packr.pack(result), { correlationId, contentType: msgpackType })
      else channel.publish("", replyTo, Buffer.from(JSON.stringify(result)), { correlationId, contentType })
      channel.ack(message)
    })
  }
  await serveRpc(n.raw.rpcQueue)
  await serveRpc(n.raw.rpcClassicQueue)

  // one count for both queues: the orchestrator measures one peer at a time
  let expected = 0
  let handled = 0
  let done: (() => void) | undefined
  const handleEvents = async (queue: string) => {
    const channel = await connection.createChannel()
    await channel.prefetch(serverConcurrency)
    await channel.consume(queue, (message) => {
      if (message === null) return
      JSON.parse(message.content.toString("utf8"))
      channel.ack(message)
      if (++handled === expected) done?.()
    })
  }
  await handleEvents(n.raw.eventQueue)
  await handleEvents(n.raw.eventClassicQueue)

  return {
    expectEvents: (count) => {
      handled = 0
      expected = count
      return new Promise((resolve) => {
        done = resolve
      })
    },
    // the raw server stops last: it also removes what the mesh declared for this run, the compared
    // checkout's included (deleting a queue or exchange that is not there is no error)
    close: async () => {
      const queues = [
        n.raw.rpcQueue,
        n.raw.rpcClassicQueue,
        n.raw.rpcDeadQueue,
        n.raw.eventQueue,
        n.raw.eventDeadQueue,
        n.raw.eventClassicQueue,
        n.raw.eventClassicDeadQueue,
        ...n.oursQueues,
        ...base.oursQueues
      ]
      for (const queue of queues) await setup.deleteQueue(queue)
      for (const exchange of [n.raw.eventExchange, n.raw.eventClassicExchange, ...n.oursExchanges, ...base.oursExchanges]) {
        await setup.deleteExchange(exchange)
      }
      await connection.close()
    }
  }
}

export interface RawClient {
  readonly rpc: (run: RpcRun, durationMs: number) => Promise<RpcMeasure>
  readonly publish: (run: PublishRun) => Promise<PublishMeasure>
  readonly close: () => Promise<void>
}

export const client = async (url: string, n: Names): Promise<RawClient> => {
  const connection = await amqp.connect(url, { noDelay: true })
  const channel = await connection.createChannel()
  const pending = new Map<string, (body: unknown) => void>()
  await channel.consume(directReplyTo, (message) => {
    if (message === null) return
    const resolve = pending.get(message.properties.correlationId as string)
    if (resolve === undefined) return
    pending.delete(message.properties.correlationId as string)
    resolve(
      message.properties.contentType === msgpackType ? unpackr.unpack(message.content) : JSON.parse(message.content.toString("utf8"))
    )
  }, { noAck: true })
  const confirms = await connection.createConfirmChannel()

  let nextId = 0
  // what effect-mesh's requests carry besides raw's properties (`raw-headers`): the call context, the
  // client id and the caller's span, as strings of the same lengths
  const client = crypto.randomUUID()
  const meshHeaders = (correlationId: string) => ({
    "x-mesh-correlation-id": `0123456789${correlationId}`,
    "x-mesh-call-id-stack": `bench.add.0123456789${correlationId}`,
    "x-mesh-client": client,
    traceparent: `00-${"0".repeat(32)}-${"1".repeat(16)}-01`
  })
  const call = async (queue: string, method: string, payload: unknown, headers: boolean, packed: boolean): Promise<unknown> => {
    const correlationId = String(nextId++)
    const reply = new Promise<unknown>((resolve) => pending.set(correlationId, resolve))
    const written = channel.publish("", queue, packed ? packr.pack(payload) : Buffer.from(JSON.stringify(payload)), {
      correlationId,
      replyTo: directReplyTo,
      mandatory: true,
      contentType: packed ? msgpackType : contentType,
      type: method,
      ...(headers ? { headers: meshHeaders(correlationId) } : {})
    })
    if (!written) await waitDrain(channel)
    return reply
  }

  const queueOf = (impl: Impl) => impl === "raw-classic" ? n.raw.rpcClassicQueue : n.raw.rpcQueue

  return {
    rpc: async (run, durationMs) => {
      const queue = queueOf(run.impl)
      const payload = run.method === "add" ? { a: 1, b: 2 } : { data: payloadOf(run.size) }
      const latencies = new Latencies()
      let calls = 0
      const cpu = process.cpuUsage()
      const start = performance.now()
      const end = start + durationMs
      const worker = async () => {
        while (performance.now() < end) {
          const t0 = performance.now()
          await call(queue, run.method, payload, run.impl === "raw-headers", run.format === "msgpack")
          latencies.record(performance.now() - t0)
          calls++
        }
      }
      await Promise.all(Array.from({ length: run.inFlight }, worker))
      const elapsedMs = performance.now() - start
      return { calls, elapsedMs, ...latencies.summary(), cpuMicros: cpuMicros(cpu) }
    },
    publish: (run) =>
      new Promise((resolve, reject) => {
        const cpu = process.cpuUsage()
        const start = performance.now()
        const exchange = run.impl === "raw-events-classic" ? n.raw.eventClassicExchange : n.raw.eventExchange
        const note = payloadOf(40)
        let sent = 0
        let confirmed = 0
        const pump = () => {
          while (sent < run.count && sent - confirmed < run.inFlight) {
            const body = Buffer.from(JSON.stringify({ seq: sent++, note }))
            confirms.publish(exchange, "tick", body, { persistent: true, contentType, type: "tick" }, (error) => {
              if (error !== null && error !== undefined) {
                reject(error instanceof Error ? error : new Error(String(error)))
                return
              }
              if (++confirmed === run.count) {
                resolve({ elapsedMs: performance.now() - start, cpuMicros: cpuMicros(cpu) })
              } else {
                pump()
              }
            })
          }
        }
        pump()
      }),
    close: () => connection.close()
  }
}
