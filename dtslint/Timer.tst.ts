import { Context, Duration, Effect, Layer, Schedule, Stream } from "effect"
import type { Scope } from "effect"
import type { Broker, BrokerError } from "effect-mesh/Broker"
import { Service, Timer, Worker } from "effect-mesh"
import { describe, expect, it } from "tstyche"
import { Calculator } from "../examples/calculator/contract.ts"

class Database extends Context.Service<Database, { readonly sweep: Effect.Effect<number> }>()("dtslint/Database") {}
class Mailer extends Context.Service<Mailer, { readonly send: (to: string) => Effect.Effect<void> }>()(
  "dtslint/Mailer"
) {}
class Jitter extends Context.Service<Jitter, { readonly millis: number }>()("dtslint/Jitter") {}

const handlers = {
  add: ({ a, b }: { a: number; b: number }) => Effect.succeed(a + b),
  divide: ({ a, b }: { a: number; b: number }) => Effect.succeed(a / b),
  countdown: ({ from }: { from: number }) => Stream.make(from),
  multiply: ({ a, b }: { a: number; b: number }) => Effect.succeed(a * b),
  sleep: () => Effect.succeed("ok")
}

const sweep = Effect.flatMap(Database, (db) => db.sweep)

describe("Timer.make", () => {
  it("requires what its effect requires (a Scope is provided per run)", () => {
    expect(Timer.make("sweep", Schedule.spaced("1 second"), sweep)).type.toBe<Service.Entrypoint<never, Database>>()
    const scoped = Effect.andThen(Effect.addFinalizer(() => Effect.void), sweep)
    expect(Timer.make("sweep", Schedule.spaced("1 second"), scoped)).type.toBe<Service.Entrypoint<never, Database>>()
  })

  it("requires the broker in singleton mode only", () => {
    expect(Timer.make("sweep", Schedule.spaced("1 second"), sweep, { mode: "singleton" })).type.toBe<
      Service.Entrypoint<never, Database | Broker>
    >()
    expect(Timer.make("sweep", Schedule.spaced("1 second"), sweep, { mode: "instance", eager: true })).type.toBe<
      Service.Entrypoint<never, Database>
    >()
  })

  it("requires what its schedules require", () => {
    const jittered = Schedule.spaced("1 second").pipe(
      Schedule.modifyDelay(({ duration }) => Effect.map(Jitter, (j) => Duration.sum(duration, Duration.millis(j.millis))))
    )
    expect(Timer.make("sweep", jittered, sweep)).type.toBe<Service.Entrypoint<never, Database | Jitter>>()
  })

  it("accepts any Schedule: spaced, fixed, cron", () => {
    expect(Timer.make).type.toBeCallableWith("t", Schedule.fixed("1 minute"), Effect.void)
    expect(Timer.make).type.toBeCallableWith("t", Schedule.cron("0 3 * * *"), Effect.void)
    expect(Timer.make).type.toBeCallableWith("t", Schedule.spaced("1 minute"), Effect.void, {
      backoff: Schedule.exponential("1 second")
    })
  })

  it("rejects a schedule that needs an input the timer does not give", () => {
    const needsNumbers = Schedule.spaced("1 second").pipe(Schedule.setInputType<number>())
    expect(Timer.make).type.not.toBeCallableWith("t", needsNumbers, Effect.void)
  })
})

describe("Service.make with timers and workers", () => {
  it("the timer's requirements show up in the service Layer's requirements", () => {
    const layer = Service.make(Calculator, {
      handlers,
      entrypoints: [Timer.make("sweep", Schedule.spaced("1 second"), sweep)]
    })
    expect(layer).type.toBe<Layer.Layer<never, BrokerError, Broker | Database>>()
  })

  it("with timers and workers declared inline, every requirement shows up, and no Scope", () => {
    const layer = Service.make(Calculator, {
      handlers,
      entrypoints: [
        Timer.make(
          "notify",
          Schedule.cron("*/5 * * * *"),
          Effect.gen(function*() {
            yield* Effect.addFinalizer(() => Effect.void)
            yield* (yield* Mailer).send("ops")
          }),
          { mode: "singleton" }
        ),
        Worker.make("vacuum", Effect.forever(sweep))
      ]
    })
    expect(layer).type.toBe<Layer.Layer<never, BrokerError, Broker | Database | Mailer>>()
    expect(layer).type.not.toBeAssignableTo<Layer.Layer<never, BrokerError, Broker | Database>>()
    expect<Layer.Success<typeof layer>>().type.toBe<never>()
    expect<Exclude<Layer.Services<typeof layer>, Broker | Database | Mailer>>().type.toBe<never>()
    expect<Extract<Layer.Services<typeof layer>, Scope.Scope>>().type.toBe<never>()
  })
})

describe("Worker.make", () => {
  it("requires what its effect and restart schedule require", () => {
    const restart = Schedule.spaced("1 second").pipe(
      Schedule.modifyDelay(({ duration }) => Effect.map(Jitter, (j) => Duration.sum(duration, Duration.millis(j.millis))))
    )
    expect(Worker.make("vacuum", sweep, { restart })).type.toBe<Service.Entrypoint<never, Database | Jitter>>()
    expect(Worker.make("vacuum", sweep, { mode: "singleton" })).type.toBe<
      Service.Entrypoint<never, Database | Broker>
    >()
  })
})
