/**
 * Single-instance mode: `node examples/single/main.ts` (set AMQP_URL to run it on RabbitMQ; run it twice
 * at once to see the second refused, or with WAIT=1 to see it wait and take over).
 *
 * A billing scheduler must run once on the whole broker: it starts with a fixed instance id. Another
 * start with that id, anywhere, fails with `InstanceTaken` naming the running one, or, with
 * `whenTaken: "wait"`, waits as a standby and takes over when the first stops or dies. Its handlers
 * and timers read `Service.isLeader`.
 */
import { Effect, Layer, Logger, Schema } from "effect"
import { Rpc, RpcGroup } from "effect/rpc"
import { AmqpBroker, MemoryBroker, Service, ServiceClient, ServiceContract } from "effect-mesh"

class SchedulerRpcs extends RpcGroup.make(Rpc.make("status", { success: Schema.String })) {}
const Scheduler = ServiceContract.make("billing-scheduler", SchedulerRpcs)

const SchedulerLive = (whenTaken: "fail" | "wait") =>
  Service.make(Scheduler, {
    handlers: {
      status: () => Effect.map(Service.isLeader, (leader) => leader ? "leading" : "standing by")
    },
    instance: { id: "billing-scheduler-1", whenTaken }
  })

const url = process.env["AMQP_URL"]
const broker = url === undefined ? MemoryBroker.layer : AmqpBroker.layer({ url })
const once = process.argv.includes("--once")

const program = Effect.gen(function*() {
  const status = yield* (yield* ServiceClient.make(Scheduler)).status()
  yield* Effect.sync(() => console.log(`billing-scheduler-1: ${status}`))
  // in the same process, a second start with the same id is refused, naming the first
  const second = yield* Effect.flip(Effect.scoped(Layer.build(SchedulerLive("fail"))))
  yield* Effect.sync(() => console.log(`a second start: ${second._tag}: ${second.message}`))
  if (!once) yield* Effect.never
})

program.pipe(
  Effect.provide(SchedulerLive(process.env["WAIT"] === "1" ? "wait" : "fail").pipe(
    Layer.provideMerge(ServiceClient.layer),
    Layer.provideMerge(broker)
  )),
  Effect.provide(Logger.layer([Logger.consolePretty()])),
  Effect.runPromise
)
