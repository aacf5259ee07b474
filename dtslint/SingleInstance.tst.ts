import { Effect, Schema } from "effect"
import type { Layer } from "effect"
import { Rpc, RpcGroup } from "effect/rpc"
import { Service, ServiceContract } from "effect-mesh"
import type { Broker, BrokerError } from "effect-mesh/Broker"
import { describe, expect, it } from "tstyche"

class Rpcs extends RpcGroup.make(Rpc.make("status", { success: Schema.Boolean })) {}
const Scheduler = ServiceContract.make("scheduler", Rpcs)
const handlers = { status: () => Service.isLeader }

describe("single-instance mode", () => {
  it("a fixed instance id adds InstanceTaken to the Layer's errors; without one, nothing changes", () => {
    expect(Service.make(Scheduler, { handlers, instance: { id: "scheduler-1" } })).type.toBe<
      Layer.Layer<never, BrokerError | Service.InstanceTaken, Broker>
    >()
    expect(Service.make(Scheduler, { handlers, instance: { id: "scheduler-1", whenTaken: "wait", lease: "2 seconds" } })).type.toBe<
      Layer.Layer<never, BrokerError | Service.InstanceTaken, Broker>
    >()
    expect(Service.make(Scheduler, { handlers })).type.toBe<Layer.Layer<never, BrokerError, Broker>>()
    expect(Service.make).type.not.toBeCallableWith(Scheduler, { handlers, instance: { id: "scheduler-1", whenTaken: "steal" } })
  })

  it("handlers read whether their instance leads", () => {
    expect(Service.isLeader).type.toBe<Effect.Effect<boolean>>()
    expect<Service.InstanceTaken["holder"]>().type.toBe<string>()
  })
})
