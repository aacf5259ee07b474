/**
 * Discovery over the embedded broker: instances answer describe with their contract's JSON Schemas,
 * announce themselves, and expire from a watcher's table when they stop heartbeating.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Layer, Schema, Scope } from "effect"
import { Broker, Discovery, Event, MemoryBroker, Service, ServiceContract } from "effect-mesh"
import { Rpc, RpcGroup } from "effect/rpc"
import { TestClock } from "effect/testing"
import { CalculatorLive } from "../examples/calculator/service.ts"

const OrderPlaced = Event.make("orders", "order_placed", Schema.Struct({ id: Schema.String }))
const Paid = Event.make("billing", "paid", Schema.Struct({ id: Schema.String }))

class BillingRpcs extends RpcGroup.make(Rpc.make("total", { success: Schema.Number })) {}
const Billing = ServiceContract.make("billing", BillingRpcs)
const BillingLive = Service.make(Billing, {
  handlers: { total: () => Effect.succeed(0) },
  entrypoints: [Event.handle(OrderPlaced, { delivery: "pool" }, () => Effect.void)],
  publishes: [Paid]
})

const waitUntil = <A>(effect: Effect.Effect<A>, done: (a: A) => boolean) =>
  Effect.gen(function*() {
    for (let i = 0; i < 1000; i++) {
      const a = yield* effect
      if (done(a)) return a
      yield* Effect.yieldNow
    }
    return yield* Effect.die(new Error("condition never held"))
  })

describe("Discovery", () => {
  it.live("describe: every live instance answers with its rpcs' JSON Schemas and its events", () =>
    Effect.gen(function*() {
      const all = yield* Discovery.describe({ window: "100 millis" })
      assert.deepStrictEqual(all.map((d) => d.service), ["billing", "calculator", "calculator"])
      const [first, second] = all.filter((d) => d.service === "calculator")
      assert.notStrictEqual(first.instanceId, second.instanceId)
      assert.strictEqual(first.pid, process.pid)
      assert.strictEqual(first.broker, "memory")
      const divide = first.rpcs.find((r) => r.name === "divide")
      assert.deepStrictEqual(divide?.payload["required"], ["a", "b"])
      assert.strictEqual((divide?.error["$defs"] as Record<string, unknown>)["DivisionByZeroEncoded"] !== undefined, true)
      const countdown = first.rpcs.find((r) => r.name === "countdown")
      assert.strictEqual(countdown?.stream, true)
      assert.strictEqual(countdown?.success["type"], "integer")

      const [billing] = yield* Discovery.describe({ service: "billing", window: "100 millis" })
      assert.deepStrictEqual(billing.subscribes, [{ source: "orders", type: "order_placed", delivery: "pool" }])
      assert.strictEqual(billing.publishes[0].type, "paid")
      assert.strictEqual(billing.publishes[0].payload?.["type"], "object")
      assert.deepStrictEqual(billing.entrypoints, ["event orders.order_placed (pool)"])
      assert.deepStrictEqual(yield* Discovery.describe({ service: "nobody", window: "50 millis" }), [])
    }).pipe(Effect.provide(
      Layer.mergeAll(CalculatorLive, Layer.fresh(CalculatorLive), BillingLive).pipe(Layer.provideMerge(MemoryBroker.layer))
    )))

  it.effect("watch: up, heartbeats, down; an instance that stops heartbeating expires after its ttl", () =>
    Effect.gen(function*() {
      const registry = yield* Discovery.watch({ ttl: "30 seconds" })
      const scope = yield* Scope.make()
      yield* Layer.buildWithScope(CalculatorLive, scope)
      // a ghost: announced once, then never heard from again
      const broker = yield* Broker.Broker
      const ghost: Discovery.Announcement = {
        service: "calculator",
        instanceId: "ghost",
        host: "elsewhere",
        pid: 1,
        since: 0,
        broker: "memory",
        status: "up"
      }
      yield* broker.publish("mesh.discovery", "announce.calculator", new TextEncoder().encode(JSON.stringify(ghost)))
      const both = yield* waitUntil(registry.instances, (is) => is.length === 2)
      assert.deepStrictEqual(both.map((i) => i.instanceId).includes("ghost"), true)

      yield* TestClock.adjust("25 seconds")
      assert.strictEqual((yield* registry.instances).length, 2)
      yield* TestClock.adjust("10 seconds")
      const live = yield* waitUntil(registry.instances, (is) => is.length === 1)
      assert.notStrictEqual(live[0].instanceId, "ghost")
      assert.strictEqual(live[0].host.length > 0, true)

      yield* Scope.close(scope, Exit.void)
      yield* waitUntil(registry.instances, (is) => is.length === 0)
    }).pipe(Effect.provide(MemoryBroker.layer)))

  it.effect("discovery: false leaves an instance out", () =>
    Effect.gen(function*() {
      const registry = yield* Discovery.watch()
      yield* Layer.build(Service.make(Billing, { handlers: { total: () => Effect.succeed(0) }, discovery: false }))
      yield* Layer.build(BillingLive)
      const [only] = yield* waitUntil(registry.instances, (is) => is.length === 1)
      assert.strictEqual(only.service, "billing")
      yield* Effect.yieldNow
      assert.strictEqual((yield* registry.instances).length, 1)
    }).pipe(Effect.provide(MemoryBroker.layer)))

  it("a service Layer knows its contract; other Layers do not", () => {
    assert.strictEqual(Service.isService(CalculatorLive), true)
    assert.strictEqual(Service.contractOf(CalculatorLive).pipe((o) => o._tag === "Some" && o.value.name), "calculator")
    assert.strictEqual(Service.isService(Layer.empty), false)
    assert.strictEqual(Service.isService(CalculatorLive.pipe(Layer.provide(Layer.empty))), false)
  })
})
