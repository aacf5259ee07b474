/**
 * A whole process as one Layer, `Mesh.layerConfig`: `node examples/mesh/main.ts --once` calls the
 * calculator and exits; without `--once` it keeps serving until SIGTERM or Ctrl-C, which let running
 * requests finish before the process exits.
 *
 * What runs comes from the configuration (the environment, or the YAML / JSON file MESH_CONFIG names):
 * - AMQP_URL (amqp.url): RabbitMQ; without it, the embedded broker, inside this process
 * - HTTP_PORT (http.port): an HTTP server with the RPC gateway (`POST /rpc/calculator/add`) and the
 *   WebSocket gateway (`/ws`) for the calculator; without it, nothing listens
 *
 *     HTTP_PORT=8080 node examples/mesh/main.ts
 *     curl -X POST localhost:8080/rpc/calculator/add -d '{"a":1,"b":2}'
 */
import { NodeRuntime } from "@effect/platform-node"
import { Cause, Config, Effect, Exit, Option, Stream } from "effect"
import { FetchHttpClient, HttpClient, HttpClientRequest } from "effect/http"
import { Mesh, ServiceClient } from "effect-mesh"
import { Calculator } from "../calculator/contract.ts"
import { CalculatorLive } from "../calculator/service.ts"

const once = process.argv.includes("--once")

const program = Effect.gen(function*() {
  // a client, as any service's handler would make one
  const calc = yield* ServiceClient.make(Calculator, { timeout: "5 seconds" })
  const [sum, quotient] = yield* Effect.all([calc.add({ a: 1, b: 2 }), calc.divide({ a: 1, b: 4 })], {
    concurrency: "unbounded"
  })
  const countdown = yield* Stream.runCollect(calc.countdown({ from: 3 }))
  const safe = yield* calc.divide({ a: 1, b: 0 }).pipe(Effect.catchTag("DivisionByZero", () => Effect.succeed(Infinity)))
  yield* Effect.logInfo(`add 1 2 = ${sum}; divide 1 4 = ${quotient}; countdown 3 = ${countdown.join(", ")}; divide 1 0 = ${safe}`)

  // the program reads the same configuration as the mesh (the file's settings too)
  const port = yield* Config.option(Config.Port("HTTP_PORT"))
  if (Option.isSome(port)) {
    const url = `http://127.0.0.1:${port.value}/rpc/calculator/add`
    yield* Effect.logInfo(`HTTP: curl -X POST ${url} -d '{"a":1,"b":2}'`)
    if (once) {
      const http = yield* HttpClient.HttpClient
      const response = yield* http.execute(HttpClientRequest.post(url).pipe(HttpClientRequest.bodyJsonUnsafe({ a: 1, b: 2 })))
      yield* Effect.logInfo(`POST /rpc/calculator/add → ${response.status} ${yield* response.text}`)
    }
  } else {
    yield* Effect.logInfo("no HTTP_PORT: nothing listens (set it to serve the gateways)")
  }
  if (!once) {
    yield* Effect.logInfo("serving; SIGTERM or Ctrl-C to stop")
    yield* Effect.never
  }
})

const MeshLive = Mesh.layerConfig([CalculatorLive])

// a stop that was asked for (SIGTERM, Ctrl-C) exits 0 once the Layers drained, as `mesh run` does
NodeRuntime.runMain(program.pipe(Effect.provide(MeshLive), Effect.provide(FetchHttpClient.layer)), {
  teardown: (exit, onExit) => onExit(Exit.isSuccess(exit) || Cause.hasInterruptsOnly(exit.cause) ? 0 : 1)
})
