/**
 * The HTTP edge: `node examples/http/main.ts` (then try the curl lines it prints), or
 * `node examples/http/main.ts --once` to make the calls itself and exit.
 *
 * - the calculator behind the RPC gateway: `POST /rpc/calculator/<method>` (JSON) and
 *   `POST /rpc/calculator` (effect/rpc's protocol, for `ServiceClient` over `HttpGateway.layerClient`)
 * - a notes service with HTTP entrypoints: `GET /notes/:id`, `POST /notes`
 * - an auth hook: requests need `authorization: Bearer <user>` (except `GET /health`)
 * - limits: a body over 64 KiB gets 413, more than 50 header lines 431 (HTTP_MAX_BODY_SIZE and
 *   HTTP_MAX_HEADER_COUNT set them from the configuration, with `HttpGateway.layerConfig`)
 *
 * On the embedded broker by default; set AMQP_URL to run on RabbitMQ, HTTP_PORT to change the port.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Cause, Effect, Exit, Layer, Logger, Ref, Schema, Stream } from "effect"
import { FetchHttpClient, HttpClient, HttpClientRequest, HttpRouter, HttpServerResponse } from "effect/http"
import { Rpc, RpcGroup } from "effect/rpc"
import {
  AmqpBroker,
  CallContext,
  HttpEntrypoint,
  HttpGateway,
  MemoryBroker,
  Service,
  ServiceClient,
  ServiceContract
} from "effect-mesh"
import { Calculator } from "../calculator/contract.ts"
import { CalculatorLive } from "../calculator/service.ts"

// ---- a service with HTTP entrypoints ----

class Note extends Schema.Class<Note>("examples/Note")({
  id: Schema.Int,
  text: Schema.String,
  author: Schema.String
}) {}

class NoteNotFound extends Schema.TaggedError<NoteNotFound>()("NoteNotFound", { id: Schema.Int }) {}

const Notes = ServiceContract.make("notes", RpcGroup.make(Rpc.make("count", { success: Schema.Int })))

const NotesLive = Layer.unwrap(Effect.gen(function*() {
  const notes = yield* Ref.make(new Map<number, Note>())
  return Service.make(Notes, {
    handlers: { count: () => Effect.map(Ref.get(notes), (m) => m.size) },
    entrypoints: [
      HttpEntrypoint.make({
        method: "GET",
        path: "/notes/:id",
        params: Schema.Struct({ id: Schema.FiniteFromString.pipe(Schema.check(Schema.isInt())) }),
        success: Note,
        errors: { 404: NoteNotFound }
      }, ({ params }) =>
        Effect.flatMap(Ref.get(notes), (m) => {
          const note = m.get(params.id)
          return note === undefined ? Effect.fail(new NoteNotFound({ id: params.id })) : Effect.succeed(note)
        })),
      HttpEntrypoint.make({
        method: "POST",
        path: "/notes",
        body: Schema.Struct({ text: Schema.NonEmptyString }),
        success: Note
      }, ({ body }) =>
        Effect.gen(function*() {
          const author = (yield* CallContext.CallContext).userId ?? "anonymous"
          const note = yield* Ref.modify(notes, (m) => {
            const created = new Note({ id: m.size + 1, text: body.text, author })
            return [created, new Map(m).set(created.id, created)]
          })
          return HttpEntrypoint.reply(note, { status: 201, headers: { location: `/notes/${note.id}` } })
        }))
    ]
  })
}))

// ---- the edge ----

const Health = HttpRouter.add("GET", "/health", HttpServerResponse.text("ok"))

const Auth = HttpGateway.authenticate(
  (request) => {
    const header = request.headers["authorization"] ?? ""
    return header.startsWith("Bearer ") && header.length > 7
      ? Effect.succeed({ userId: header.slice(7) })
      : Effect.fail(new HttpGateway.Unauthorized({ message: "send authorization: Bearer <user>" }))
  },
  { exclude: (path) => path === "/health" }
)

const port = Number(process.env["HTTP_PORT"] ?? "8080")
const url = process.env["AMQP_URL"]
const once = process.argv.includes("--once")

const MeshLive = Layer.mergeAll(CalculatorLive, NotesLive, Health, Auth).pipe(
  Layer.provideMerge(HttpGateway.layer({
    port: once ? 0 : port,
    contracts: [Calculator],
    errorStatus: { DivisionByZero: 422 },
    disableLogger: once,
    maxBodySize: "64 KiB",
    maxHeaderCount: 50
  })),
  Layer.provideMerge(ServiceClient.layer),
  Layer.provideMerge(url === undefined ? MemoryBroker.layer : AmqpBroker.layer({ url }))
)

const say = (line: string) => Effect.sync(() => console.log(line))

/** what `--once` does: the calls the curl lines show */
const tour = Effect.gen(function*() {
  const base = yield* HttpGateway.url
  const http = yield* HttpClient.HttpClient
  const show = (label: string, request: HttpClientRequest.HttpClientRequest) =>
    Effect.flatMap(http.execute(request), (response) =>
      Effect.flatMap(response.text, (text) => say(`${label}\n  → ${response.status} ${text}`)))
  const auth = HttpClientRequest.setHeader("authorization", "Bearer ada")
  const json = (path: string, body: unknown) =>
    HttpClientRequest.post(`${base}${path}`).pipe(HttpClientRequest.bodyJsonUnsafe(body), auth)
  yield* show("POST /rpc/calculator/add {a:1,b:2}", json("/rpc/calculator/add", { a: 1, b: 2 }))
  yield* show("POST /rpc/calculator/divide {a:1,b:0}", json("/rpc/calculator/divide", { a: 1, b: 0 }))
  yield* show("POST /rpc/calculator/add {a:\"one\"}", json("/rpc/calculator/add", { a: "one" }))
  yield* show("POST /rpc/calculator/countdown {from:3} (SSE)", json("/rpc/calculator/countdown", { from: 3 }))
  yield* show("POST /notes {text}", json("/notes", { text: "buy milk" }))
  yield* show("GET /notes/1", HttpClientRequest.get(`${base}/notes/1`).pipe(auth))
  yield* show("GET /notes/9", HttpClientRequest.get(`${base}/notes/9`).pipe(auth))
  yield* show("GET /notes/1 without a token", HttpClientRequest.get(`${base}/notes/1`))
  yield* show("POST /notes with a body over 64 KiB", json("/notes", { text: "x".repeat(70_000) }))
  yield* say("ServiceClient over HTTP (HttpGateway.layerClient):")
  yield* Effect.gen(function*() {
    const calc = yield* ServiceClient.make(Calculator)
    yield* say(`  add(20, 22) = ${yield* calc.add({ a: 20, b: 22 })}`)
    const items = yield* Stream.runCollect(calc.countdown({ from: 3 }))
    yield* say(`  countdown(3) = ${Array.from(items).join(" ")}`)
  }).pipe(
    Effect.provide(HttpGateway.layerClient({ url: base }).pipe(
      Layer.provide(Layer.succeed(HttpClient.HttpClient)(http.pipe(HttpClient.mapRequest(auth))))
    ))
  )
})

const main = once
  ? tour.pipe(Effect.provide(MeshLive), Effect.provide(FetchHttpClient.layer))
  : Effect.gen(function*() {
    const base = yield* HttpGateway.url
    yield* say(`listening on ${base}; try:`)
    yield* say(`  curl -s -X POST ${base}/rpc/calculator/add -H 'authorization: Bearer ada' -d '{"a":1,"b":2}'`)
    yield* say(`  curl -s -X POST ${base}/notes -H 'authorization: Bearer ada' -d '{"text":"buy milk"}'`)
    yield* say(`  curl -s ${base}/notes/1 -H 'authorization: Bearer ada'`)
    return yield* Effect.never
  }).pipe(Effect.provide(MeshLive))

// SIGTERM or Ctrl-C interrupt the program: the Layers drain (running calls finish), and a stop that was
// asked for exits 0, as `mesh run` does
NodeRuntime.runMain(main.pipe(Effect.provide(Logger.layer([Logger.consolePretty()]))), {
  teardown: (exit, onExit) => onExit(Exit.isSuccess(exit) || Cause.hasInterruptsOnly(exit.cause) ? 0 : 1)
})
