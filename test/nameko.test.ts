/**
 * A polyglot mesh: real Nameko 2.14.1 services and standalone clients (python3 processes, installed by
 * `scripts/nameko.sh` when missing) and effect-mesh services on one RabbitMQ, calling each other and
 * hearing each other's events, with the call context carried across, and a SIGKILL on either side
 * mid-call answered after redelivery.
 */
import { assert, describe, it, layer } from "@effect/vitest"
import { Context, Deferred, Effect, Exit, Fiber, Layer, Schedule, Scope, Stream } from "effect"
import { AmqpBroker, Broker, CallContext, MemoryBroker, Nameko, Service, ServiceClient } from "effect-mesh"
import { existsSync, mkdtempSync, readFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import * as wire from "../src/internal/namekoWire.ts"
import { amqpUrl } from "./fixtures/amqpUrl.ts"
import {
  DivisionByZero,
  orderPlaced,
  pyCalc,
  PyDivisionByZero,
  pySlow,
  shipped,
  tsCalc,
  tsSlow
} from "./fixtures/nameko/contracts.ts"
import * as Python from "./fixtures/nameko/python.ts"
import { spawnProgram } from "./fixtures/processes.ts"

const prefix = `nk${crypto.randomUUID().replaceAll("-", "").slice(0, 8)}`
const logFile = join(mkdtempSync(join(tmpdir(), "nameko-log-")), "handlers.jsonl")
const pythonEnv = { NAMEKO_TEST_PREFIX: prefix, NAMEKO_TEST_LOG: logFile }
const tsSlowProgram = fileURLToPath(new URL("./fixtures/nameko/tsSlow.ts", import.meta.url))

const PyCalc = pyCalc(prefix)
const TsCalc = tsCalc(prefix)
const OrderPlaced = orderPlaced(prefix)
const Shipped = shipped(prefix)

/** what the TypeScript event handlers saw: handler, instance, payload id, user id */
const seen: Array<{ readonly handler: string; readonly instance: number; readonly id: string; readonly userId: string | undefined }> = []

/** the lines the Python handlers wrote */
const pythonLog = (): Array<Record<string, unknown>> =>
  existsSync(logFile)
    ? readFileSync(logFile, "utf8").split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as Record<string, unknown>)
    : []

const eventually = <A>(check: Effect.Effect<A, Error>) =>
  check.pipe(Effect.retry({ schedule: Schedule.spaced("100 millis"), times: 100 }))

const tsCalcHandlers = {
  add: ({ a, b }: { readonly a: number; readonly b: number }) => Effect.succeed(a + b),
  divide: ({ a, b }: { readonly a: number; readonly b: number }) =>
    b === 0 ? Effect.fail(new DivisionByZero({ dividend: a })) : Effect.succeed(a / b),
  crash: () => Effect.die(new Error("the handler crashed")),
  // Python -> TypeScript -> Python: the last hop tells what context reached it
  relay: () => Effect.flatMap(Nameko.client(PyCalc), (py) => py.whoami()).pipe(Effect.orDie),
  countdown: () => Effect.die("not on Nameko's wire")
}

const TsCalcLive = Service.make(TsCalc, {
  handlers: tsCalcHandlers,
  discovery: false,
  entrypoints: [Nameko.serve(TsCalc, tsCalcHandlers, { args: { add: ["a", "b"], divide: ["a", "b"] } })],
  // one policy for both wires: nobody adds to 666
  authorize: ({ method, payload }) => Effect.succeed(!(method === "add" && (payload as { readonly a: number }).a === 666))
})

/** an instance subscribing to Python's events with each of Nameko's handler types */
const eventsInstance = (instance: number) =>
  Service.make(tsSlow(`${prefix}ev`), {
    handlers: { slow: ({ tag }) => Effect.succeed({ tag, pid: process.pid }) },
    discovery: false,
    entrypoints: (["pool", "broadcast", "singleton"] as const).map((delivery) =>
      Nameko.handle(Shipped, { delivery, method: `on_${delivery}` }, ({ id }) =>
        Effect.map(CallContext.CallContext, (context) => {
          seen.push({ handler: delivery, instance, id, userId: context.userId })
        }))
    )
  })

class Peers extends Context.Service<Peers, {
  readonly source: string
  readonly driver: Python.Driver
  readonly pythons: ReadonlyArray<Python.Python>
}>()("test/nameko/Peers") {}

