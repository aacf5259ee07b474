/**
 * A mesh you can watch: the calculator serves, and a client calls it twice a second (one call in four
 * divides by zero, a typed error), so that every signal has something to show.
 *
 *     METRICS_PORT=9464 node examples/observability/main.ts
 *     curl localhost:9464/metrics      # Prometheus text: rpc_server_call_duration_bucket{...}, ...
 *     curl localhost:9464/readyz       # {"ready":true,"broker":"connected","services":"serving"}
 *
 * With `OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318` (an OpenTelemetry collector, Jaeger, ...) the
 * traces, metrics and logs go there too; `LOG_FORMAT=json` writes JSON lines. See README.md beside it,
 * and `prometheus.yml` to scrape it.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Cause, Effect, Exit, Schedule } from "effect"
import { Mesh, ServiceClient } from "effect-mesh"
import { Calculator } from "../calculator/contract.ts"
import { CalculatorLive } from "../calculator/service.ts"

const traffic = Effect.gen(function*() {
  const calc = yield* ServiceClient.make(Calculator, { timeout: "5 seconds" })
  let n = 0
  yield* Effect.logInfo("calling the calculator twice a second; SIGTERM or Ctrl-C to stop")
  yield* Effect.suspend(() => {
    n++
    return calc.divide({ a: n, b: n % 4 }).pipe(
      Effect.catchTag("DivisionByZero", (e) => Effect.logInfo(`${e.dividend} / 0: DivisionByZero`)),
      Effect.withSpan("traffic")
    )
  }).pipe(Effect.repeat(Schedule.spaced("500 millis")))
})

const MeshLive = Mesh.layerConfig([CalculatorLive])

// a stop that was asked for (SIGTERM, Ctrl-C) exits 0 once the Layers drained
NodeRuntime.runMain(traffic.pipe(Effect.provide(MeshLive)), {
  teardown: (exit, onExit) => onExit(Exit.isSuccess(exit) || Cause.hasInterruptsOnly(exit.cause) ? 0 : 1)
})
