/**
 * The HTTP RPC gateway on a real socket: statuses, headers and bodies, effect/rpc's HTTP protocol for
 * typed clients, call context and auth, and the gateway calling a service behind RabbitMQ.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Stream } from "effect"
import { FetchHttpClient, HttpClient, HttpClientRequest } from "effect/http"
import { AmqpBroker, Broker, HttpGateway, MemoryBroker, ServiceClient } from "effect-mesh"
import type { BrokerError } from "effect-mesh/Broker"
import * as topology from "../src/internal/topology.ts"
import { amqpUrl } from "./fixtures/amqpUrl.ts"
import { contracts, services } from "./fixtures/services.ts"

const suffix = () => crypto.randomUUID().slice(0, 8)

const mesh = (broker: Layer.Layer<Broker.Broker, BrokerError>, c: ReturnType<typeof contracts>) =>
  services(c).pipe(Layer.provideMerge(ServiceClient.layer), Layer.provideMerge(broker), Layer.fresh)

const gateway = (c: ReturnType<typeof contracts>) =>
  HttpGateway.layerTest({
    contracts: [c.math, c.first],
    errorStatus: { DivisionByZero: 409 },
    maxBodySize: "1 KiB",
    timeout: "2 seconds"
  }).pipe(Layer.provide(FetchHttpClient.layer))

const post = (path: string, body: string, headers: Record<string, string> = {}) =>
  Effect.flatMap(HttpClient.HttpClient, (http) =>
    http.execute(
      HttpClientRequest.post(path).pipe(
        HttpClientRequest.bodyText(body, "application/json"),
        HttpClientRequest.setHeaders(headers)
      )
    ))

const postJson = (path: string, body: unknown, headers: Record<string, string> = {}) =>
  Effect.gen(function*() {
    const response = yield* post(path, JSON.stringify(body), headers)
    const json = yield* response.json
    return { status: response.status, headers: response.headers, body: json as Record<string, unknown> }
  })

describe("HttpGateway: POST /rpc/<service>/<method> over the memory broker", () => {
  const c = contracts(suffix())
  const layer = gateway(c).pipe(Layer.provideMerge(mesh(MemoryBroker.layer, c)))

  it.live("a call answers 200 with the JSON result and a correlation id header", () =>
    Effect.gen(function*() {
      const fresh = yield* postJson(`/rpc/${c.math.name}/add`, { a: 1, b: 2 })
      assert.strictEqual(fresh.status, 200)
      assert.strictEqual(fresh.body as unknown, 3)
      assert.strictEqual(fresh.headers["content-type"], "application/json")
      assert.isString(fresh.headers["x-correlation-id"])
      const given = yield* postJson(`/rpc/${c.math.name}/add`, { a: 2, b: 2 }, { "x-correlation-id": "order-7" })
      assert.strictEqual(given.headers["x-correlation-id"], "order-7")
    }).pipe(Effect.provide(layer)))

  it.live("a contract error gets the chosen status and its encoded fields", () =>
    Effect.gen(function*() {
      const { body, status } = yield* postJson(`/rpc/${c.math.name}/divide`, { a: 1, b: 0 })
      assert.strictEqual(status, 409)
      assert.strictEqual(body["_tag"], "DivisionByZero")
      assert.strictEqual(body["dividend"], 1)
    }).pipe(Effect.provide(layer)))

  it.live("bad JSON is 400, a payload failing its schema is 400 with the issue", () =>
    Effect.gen(function*() {
      const badJson = yield* post(`/rpc/${c.math.name}/add`, "{ not json")
      assert.strictEqual(badJson.status, 400)
      assert.strictEqual(((yield* badJson.json) as Record<string, unknown>)["_tag"], "BadRequest")
      const invalid = yield* postJson(`/rpc/${c.math.name}/add`, { a: "one", b: 2 })
      assert.strictEqual(invalid.status, 400)
      assert.strictEqual(invalid.body["_tag"], "InvalidPayload")
      assert.include(invalid.body["issue"], `["a"]`)
      // what `mesh call` says for the same payload, not the JSON codec's "Infinity" | "-Infinity" | "NaN"
      assert.include(invalid.body["issue"], "Expected number")
      assert.notInclude(invalid.body["issue"], "Infinity")
    }).pipe(Effect.provide(layer)))

  it.live("a body over the limit is 413", () =>
    Effect.gen(function*() {
      const response = yield* post(`/rpc/${c.math.name}/add`, JSON.stringify({ a: 1, b: 2, pad: "x".repeat(4096) }))
      assert.strictEqual(response.status, 413)
    }).pipe(Effect.provide(layer)))

  it.live("an unknown service or method is 404, a defect 500 without a stack, a timeout 504", () =>
    Effect.gen(function*() {
      const service = yield* postJson(`/rpc/ghost/add`, { a: 1, b: 2 })
      assert.strictEqual(service.status, 404)
      assert.strictEqual(service.body["_tag"], "ServiceNotFound")
      const method = yield* postJson(`/rpc/${c.math.name}/nope`, {})
      assert.strictEqual(method.status, 404)
      assert.strictEqual(method.body["_tag"], "MethodNotFound")
      const defect = yield* postJson(`/rpc/${c.math.name}/crash`, { message: "boom" })
      assert.strictEqual(defect.status, 500)
      assert.strictEqual(defect.body["_tag"], "RemoteDefect")
      assert.strictEqual(defect.body["message"], "boom")
      assert.notProperty(defect.body, "stack")
      const timeout = yield* postJson(`/rpc/${c.math.name}/sleep`, { millis: 10_000 })
      assert.strictEqual(timeout.status, 504)
      assert.strictEqual(timeout.body["_tag"], "CallTimeout")
      const route = yield* postJson(`/nowhere`, {})
      assert.strictEqual(route.status, 404)
    }).pipe(Effect.provide(layer)))

  it.live("a streaming method answers with Server-Sent Events, in order", () =>
    Effect.gen(function*() {
      const response = yield* post(`/rpc/${c.math.name}/countdown`, JSON.stringify({ from: 3 }))
      assert.strictEqual(response.status, 200)
      assert.strictEqual(response.headers["content-type"], "text/event-stream")
      const text = yield* response.text
      const events = text.split("\n\n").filter((e) => e !== "")
      assert.deepStrictEqual(events, [
        "id: 0\ndata: 3",
        "id: 1\ndata: 2",
        "id: 2\ndata: 1",
        "id: 3\ndata: 0",
        "event: end\ndata: null"
      ])
    }).pipe(Effect.provide(layer)))

  it.live("x-correlation-id and x-user-id become the call context of the whole call tree", () =>
    Effect.gen(function*() {
      const { body, status } = yield* postJson(`/rpc/${c.first.name}/hop`, {}, {
        "x-correlation-id": "order-42",
        "x-user-id": "ada"
      })
      assert.strictEqual(status, 200)
      assert.strictEqual(body["correlationId"], "order-42")
      assert.strictEqual(body["userId"], "ada")
      assert.strictEqual((body["callIdStack"] as Array<string>).length, 3)
    }).pipe(Effect.provide(layer)))
})

describe("HttpGateway: a service with a queue but no instance", () => {
  const c = contracts(suffix())
  const layer = HttpGateway.layerTest({ contracts: [c.math] }).pipe(
    Layer.provide(FetchHttpClient.layer),
    Layer.provideMerge(ServiceClient.layer),
    Layer.provideMerge(Layer.fresh(MemoryBroker.layer))
  )

  it.live("is 503 Service Unavailable (ServiceNotFound NoConsumer), not 404, within seconds", () =>
    Effect.gen(function*() {
      const broker = yield* Broker.Broker
      yield* broker.declareQueue(topology.rpcQueue(c.math.name), { durable: true })
      const answer = yield* postJson(`/rpc/${c.math.name}/add`, { a: 1, b: 2 })
      assert.strictEqual(answer.status, 503)
      assert.strictEqual(answer.body["_tag"], "ServiceNotFound")
      assert.strictEqual(answer.body["reason"], "NoConsumer")
    }).pipe(Effect.provide(layer)))
})

describe("HttpGateway: effect/rpc's HTTP protocol for typed clients", () => {
  const c = contracts(suffix())
  const server = gateway(c).pipe(Layer.provideMerge(mesh(MemoryBroker.layer, c)))
  const typed = <A, E, R>(f: Effect.Effect<A, E, R>) =>
    Effect.gen(function*() {
      const url = yield* HttpGateway.url
      return yield* f.pipe(
        Effect.provide(HttpGateway.layerClient({ url }).pipe(Layer.provide(FetchHttpClient.layer)))
      )
    })

  it.live("ServiceClient.make works over HTTP with the mesh's types and errors", () =>
    typed(Effect.gen(function*() {
      const math = yield* ServiceClient.make(c.math)
      assert.strictEqual(yield* math.add({ a: 20, b: 22 }), 42)
      const error = yield* Effect.flip(math.divide({ a: 1, b: 0 }))
      assert.strictEqual(error._tag, "DivisionByZero")
      const items = yield* Stream.runCollect(math.countdown({ from: 3 }))
      assert.deepStrictEqual(Array.from(items), [3, 2, 1, 0])
      const defect = yield* Effect.flip(math.crash({ message: "boom" }))
      assert.strictEqual(defect._tag, "RemoteDefect")
      const ghost = yield* ServiceClient.make({ ...c.math, name: `ghost-${suffix()}` })
      assert.strictEqual((yield* Effect.flip(ghost.add({ a: 1, b: 1 })))._tag, "TransportError")
    })).pipe(Effect.provide(server)))
})

describe("HttpGateway.authenticate", () => {
  const c = contracts(suffix())
  const auth = HttpGateway.authenticate((request) => {
    const token = request.headers["authorization"]
    if (token === undefined) return Effect.fail(new HttpGateway.Unauthorized({ message: "no token" }))
    if (token === "Bearer mallory") return Effect.fail(new HttpGateway.Forbidden({ message: "not you" }))
    return Effect.succeed({ userId: token.replace("Bearer ", "") })
  })
  const layer = auth.pipe(
    Layer.provideMerge(gateway(c)),
    Layer.provideMerge(mesh(MemoryBroker.layer, c))
  )

  it.live("401 without a token, 403 when refused, and the authenticated user in the call context", () =>
    Effect.gen(function*() {
      const none = yield* postJson(`/rpc/${c.first.name}/hop`, {})
      assert.strictEqual(none.status, 401)
      assert.strictEqual(none.body["_tag"], "Unauthorized")
      const refused = yield* postJson(`/rpc/${c.first.name}/hop`, {}, { authorization: "Bearer mallory" })
      assert.strictEqual(refused.status, 403)
      const ok = yield* postJson(`/rpc/${c.first.name}/hop`, {}, {
        authorization: "Bearer grace",
        "x-user-id": "forged"
      })
      assert.strictEqual(ok.status, 200)
      assert.strictEqual(ok.body["userId"], "grace")
    }).pipe(Effect.provide(layer)))
})

describe("HttpGateway over RabbitMQ", () => {
  const c = contracts(suffix())
  // two connections: the services run behind one, the gateway calls them through the other
  const servicesInstance = mesh(AmqpBroker.layer({ url: amqpUrl() }), c)
  const gatewayInstance = gateway(c).pipe(
    Layer.provideMerge(ServiceClient.layer),
    Layer.provideMerge(Layer.fresh(AmqpBroker.layer({ url: amqpUrl() })))
  )

  it.live("the gateway calls a service that runs on another instance, behind the real broker", () =>
    Effect.gen(function*() {
      yield* Layer.build(servicesInstance)
      const ok = yield* postJson(`/rpc/${c.math.name}/add`, { a: 40, b: 2 })
      assert.strictEqual(ok.status, 200)
      assert.strictEqual(ok.body as unknown, 42)
      const error = yield* postJson(`/rpc/${c.math.name}/divide`, { a: 1, b: 0 })
      assert.strictEqual(error.status, 409)
      const hop = yield* postJson(`/rpc/${c.first.name}/hop`, {}, { "x-correlation-id": "amqp-1" })
      assert.strictEqual(hop.body["correlationId"], "amqp-1")
    }).pipe(Effect.scoped, Effect.provide(gatewayInstance)))
})