const PeersLive = Layer.effect(
  Peers,
  Effect.gen(function*() {
    const source = Python.install()
    const broker = yield* Broker.Broker
    const url = amqpUrl()
    // two instances of the Python service, started one after the other (the second waits for two consumers)
    const first = yield* Python.runServices(source, url, broker, [
      { className: "PyCalc", queue: `rpc-${prefix}_pycalc`, consumers: 1 }
    ], pythonEnv)
    const [second, driver] = yield* Effect.all([
      Python.runServices(source, url, broker, [{ className: "PyCalc", queue: `rpc-${prefix}_pycalc`, consumers: 2 }], pythonEnv),
      Python.driver(source, url)
    ], { concurrency: "unbounded" })
    return { source, driver, pythons: [first, second] }
  })
)

const MeshLive = Layer.mergeAll(TsCalcLive, eventsInstance(1), eventsInstance(2), PeersLive).pipe(
  Layer.provideMerge(Layer.merge(Nameko.layerClient, ServiceClient.layer)),
  Layer.provideMerge(Layer.suspend(() => AmqpBroker.layer({ url: amqpUrl() })))
)

const call = (service: string, method: string, args: ReadonlyArray<unknown>, kwargs: Record<string, unknown> = {}, context?: Record<string, string>) =>
  Effect.flatMap(Peers, ({ driver }: Peers["Service"]) =>
    driver.send({ op: "call", service, method, args, kwargs, ...(context === undefined ? {} : { context }) }))

