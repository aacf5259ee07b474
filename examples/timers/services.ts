/**
 * A reports service with timers and a worker, and a clock service its timer calls:
 * - `heartbeat` (instance mode, the default): every instance fires every 500 ms;
 * - `digest` (singleton, eager): exactly one instance in the cluster fires, every second; each run
 *   calls the clock service, and the call carries the run's correlation id and call-id stack;
 * - `flaky-sweep`: fails now and then; with a backoff, a failed run is retried sooner;
 * - `pump` (a worker): fails twice at start, is restarted, then runs for good.
 */
import { Effect, Schedule, Schema } from "effect"
import { Rpc, RpcGroup } from "effect/rpc"
import { CallContext, Service, ServiceClient, ServiceContract, Timer, Worker } from "effect-mesh"

const say = (line: string) => Effect.sync(() => console.log(line))

export class ClockRpcs extends RpcGroup.make(
  Rpc.make("now", { success: Schema.Struct({ time: Schema.String, callIdStack: Schema.Array(Schema.String) }) })
) {}
export const WallClock = ServiceContract.make("wall-clock", ClockRpcs)

export const WallClockLive = Service.make(WallClock, {
  handlers: {
    now: () =>
      Effect.map(CallContext.CallContext, ({ callIdStack }) => ({ time: new Date().toISOString().slice(11, 23), callIdStack }))
  }
})

export class ReportsRpcs extends RpcGroup.make(Rpc.make("ping", { success: Schema.String })) {}
export const Reports = ServiceContract.make("reports", ReportsRpcs)

/** one instance of the reports service; `name` only labels its output */
export const reportsInstance = (name: string) => {
  let sweeps = 0
  let pumpStarts = 0
  return Service.make(Reports, {
    handlers: { ping: () => Effect.succeed(name) },
    entrypoints: [
      Timer.make("heartbeat", Schedule.spaced("500 millis"), say(`  ${name}: heartbeat`)),

      Timer.make(
        "digest",
        Schedule.spaced("1 second"),
        Effect.gen(function*() {
          const clock = yield* ServiceClient.make(WallClock)
          const { time, callIdStack } = yield* clock.now()
          yield* say(`  ${name}: digest at ${time}, call-id stack ${callIdStack.join(" > ")}`)
        }).pipe(Effect.orDie),
        { mode: "singleton", eager: true }
      ),

      Timer.make(
        "flaky-sweep",
        Schedule.spaced("2 seconds"),
        Effect.suspend(() => {
          sweeps++
          return sweeps % 2 === 1
            ? Effect.fail(`sweep ${sweeps} failed`)
            : say(`  ${name}: sweep ${sweeps} done`)
        }),
        { backoff: Schedule.spaced("300 millis") }
      ),

      Worker.make(
        "pump",
        Effect.gen(function*() {
          pumpStarts++
          if (pumpStarts <= 2) return yield* Effect.fail(`pump start ${pumpStarts} failed`)
          yield* say(`  ${name}: pump running (start ${pumpStarts})`)
          return yield* Effect.never
        }),
        { restart: Schedule.spaced("200 millis") }
      )
    ]
  })
}
