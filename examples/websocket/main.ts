/**
 * The WebSocket edge and the hub: `node examples/websocket/main.ts`, then open http://localhost:8080
 * (a page that calls the calculator over its socket and shows the clock's broadcasts), or
 * `curl -N localhost:8080/sse/clock` for the same broadcasts as Server-Sent Events. With `--once` it
 * connects a socket itself, calls, waits for a broadcast and exits.
 *
 * - `/ws`: Nameko's JSON framing (`{method, data, correlation_id}`); `subscribe` / `unsubscribe` join
 *   hub channels
 * - a clock service broadcasts the time to the `clock` channel every second (a `Timer` entrypoint
 *   calling `Hub.broadcast`); a greeter service sends a message to one socket (`Hub.unicast`)
 *
 * On the embedded broker by default; set AMQP_URL to run on RabbitMQ (run it twice with two
 * HTTP_PORTs: a broadcast from either instance reaches the sockets of both).
 */
import { NodeRuntime, NodeSocket } from "@effect/platform-node"
import { Cause, Clock, Effect, Exit, Layer, Logger, Option, Schedule, Schema } from "effect"
import { HttpRouter, HttpServerResponse } from "effect/http"
import { Rpc, RpcGroup } from "effect/rpc"
import { Socket } from "effect/socket"
import {
  AmqpBroker,
  HttpGateway,
  Hub,
  MemoryBroker,
  Service,
  ServiceClient,
  ServiceContract,
  Sse,
  Timer,
  WebSocketGateway
} from "effect-mesh"
import { Calculator } from "../calculator/contract.ts"
import { CalculatorLive } from "../calculator/service.ts"

// ---- services that talk to browsers ----

const ClockService = ServiceContract.make("clock", RpcGroup.make(Rpc.make("now", { success: Schema.Number })))

const ClockLive = Service.make(ClockService, {
  handlers: { now: () => Clock.currentTimeMillis },
  entrypoints: [
    Timer.make(
      "tick",
      Schedule.spaced("1 second"),
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Hub.broadcast("clock", "tick", { time: new Date(now).toISOString() }))
    )
  ]
})

const Greeter = ServiceContract.make(
  "greeter",
  RpcGroup.make(Rpc.make("greet", { payload: { socketId: Schema.String, name: Schema.String } }))
)

const GreeterLive = Service.make(Greeter, {
  handlers: {
    greet: ({ name, socketId }) => Hub.unicast(socketId, "greeting", { text: `hello, ${name}` }).pipe(Effect.orDie)
  }
})

// ---- the edge ----

const page = `<!doctype html>
<html><head><meta charset="utf-8"><title>effect-mesh</title></head><body>
<h1>effect-mesh over WebSocket</h1>
<p>1 + 2 = <span id="sum">…</span></p>
<p id="greeting"></p>
<ul id="ticks"></ul>
<script>
const ws = new WebSocket(location.origin.replace(/^http/, "ws") + "/ws")
const call = (method, data, correlation_id) => ws.send(JSON.stringify({ method, data, correlation_id }))
ws.onmessage = (message) => {
  const frame = JSON.parse(message.data)
  if (frame.type === "event" && frame.event === "connected") {
    call("subscribe", { channel: "clock" }, "subscribe")
    call("calculator.add", { a: 1, b: 2 }, "sum")
    call("greeter.greet", { socketId: frame.data.socket_id, name: "browser" }, "greet")
  }
  if (frame.type === "result" && frame.correlation_id === "sum") document.getElementById("sum").textContent = frame.data
  if (frame.type === "event" && frame.event === "greeting") document.getElementById("greeting").textContent = frame.data.text
  if (frame.type === "event" && frame.event === "tick") {
    const item = document.createElement("li")
    item.textContent = frame.data.time
    document.getElementById("ticks").prepend(item)
  }
}
</script></body></html>`

const Index = HttpRouter.add("GET", "/", HttpServerResponse.html(page))

const port = Number(process.env["HTTP_PORT"] ?? "8080")
const url = process.env["AMQP_URL"]
const once = process.argv.includes("--once")

const MeshLive = Layer.mergeAll(
  CalculatorLive,
  ClockLive,
  GreeterLive,
  Index,
  WebSocketGateway.layer({ contracts: [Calculator, Greeter] }),
  Sse.layerHub()
).pipe(
  Layer.provideMerge(HttpGateway.layer({ port: once ? 0 : port, contracts: [Calculator], disableLogger: true })),
  Layer.provideMerge(Hub.layer),
  Layer.provideMerge(ServiceClient.layer),
  Layer.provideMerge(url === undefined ? MemoryBroker.layer : AmqpBroker.layer({ url }))
)

const say = (line: string) => Effect.sync(() => console.log(line))

/** what `--once` does: what the page does, from a socket of its own */
const tour = Effect.gen(function*() {
  const base = (yield* HttpGateway.url).replace(/^http/, "ws")
  const socket = yield* Socket.makeWebSocket(`${base}/ws`)
  const pull = yield* Socket.readerString(socket)
  const write = (yield* socket.writer).write
  const send = (frame: object) => write(JSON.stringify(frame))
  let greeted = false
  let ticked = false
  let socketId = ""
  while (!(greeted && ticked)) {
    for (const text of yield* pull) {
      yield* say(`  ← ${text}`)
      const frame = JSON.parse(text) as { type: string; event?: string; data?: { socket_id?: string } }
      if (frame.event === "connected") {
        socketId = Option.getOrElse(Option.fromUndefinedOr(frame.data?.socket_id), () => "")
        yield* send({ method: "subscribe", data: { channel: "clock" }, correlation_id: "subscribe" })
        yield* send({ method: "calculator.add", data: { a: 1, b: 2 }, correlation_id: "sum" })
        yield* send({ method: "greeter.greet", data: { socketId, name: "tour" }, correlation_id: "greet" })
      }
      if (frame.event === "greeting") greeted = true
      if (frame.event === "tick") ticked = true
    }
  }
})

const main = once
  ? tour.pipe(Effect.scoped, Effect.provide(MeshLive), Effect.provide(NodeSocket.layerWebSocketConstructor))
  : Effect.gen(function*() {
    const base = yield* HttpGateway.url
    yield* say(`open ${base}/ (WebSocket at /ws), or: curl -N ${base}/sse/clock`)
    return yield* Effect.never
  }).pipe(Effect.provide(MeshLive))

// SIGTERM or Ctrl-C interrupt the program: the Layers drain (running calls finish), and a stop that was
// asked for exits 0, as `mesh run` does
NodeRuntime.runMain(main.pipe(Effect.provide(Logger.layer([Logger.consolePretty()]))), {
  teardown: (exit, onExit) => onExit(Exit.isSuccess(exit) || Cause.hasInterruptsOnly(exit.cause) ? 0 : 1)
})
