/**
 * HTTP entrypoints of a service on a real socket: decoding of path, query, headers and body by Schema,
 * typed answers with status and headers, and the status of every kind of error.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Schema } from "effect"
import { FetchHttpClient, HttpClient, HttpClientRequest } from "effect/http"
import { Rpc, RpcGroup } from "effect/rpc"
import { CallContext, HttpEntrypoint, HttpGateway, MemoryBroker, Service, ServiceClient, ServiceContract } from "effect-mesh"

class Order extends Schema.Class<Order>("test/Order")({
  id: Schema.Int,
  item: Schema.String,
  qty: Schema.Int
}) {}

class OrderNotFound extends Schema.TaggedError<OrderNotFound>()("OrderNotFound", { id: Schema.Int }) {}
class Undeclared extends Schema.TaggedError<Undeclared>()("Undeclared", {}) {}

const Orders = ServiceContract.make(`orders-${crypto.randomUUID().slice(0, 8)}`, RpcGroup.make(Rpc.make("ping")))

const entrypoints = [
  HttpEntrypoint.make({
    method: "GET",
    path: "/orders/:id",
    params: Schema.Struct({ id: Schema.FiniteFromString.pipe(Schema.check(Schema.isInt())) }),
    query: Schema.Struct({ qty: Schema.optionalKey(Schema.FiniteFromString) }),
    success: Order,
    errors: { 404: OrderNotFound }
  }, ({ params, query }) => {
    if (params.id === 404) return Effect.fail(new OrderNotFound({ id: params.id }))
    if (params.id === 500) return Effect.die(new Error("secret detail"))
    if (params.id === 501) return Effect.fail(new Undeclared()) as unknown as Effect.Effect<Order>
    return Effect.succeed(new Order({ id: params.id, item: "book", qty: query.qty ?? 1 }))
  }),
  HttpEntrypoint.make({
    method: "POST",
    path: "/orders",
    headers: Schema.Struct({ "x-api-version": Schema.Literal("2") }),
    body: Schema.Struct({ item: Schema.NonEmptyString, qty: Schema.Int.pipe(Schema.check(Schema.isGreaterThan(0))) }),
    success: Order
  }, ({ body }) =>
    Effect.succeed(
      HttpEntrypoint.reply(new Order({ id: 7, ...body }), { status: 201, headers: { location: "/orders/7" } })
    )),
  HttpEntrypoint.make({ method: "DELETE", path: "/orders/:id" }, () => Effect.void),
  HttpEntrypoint.make({
    method: "GET",
    path: "/context",
    success: Schema.Struct({ correlationId: Schema.String, userId: Schema.String, callIdStack: Schema.Array(Schema.String) })
  }, () =>
    Effect.map(CallContext.CallContext, (ctx) => ({
      correlationId: ctx.correlationId,
      userId: ctx.userId ?? "",
      callIdStack: ctx.callIdStack
    })))
]

const OrdersLive = Service.make(Orders, { handlers: { ping: () => Effect.void }, entrypoints })

const layer = OrdersLive.pipe(
  Layer.provideMerge(HttpGateway.layerTest({ maxBodySize: "1 KiB" })),
  Layer.provideMerge(ServiceClient.layer),
  Layer.provideMerge(MemoryBroker.layer),
  Layer.provide(FetchHttpClient.layer),
  Layer.fresh
)

const send = (request: HttpClientRequest.HttpClientRequest) =>
  Effect.gen(function*() {
    const response = yield* (yield* HttpClient.HttpClient).execute(request)
    const text = yield* response.text
    return { status: response.status, headers: response.headers, body: text === "" ? undefined : JSON.parse(text) }
  })

const postOrder = (body: string, headers: Record<string, string> = { "x-api-version": "2" }) =>
  send(HttpClientRequest.post("/orders").pipe(
    HttpClientRequest.bodyText(body, "application/json"),
    HttpClientRequest.setHeaders(headers)
  ))

describe("HttpEntrypoint", () => {
  it.live("path params and query decoded by Schema, the answer encoded with 200", () =>
    Effect.gen(function*() {
      const ok = yield* send(HttpClientRequest.get("/orders/12?qty=3"))
      assert.strictEqual(ok.status, 200)
      assert.strictEqual(ok.headers["content-type"], "application/json")
      assert.deepStrictEqual(ok.body, { id: 12, item: "book", qty: 3 })
    }).pipe(Effect.provide(layer)))

  it.live("a reply with its own status and headers; no success schema answers 204", () =>
    Effect.gen(function*() {
      const created = yield* postOrder(JSON.stringify({ item: "pen", qty: 2 }))
      assert.strictEqual(created.status, 201)
      assert.strictEqual(created.headers["location"], "/orders/7")
      assert.deepStrictEqual(created.body, { id: 7, item: "pen", qty: 2 })
      const deleted = yield* send(HttpClientRequest.delete("/orders/7"))
      assert.strictEqual(deleted.status, 204)
    }).pipe(Effect.provide(layer)))

  it.live("400 with the schema issue for bad params, query, headers, body, and for bad JSON", () =>
    Effect.gen(function*() {
      const params = yield* send(HttpClientRequest.get("/orders/abc"))
      assert.strictEqual(params.status, 400)
      assert.strictEqual(params.body.message, "invalid path parameters")
      assert.include(params.body.issue, `["id"]`)
      const query = yield* send(HttpClientRequest.get("/orders/1?qty=many"))
      assert.strictEqual(query.status, 400)
      assert.strictEqual(query.body.message, "invalid query")
      const headers = yield* postOrder(JSON.stringify({ item: "pen", qty: 2 }), { "x-api-version": "1" })
      assert.strictEqual(headers.status, 400)
      assert.strictEqual(headers.body.message, "invalid headers")
      const body = yield* postOrder(JSON.stringify({ item: "", qty: 0 }))
      assert.strictEqual(body.status, 400)
      assert.strictEqual(body.body.message, "invalid body")
      assert.include(body.body.issue, `["item"]`)
      const json = yield* postOrder("{ nope")
      assert.strictEqual(json.status, 400)
      assert.strictEqual(json.body._tag, "BadRequest")
    }).pipe(Effect.provide(layer)))

  it.live("413 over the body limit", () =>
    Effect.gen(function*() {
      const big = yield* postOrder(JSON.stringify({ item: "x".repeat(2048), qty: 1 }))
      assert.strictEqual(big.status, 413)
      assert.strictEqual(big.body._tag, "PayloadTooLarge")
    }).pipe(Effect.provide(layer)))

  it.live("a declared error gets its status and fields; a defect or an undeclared failure 500 without detail", () =>
    Effect.gen(function*() {
      const missing = yield* send(HttpClientRequest.get("/orders/404"))
      assert.strictEqual(missing.status, 404)
      assert.deepInclude(missing.body, { _tag: "OrderNotFound", id: 404 })
      const defect = yield* send(HttpClientRequest.get("/orders/500"))
      assert.strictEqual(defect.status, 500)
      assert.deepStrictEqual(defect.body, { _tag: "InternalServerError", message: "internal server error" })
      assert.notInclude(JSON.stringify(defect.body), "secret")
      const undeclared = yield* send(HttpClientRequest.get("/orders/501"))
      assert.strictEqual(undeclared.status, 500)
    }).pipe(Effect.provide(layer)))

  it.live("the handler runs as a call of the service, under the edge's correlation and user", () =>
    Effect.gen(function*() {
      const { body, headers } = yield* send(HttpClientRequest.get("/context").pipe(
        HttpClientRequest.setHeaders({ "x-correlation-id": "req-9", "x-user-id": "lin" })
      ))
      assert.strictEqual(body.correlationId, "req-9")
      assert.strictEqual(headers["x-correlation-id"], "req-9")
      assert.strictEqual(body.userId, "lin")
      assert.match(body.callIdStack[0], new RegExp(`^${Orders.name}\\.http:GET /context\\.`))
    }).pipe(Effect.provide(layer)))
})