layer(MeshLive, { timeout: "120 seconds", excludeTestServices: true })("Nameko and effect-mesh on one RabbitMQ", (it) => {
  it.effect("Nameko calls an effect-mesh service: results, contract errors as exc_type, defects", () =>
    Effect.gen(function*() {
      const service = TsCalc.name
      assert.deepStrictEqual(yield* call(service, "add", [1, 2]), { id: 0, result: 3 } as never)
      assert.strictEqual((yield* call(service, "add", [], { a: 4, b: 5 })).result, 9)
      assert.strictEqual((yield* call(service, "add", [4], { b: 6 })).result, 10)
      const divided = yield* call(service, "divide", [1, 0])
      assert.deepStrictEqual(divided.error, { class: "RemoteError", exc_type: "DivisionByZero", value: "DivisionByZero" })
      // the service's authorization policy holds on Nameko's wire as on the mesh's
      const denied = yield* call(service, "add", [666, 1])
      assert.deepStrictEqual(denied.error, {
        class: "RemoteError",
        exc_type: "Forbidden",
        value: `a caller the broker did not verify may not call ${service}.add`
      })
      assert.strictEqual((yield* Effect.flip((yield* ServiceClient.make(TsCalc)).add({ a: 666, b: 1 })))._tag, "Forbidden")
      const crashed = yield* call(service, "crash", [])
      assert.strictEqual(crashed.error?.exc_type, "RemoteDefect")
      assert.strictEqual(crashed.error?.value, "the handler crashed")
      // a Nameko service's RpcProxy calls the TypeScript service too
      assert.strictEqual((yield* call(PyCalc.name, "ts_add", [20, 22])).result, 42)
      // the Python service re-raises the RemoteError it got, as Nameko does: its value names ours
      // the same service on the mesh's own wire, at once
      const mesh = yield* ServiceClient.make(TsCalc)
      assert.strictEqual(yield* mesh.add({ a: 2, b: 3 }), 5)
      assert.strictEqual((yield* Effect.flip(mesh.divide({ a: 3, b: 0 })))._tag, "DivisionByZero")
      const relayed = yield* call(PyCalc.name, "ts_divide", [1, 0])
      assert.strictEqual(relayed.error?.exc_type, "RemoteError")
      assert.include(relayed.error?.value ?? "", "DivisionByZero")
    }))

  it.effect("bad input from Nameko gets Nameko's own errors, as their Python classes, and the service keeps serving", () =>
    Effect.gen(function*() {
      const service = TsCalc.name
      const unknown = yield* call(service, "missing", [])
      assert.deepStrictEqual(unknown.error, { class: "MethodNotFound", module: "nameko.exceptions", value: "missing" })
      // a streaming rpc is not on Nameko's wire
      assert.strictEqual((yield* call(service, "countdown", [3])).error?.class, "MethodNotFound")
      const tooMany = yield* call(service, "add", [1, 2, 3])
      assert.strictEqual(tooMany.error?.class, "IncorrectSignature")
      assert.include(tooMany.error?.value ?? "", "takes 2 positional arguments but 3 were given")
      assert.include((yield* call(service, "add", [1], { c: 2 })).error?.value ?? "", "unexpected keyword argument 'c'")
      assert.include((yield* call(service, "add", [1], { a: 2 })).error?.value ?? "", "multiple values for argument 'a'")
      assert.strictEqual((yield* call(service, "add", ["x", 2])).error?.class, "IncorrectSignature")
      assert.strictEqual((yield* call(service, "add", [1])).error?.class, "IncorrectSignature")

      // a body without args and kwargs, and one that is not JSON: MalformedRequest, on Nameko's reply route
      const broker = yield* Broker.Broker
      const replyTo = crypto.randomUUID()
      const queue = yield* broker.declareQueue("", { exclusive: true, autoDelete: true })
      yield* broker.bindQueue(queue, wire.rpcExchange, replyTo)
      const consumer = yield* broker.consume(queue, { prefetch: 10 })
      const send = (body: string, correlationId: string) =>
        broker.publish(wire.rpcExchange, `${service}.add`, new TextEncoder().encode(body), {
          replyTo,
          correlationId,
          contentType: "application/json"
        })
      yield* send(JSON.stringify({ positional: [1, 2] }), "m1")
      yield* send("{not json", "m2")
      const replies = yield* consumer.deliveries.pipe(
        Stream.take(2),
        Stream.mapEffect((d) => Effect.as(d.ack, [d.properties.correlationId, wire.readReply(d.body)?.error] as const)),
        Stream.runCollect
      )
      const byId = new Map(replies)
      assert.strictEqual(byId.get("m1")?.exc_path, "nameko.exceptions.MalformedRequest")
      assert.strictEqual(byId.get("m1")?.value, "Message missing `args` or `kwargs`")
      assert.strictEqual(byId.get("m2")?.exc_type, "MalformedRequest")
      // still serving
      assert.strictEqual((yield* call(service, "add", [2, 2])).result, 4)
    }))

  it.effect("effect-mesh calls Nameko with a typed contract: results, declared errors typed, others RemoteDefect, ServiceNotFound at once", () =>
    Effect.gen(function*() {
      const py = yield* Nameko.client(PyCalc, { args: { add: ["a", "b"], divide: ["a", "b"] } })
      assert.strictEqual(yield* py.add({ a: 1, b: 2 }), 3)
      // without a signature every field goes by keyword
      assert.strictEqual(yield* (yield* Nameko.client(PyCalc)).add({ a: 5, b: 6 }), 11)
      const divided = yield* Effect.flip(py.divide({ a: 1, b: 0 }))
      assert.instanceOf(divided, PyDivisionByZero)
      assert.strictEqual(divided.message, "cannot divide 1 by zero")
      const failed = yield* Effect.flip(py.fail())
      assert.strictEqual(failed._tag, "RemoteDefect")
      assert.include(failed.message, "ValueError: boom")
      const missing = yield* Effect.flip(py.nope())
      assert.strictEqual(missing._tag, "MethodNotFound")

      // no queue is bound for the service: ServiceNotFound as soon as the broker says so
      const nobody = yield* Nameko.client(pyCalc(`${prefix}nobody`))
      const startedAt = performance.now()
      const unroutable = yield* Effect.flip(nobody.add({ a: 1, b: 2 }))
      assert.strictEqual(unroutable._tag, "ServiceNotFound")
      assert.isBelow(performance.now() - startedAt, 1000)

      // a call past its timeout: CallTimeout, without waiting for the answer
      const napped = yield* Effect.flip((yield* Nameko.client(PyCalc)).nap({ millis: 3000 }, { timeout: "200 millis" }))
      assert.strictEqual(napped._tag, "CallTimeout")
      assert.isBelow(performance.now() - startedAt, 2000)

      // the typed client on an effect-mesh service's Nameko wire: its error comes back with its fields
      const ts = yield* Nameko.client(TsCalc, { args: { divide: ["a", "b"] } })
      const typed = yield* Effect.flip(ts.divide({ a: 7, b: 0 }))
      assert.instanceOf(typed, DivisionByZero)
      assert.strictEqual(typed.dividend, 7)
      assert.strictEqual(yield* ts.add({ a: 1, b: 1 }), 2)
    }))

  it.effect("events to Nameko: service_pool once, broadcast on every instance, singleton once; with the context", () =>
    Effect.gen(function*() {
      const { pythons } = yield* Peers
      yield* Nameko.dispatch(OrderPlaced, { id: "o-1", total: 42 }).pipe(CallContext.withUserId("grace"))
      const lines = yield* eventually(Effect.suspend(() => {
        const lines = pythonLog().filter((l) => (l["payload"] as { id?: string } | undefined)?.id === "o-1")
        return lines.length >= 4 ? Effect.succeed(lines) : Effect.fail(new Error(`${lines.length} handler runs`))
      }))
      yield* Effect.sleep("300 millis")
      const all = pythonLog().filter((l) => (l["payload"] as { id?: string } | undefined)?.id === "o-1")
      const kinds = (kind: string) => all.filter((l) => l["kind"] === kind)
      assert.strictEqual(kinds("pool").length, 1)
      assert.strictEqual(kinds("singleton").length, 1)
      assert.sameMembers(kinds("broadcast").map((l) => l["pid"]), pythons.map((p) => p.pid))
      assert.strictEqual(kinds("pool")[0]["user_id"], "grace")
      assert.deepStrictEqual(kinds("pool")[0]["payload"], { id: "o-1", total: 42 })
      assert.isAtLeast(lines.length, 4)
    }))

  it.effect("events from Nameko: effect-mesh handlers of each type, with the dispatcher's context", () =>
    Effect.gen(function*() {
      const { driver } = yield* Peers
      // a standalone dispatcher with context headers, and a Nameko service's EventDispatcher
      yield* driver.send({
        op: "dispatch",
        source: Shipped.source,
        type: Shipped.type,
        payload: { id: "s-1" },
        headers: { "nameko.user_id": "linus", "nameko.call_id_stack": ["standalone.dispatch.1"] }
      })
      yield* call(PyCalc.name, "fire", ["shipped", { id: "s-2" }], {}, { user_id: "ada" })
      const runs = (id: string) => seen.filter((s) => s.id === id)
      yield* eventually(Effect.suspend(() =>
        runs("s-1").length >= 4 && runs("s-2").length >= 4 ? Effect.void : Effect.fail(new Error("waiting for handlers"))
      ))
      yield* Effect.sleep("300 millis")
      for (const [id, userId] of [["s-1", "linus"], ["s-2", "ada"]] as const) {
        const of = (handler: string) => runs(id).filter((s) => s.handler === handler)
        assert.strictEqual(of("pool").length, 1, `${id} pool`)
        assert.strictEqual(of("singleton").length, 1, `${id} singleton`)
        assert.sameMembers(of("broadcast").map((s) => s.instance), [1, 2], `${id} broadcast`)
        assert.strictEqual(of("pool")[0].userId, userId)
      }
    }))

  it.effect("context: Python -> TypeScript -> Python, the last hop sees the whole call-id stack, the user and the other entries", () =>
    Effect.gen(function*() {
      const answer = yield* call(TsCalc.name, "relay", [], {}, { user_id: "ada", language: "fr", auth_token: "t0k", tenant: "acme" })
      const who = answer.result as { call_id_stack: Array<string>; user_id: string; language: string; auth_token: string; tenant: string }
      assert.strictEqual(who.call_id_stack.length, 3, JSON.stringify(who))
      assert.match(who.call_id_stack[0], /^standalone_rpc_proxy\.call\./)
      assert.match(who.call_id_stack[1], new RegExp(`^${TsCalc.name}\\.relay\\.`))
      assert.match(who.call_id_stack[2], new RegExp(`^${PyCalc.name}\\.whoami\\.`))
      assert.deepStrictEqual([who.user_id, who.language, who.auth_token, who.tenant], ["ada", "fr", "t0k", "acme"])
      // and from TypeScript: the caller's context becomes Nameko's
      const py = yield* Nameko.client(PyCalc)
      const mine = yield* py.whoami().pipe(
        CallContext.withUserId("bob"),
        CallContext.withEntries({ language: "de" })
      )
      assert.strictEqual(mine.user_id, "bob")
      assert.strictEqual(mine.language, "de")
      assert.strictEqual(mine.call_id_stack.length, 2)
    }))

  it.effect("a stopping instance puts back the Nameko requests it could not finish, and another instance answers them", () =>
    Effect.gen(function*() {
      const contract = tsSlow(`${prefix}dr`)
      const started = yield* Deferred.make<void>()
      const instance = (n: number) => {
        const handlers = {
          slow: ({ millis, tag }: { readonly tag: string; readonly millis: number }) =>
            Deferred.succeed(started, undefined).pipe(Effect.andThen(Effect.sleep(millis)), Effect.as({ tag, pid: n }))
        }
        return Service.make(contract, {
          handlers,
          discovery: false,
          entrypoints: [Nameko.serve(contract, handlers, { args: { slow: ["tag", "millis"] }, drainTimeout: "100 millis" })]
        })
      }
      const first = yield* Scope.make()
      yield* Layer.buildWithScope(instance(1), first)
      const pending = yield* Effect.forkChild(call(contract.name, "slow", ["drained", 1000]))
      yield* Deferred.await(started)
      yield* Scope.close(first, Exit.void)
      yield* Layer.build(instance(2))
      const answer = yield* Fiber.join(pending)
      assert.deepStrictEqual(answer.result, { tag: "drained", pid: 2 })
    }))

  it.effect("SIGKILL of a Nameko service mid-call: the request is redelivered to another instance and answered", () =>
    Effect.gen(function*() {
      const { source } = yield* Peers
      const broker = yield* Broker.Broker
      const queue = `rpc-${prefix}_pyslow`
      const first = yield* Python.runServices(source, amqpUrl(), broker, [{ className: "PySlow", queue, consumers: 1 }], pythonEnv)
      const slow = yield* Nameko.client(pySlow(prefix), { args: { slow: ["tag", "millis"] } })
      const pending = yield* Effect.forkChild(slow.slow({ tag: "k-py", millis: 1500 }))
      yield* eventually(Effect.suspend(() =>
        pythonLog().some((l) => l["kind"] === "slow-start" && l["tag"] === "k-py" && l["pid"] === first.pid)
          ? Effect.void
          : Effect.fail(new Error("waiting for the call to start"))
      ))
      yield* first.kill("SIGKILL")
      const second = yield* Python.runServices(source, amqpUrl(), broker, [{ className: "PySlow", queue, consumers: 1 }], pythonEnv)
      const answer = yield* Fiber.join(pending)
      assert.deepStrictEqual(answer, { tag: "k-py", pid: second.pid })
    }))

  it.effect("SIGKILL of an effect-mesh service mid-call: the Nameko caller's request is redelivered and answered", () =>
    Effect.gen(function*() {
      const env = { AMQP_URL: amqpUrl(), NAMEKO_TEST_PREFIX: prefix }
      const first = yield* spawnProgram(tsSlowProgram, env)
      yield* first.waitFor(/^ready/)
      const pending = yield* Effect.forkChild(call(`${prefix}_tsslow`, "slow", ["k-ts", 1500]))
      yield* first.waitFor(/^started k-ts/)
      yield* first.kill("SIGKILL")
      const second = yield* spawnProgram(tsSlowProgram, env)
      yield* second.waitFor(/^ready/)
      const answer = yield* Fiber.join(pending)
      assert.deepStrictEqual(answer.result, { tag: "k-ts", pid: second.pid })
    }))
})

