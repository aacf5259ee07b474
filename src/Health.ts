/**
 * Whether a mesh process serves, for an orchestrator to ask: `/healthz` answers 200 while the process
 * runs; `/readyz` answers 200 when the broker is connected with every consumer and reply queue
 * attached, and the services have started and are not draining, else 503. Both answer a JSON report:
 *
 * ```json
 * { "ready": false, "broker": "down", "services": "serving" }
 * ```
 *
 * `Mesh.layer` and `Mesh.layerConfig` serve them on the HTTP edge and on the metrics port
 * (`METRICS_PORT`); `mesh run` does too. Readiness turns false while RabbitMQ is away (until the
 * connection and its consumers are restored) and as soon as the process begins to stop, while its
 * instances drain their runs.
 *
 * @since 0.1.0
 */
import { Context, Effect, Layer } from "effect"
import { HttpRouter, HttpServerResponse } from "effect/http"
import { Broker } from "./Broker.ts"

// ---- models ----

/**
 * Where the services stand: `starting` until every service Layer is up, `serving`, then `draining`
 * from the moment the process begins to stop.
 *
 * @since 0.1.0
 */
export type Phase = "starting" | "serving" | "draining"

/**
 * What `/readyz` reports.
 *
 * @since 0.1.0
 */
export interface Readiness {
  readonly ready: boolean
  readonly broker: "connected" | "down"
  readonly services: Phase
}

/**
 * The process's readiness: the broker's state and the services' phase.
 *
 * @since 0.1.0
 */
export class Health extends Context.Service<Health, {
  readonly readiness: Effect.Effect<Readiness>
  /** moves the services to a phase (`serving` and `draining` are set by `layerServing`) */
  readonly enter: (phase: Phase) => Effect.Effect<void>
}>()("effect-mesh/Health") {}

// ---- layers ----

/**
 * The readiness of the services on the current broker, `starting` until `layerServing` is up.
 *
 * @since 0.1.0
 */
export const layer: Layer.Layer<Health, never, Broker> = Layer.effect(
  Health,
  Effect.gen(function*() {
    const broker = yield* Broker
    let phase: Phase = "starting"
    return Health.of({
      readiness: Effect.map(broker.ready, (connected) => ({
        ready: connected && phase === "serving",
        broker: connected ? "connected" : "down",
        services: phase
      })),
      enter: (next) => Effect.sync(() => { phase = next })
    })
  })
)

/**
 * The services given, then `serving`; `draining` as the process begins to stop, before they stop.
 *
 * @since 0.1.0
 */
export const layerServing = <A, E, R>(services: Layer.Layer<A, E, R>): Layer.Layer<A, E, R | Health> =>
  // built after the services, so released before them: readiness drops before they drain
  Layer.effectDiscard(Effect.gen(function*() {
    const health = yield* Health
    yield* health.enter("serving")
    yield* Effect.addFinalizer(() => health.enter("draining"))
  })).pipe(Layer.provideMerge(services))

/**
 * `GET /healthz` and `GET /readyz` on the current router.
 *
 * @since 0.1.0
 */
export const layerRoutes: Layer.Layer<never, never, HttpRouter.HttpRouter | Health> = Layer.effectDiscard(
  Effect.gen(function*() {
    const router = yield* HttpRouter.HttpRouter
    const health = yield* Health
    yield* router.add("GET", "/healthz", Effect.succeed(HttpServerResponse.jsonUnsafe({ ok: true })))
    yield* router.add(
      "GET",
      "/readyz",
      Effect.map(health.readiness, (readiness) =>
        HttpServerResponse.jsonUnsafe(readiness, { status: readiness.ready ? 200 : 503 }))
    )
  })
)
