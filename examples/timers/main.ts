/**
 * Timers and workers on the embedded broker: `node examples/timers/main.ts`.
 *
 * Three instances of the reports service run for a few seconds: each fires its own heartbeat and
 * sweep, one of them fires the singleton digest, and each runs its pump worker. Then the instance
 * that fires the digest stops, and another takes over. Set AMQP_URL to run it on RabbitMQ.
 */
import { Effect, Exit, Layer, Logger, References, Scope } from "effect"
import { AmqpBroker, MemoryBroker, ServiceClient } from "effect-mesh"
import { reportsInstance, WallClockLive } from "./services.ts"

const say = (line: string) => Effect.sync(() => console.log(line))

const program = Effect.gen(function*() {
  const shared = yield* Layer.build(ServiceClient.layer.pipe(Layer.provideMerge(WallClockLive)))
  const provided = <E, R>(layer: Layer.Layer<never, E, R>) => layer.pipe(Layer.provide(Layer.succeedContext(shared)))

  yield* say("— three instances of reports start")
  const instances = yield* Effect.forEach(["r1", "r2", "r3"], (name) =>
    Effect.gen(function*() {
      const scope = yield* Scope.fork(yield* Scope.Scope)
      yield* Layer.buildWithScope(provided(reportsInstance(name)), scope)
      return { name, scope }
    }))
  yield* Effect.sleep("2500 millis")

  // the digest's lease is held by the first instance that consumed its queue: r1
  yield* say("— r1 stops: another instance takes the digest over")
  yield* Scope.close(instances[0].scope, Exit.void)
  yield* Effect.sleep("2500 millis")
  yield* say("— done")
}).pipe(Effect.scoped)

const url = process.env["AMQP_URL"]
program.pipe(
  Effect.provide(url === undefined ? MemoryBroker.layer : AmqpBroker.layer({ url })),
  // failed runs and worker restarts are logged, one line each
  Effect.provide(Logger.layer([Logger.consolePretty()])),
  Effect.provideService(References.MinimumLogLevel, "Info"),
  Effect.runPromise
)