describe("examples/nameko", () => {
  it.live("a Python service and a TypeScript service call each other and hear each other's events", () =>
    Effect.gen(function*() {
      const source = Python.install()
      const broker = yield* Broker.Broker
      const dir = fileURLToPath(new URL("../examples/nameko/", import.meta.url))
      yield* Python.runServices(source, amqpUrl(), broker, [{ className: "Inventory", queue: "rpc-inventory", consumers: 1 }], {}, {
        dir,
        name: "inventory"
      })
      const main = yield* spawnProgram(join(dir, "main.ts"), { AMQP_URL: amqpUrl() })
      yield* main.waitFor(/reserved 6 apple for ada: 3/)
      yield* main.waitFor(/refused: OutOfStock \(only 2 pear left\)/)
      yield* main.waitFor(/stock of apple is low: 4 left/)
      yield* main.kill("SIGTERM")
      assert.deepStrictEqual(yield* main.exited, { code: 0, signal: null }, main.output().join("\n"))
    }).pipe(Effect.provide(Layer.suspend(() => AmqpBroker.layer({ url: amqpUrl() })))), 60_000)
})

describe("Nameko on the embedded broker", () => {
  it.effect("is refused with NamekoError UnsupportedBroker: Nameko speaks AMQP", () =>
    Effect.gen(function*() {
      const dispatched = yield* Effect.flip(Nameko.dispatch(OrderPlaced, { id: "o", total: 1 }))
      assert.strictEqual(dispatched._tag, "NamekoError")
      const served = yield* Effect.exit(Layer.build(TsCalcLive.pipe(Layer.provide(Nameko.layerClient))))
      assert.isTrue(Exit.isFailure(served))
      const client = yield* Effect.exit(Layer.build(Nameko.layerClient))
      assert.isTrue(Exit.isFailure(client) && JSON.stringify(client.cause).includes("UnsupportedBroker"))
    }).pipe(Effect.provide(MemoryBroker.layer)))
})
