/**
 * A service's authorization policy at the edges: what it denies is `Forbidden`, 403 over the HTTP
 * gateway and in the WebSocket gateway's error frames, and the handler never runs. (Through the mesh
 * itself, on both brokers: the conformance suite's identity tests.)
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Schema } from "effect"
import { FetchHttpClient, HttpClient, HttpClientRequest } from "effect/http"
import { Rpc, RpcGroup } from "effect/rpc"
import { HttpGateway, Hub, MemoryBroker, Service, ServiceClient, ServiceContract, WebSocketGateway } from "effect-mesh"
import { connectWs, result } from "./fixtures/wsClient.ts"

class VaultRpcs extends RpcGroup.make(
  Rpc.make("peek", { success: Schema.String }),
  Rpc.make("open", { payload: { door: Schema.Int }, success: Schema.String })
) {}

describe("authorization at the edges", () => {
  const vault = ServiceContract.make(`vault-${crypto.randomUUID().slice(0, 8)}`, VaultRpcs)
  const opened: Array<number> = []
  const service = Service.make(vault, {
    handlers: {
      peek: () => Effect.succeed("a vault"),
      open: ({ door }) => Effect.sync(() => (opened.push(door), `door ${door} open`))
    },
    // the gateways call as the user they were given: grace alone may open doors
    authorize: ({ context, method }) => Effect.succeed(method === "peek" || context.userId === "grace")
  })
  const layer = WebSocketGateway.layer({ contracts: [vault] }).pipe(
    Layer.provideMerge(HttpGateway.layerTest({ contracts: [vault] })),
    Layer.provideMerge(Hub.layer),
    Layer.provideMerge(service),
    Layer.provideMerge(ServiceClient.layer),
    Layer.provideMerge(MemoryBroker.layer),
    Layer.provide(FetchHttpClient.layer)
  )

  const post = (method: string, body: unknown, headers: Record<string, string>) =>
    Effect.gen(function*() {
      const http = yield* HttpClient.HttpClient
      const response = yield* http.execute(
        HttpClientRequest.post(`/rpc/${vault.name}/${method}`).pipe(
          HttpClientRequest.bodyText(JSON.stringify(body), "application/json"),
          HttpClientRequest.setHeaders(headers)
        )
      )
      return { status: response.status, body: (yield* response.json) as Record<string, unknown> }
    })

  it.live("HTTP: 403 with Forbidden's fields for a denied call, 200 for an allowed one", () =>
    Effect.gen(function*() {
      const denied = yield* post("open", { door: 1 }, { "x-user-id": "bob" })
      assert.strictEqual(denied.status, 403)
      assert.deepStrictEqual(denied.body, {
        _tag: "Forbidden",
        service: vault.name,
        method: "open",
        message: `a caller the broker did not verify may not call ${vault.name}.open`
      })
      assert.deepStrictEqual(opened, [])
      const allowed = yield* post("open", { door: 2 }, { "x-user-id": "grace" })
      assert.deepStrictEqual(allowed, { status: 200, body: "door 2 open" as unknown as Record<string, unknown> })
      const peek = yield* post("peek", null, { "x-user-id": "bob" })
      assert.strictEqual(peek.status, 200)
      assert.deepStrictEqual(opened, [2])
    }).pipe(Effect.provide(layer)))

  it.live("WebSocket: a denied call's error frame is Forbidden with status 403; the socket goes on serving", () =>
    Effect.gen(function*() {
      const url = (yield* HttpGateway.url).replace(/^http/, "ws") + "/ws"
      const ws = yield* connectWs(url)
      yield* ws.send({ method: `${vault.name}.open`, data: { door: 3 }, correlation_id: "o1" })
      const denied = yield* ws.next(result("o1"))
      assert.strictEqual(denied["success"], false)
      assert.deepInclude(denied["error"] as object, { _tag: "Forbidden", service: vault.name, method: "open", status: 403 })
      yield* ws.send({ method: `${vault.name}.peek`, data: null, correlation_id: "p1" })
      assert.deepStrictEqual(yield* ws.next(result("p1")), { type: "result", success: true, data: "a vault", correlation_id: "p1" })
      assert.notInclude(opened, 3)
    }).pipe(Effect.scoped, Effect.provide(layer)))
})
