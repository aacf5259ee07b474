/**
 * The one Layer of a mesh process: services and a program on the broker the configuration picks (the
 * embedded one, or RabbitMQ from `AMQP_URL` or a config file), and the HTTP edge served only when a
 * port is configured, called over a real socket with node's fetch.
 */
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Console, Deferred, Effect, Exit, Fiber, Layer, Schedule, Schema, Scope } from "effect"
import { Rpc, RpcGroup } from "effect/rpc"
import { Broker, Discovery, HttpEntrypoint, Mesh, Service, ServiceClient, ServiceContract } from "effect-mesh"
import { writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { amqpUrl } from "./fixtures/amqpUrl.ts"
import { captureLogs } from "./fixtures/logs.ts"
import { freePort } from "./fixtures/freePort.ts"

const suffix = () => crypto.randomUUID().slice(0, 8)

class GreeterRpcs extends RpcGroup.make(
  Rpc.make("greet", { payload: { name: Schema.String }, success: Schema.String })
) {}

const greeter = () => ServiceContract.make(`greeter-${suffix()}`, GreeterRpcs)

const handlers = { greet: ({ name }: { readonly name: string }) => Effect.succeed(`hello ${name}`) }

/** a service with an rpc and an HTTP entrypoint */
const greeterLive = (contract: ReturnType<typeof greeter>) =>
  Service.make(contract, {
    handlers,
    entrypoints: [
      HttpEntrypoint.make({
        method: "GET",
        path: `/${contract.name}/:name`,
        params: Schema.Struct({ name: Schema.String }),
        success: Schema.Struct({ greeting: Schema.String })
      }, ({ params }) => Effect.succeed({ greeting: `hi ${params.name}` }))
    ]
  })

/** the same rpc, without routes */
const plainLive = (contract: ReturnType<typeof greeter>) => Service.make(contract, { handlers })


const fetchJson = (url: string, init?: RequestInit) =>
  Effect.promise(async () => {
    const response = await fetch(url, init)
    return { status: response.status, body: (await response.json()) as unknown }
  })

const postJson = (url: string, body: unknown) =>
  fetchJson(url, { method: "POST", body: JSON.stringify(body), headers: { "content-type": "application/json" } })

const config = (settings: Record<string, string>) => ConfigProvider.layer(ConfigProvider.fromUnknown(settings))

/** calls the service the way a program does, and says which broker carried it */
const callGreet = (contract: ReturnType<typeof greeter>) =>
  Effect.gen(function*() {
    const client = yield* ServiceClient.make(contract, { timeout: "10 seconds" })
    const greeting = yield* client.greet({ name: "ada" })
    const broker = yield* Broker.Broker
    return { greeting, broker: broker.kind }
  })

describe("Mesh.layerConfig", () => {
  it.live("without AMQP_URL: the embedded broker; the program and the services share the client", () =>
    Effect.gen(function*() {
      const contract = greeter()
      const result = yield* callGreet(contract).pipe(
        Effect.provide(Mesh.layerConfig([plainLive(contract)]).pipe(Layer.provide(config({}))))
      )
      assert.deepStrictEqual(result, { greeting: "hello ada", broker: "memory" })
    }))

  it.live("LOG_FORMAT=json: the services' log lines are JSON, with their run's annotations; LOG_LEVEL drops the lesser", () =>
    Effect.gen(function*() {
      const contract = greeter()
      const written: Array<string> = []
      const testConsole: Console.Console = Object.assign(Object.create(console), {
        log: (...args: ReadonlyArray<unknown>) => void written.push(args.map(String).join(" "))
      })
      const logging = Service.make(contract, {
        handlers: {
          greet: ({ name }) =>
            Effect.andThen(Effect.logDebug("not written"), Effect.as(Effect.logWarning(`greeting ${name}`), `hello ${name}`))
        }
      })
      const result = yield* callGreet(contract).pipe(
        Effect.provide(Mesh.layerConfig([logging]).pipe(Layer.provide(config({ LOG_FORMAT: "json", LOG_LEVEL: "Info" })))),
        Effect.provideService(Console.Console, testConsole)
      )
      assert.strictEqual(result.greeting, "hello ada")
      const lines = written.flatMap((line) => {
        const parsed: unknown = JSON.parse(line)
        return typeof parsed === "object" && parsed !== null ? [parsed as Record<string, unknown>] : []
      })
      const greeting = lines.find((l) => JSON.stringify(l.message).includes("greeting ada"))
      assert.isDefined(greeting, written.join("\n"))
      assert.strictEqual(greeting!["level"], "WARN")
      assert.include(greeting!["annotations"] as object, { service: contract.name, run: `${contract.name}.greet` })
      assert.isFalse(written.some((line) => line.includes("not written")))
    }))

  it.live("with AMQP_URL: RabbitMQ", () =>
    Effect.gen(function*() {
      const contract = greeter()
      const result = yield* callGreet(contract).pipe(
        Effect.provide(Mesh.layerConfig(plainLive(contract)).pipe(Layer.provide(config({ AMQP_URL: amqpUrl() }))))
      )
      assert.deepStrictEqual(result, { greeting: "hello ada", broker: "amqp" })
    }))

  it.live("with HTTP_PORT: the services' routes, POST /rpc/<service>/<method>, /metrics and the log line; the program calls too", () =>
    Effect.gen(function*() {
      const contract = greeter()
      const port = yield* freePort
      const logs = captureLogs()
      const base = `http://127.0.0.1:${port}`
      const result = yield* Effect.gen(function*() {
        const route = yield* fetchJson(`${base}/${contract.name}/grace`)
        assert.deepStrictEqual(route, { status: 200, body: { greeting: "hi grace" } })
        const rpc = yield* postJson(`${base}/rpc/${contract.name}/greet`, { name: "alan" })
        assert.deepStrictEqual(rpc, { status: 200, body: "hello alan" })
        const invalid = yield* postJson(`${base}/rpc/${contract.name}/greet`, { name: 1 })
        assert.strictEqual(invalid.status, 400)
        const called = yield* callGreet(contract)
        // the process's metrics, for Prometheus: the calls above, on both sides, by method and outcome
        const metrics = yield* Effect.promise(async () => {
          const response = await fetch(`${base}/metrics`)
          return { status: response.status, type: response.headers.get("content-type") ?? "", text: await response.text() }
        })
        assert.strictEqual(metrics.status, 200)
        assert.include(metrics.type, "text/plain")
        const count = (name: string) =>
          metrics.text.split("\n").find((line) =>
            line.startsWith(`${name}_count{`) && line.includes(`rpc_service="${contract.name}"`) && line.includes(`outcome="success"`)
          )
        assert.match(count("rpc_server_call_duration") ?? "", / 2$/, metrics.text)
        assert.match(count("rpc_client_call_duration") ?? "", / 2$/, metrics.text)
        return called
      }).pipe(
        Effect.provide(
          Mesh.layerConfig([greeterLive(contract)], { http: { disableLogger: true } }).pipe(
            Layer.provide(config({ HTTP_PORT: String(port), HTTP_HOST: "127.0.0.1" }))
          )
        ),
        Effect.provideService(Discovery.LogLevel, "Info"),
        Effect.provide(logs.layer)
      )
      assert.deepStrictEqual(result, { greeting: "hello ada", broker: "memory" })
      assert.isTrue(logs.lines.some((l) => l.level === "Info" && l.message === `mesh: HTTP on ${base}`), JSON.stringify(logs.lines))
      // released with the Layer
      const after = yield* Effect.tryPromise(() => fetch(`${base}/${contract.name}/grace`)).pipe(Effect.exit)
      assert.isTrue(Exit.isFailure(after))
    }))

  it.live("a config file names RabbitMQ and the port (amqp.url, http.port): the edge calls the service over RabbitMQ", () =>
    Effect.gen(function*() {
      const contract = greeter()
      const port = yield* freePort
      const file = join(tmpdir(), `mesh-${suffix()}.yaml`)
      writeFileSync(file, `amqp:\n  url: \${MESH_TEST_NOWHERE:${amqpUrl()}}\nhttp:\n  port: ${port}\n  host: 127.0.0.1\n`)
      const result = yield* Effect.gen(function*() {
        const route = yield* fetchJson(`http://127.0.0.1:${port}/${contract.name}/grace`)
        assert.deepStrictEqual(route, { status: 200, body: { greeting: "hi grace" } })
        const rpc = yield* postJson(`http://127.0.0.1:${port}/rpc/${contract.name}/greet`, { name: "alan" })
        assert.deepStrictEqual(rpc, { status: 200, body: "hello alan" })
        return yield* callGreet(contract)
      }).pipe(
        Effect.provide(Mesh.layerConfig([greeterLive(contract)], { config: file, http: { disableLogger: true } }))
      )
      assert.deepStrictEqual(result, { greeting: "hello ada", broker: "amqp" })
    }))

  it.live("without a port nothing listens; services with routes fail the Layer with MeshError NoHttpPort", () =>
    Effect.gen(function*() {
      const contract = greeter()
      const logs = captureLogs()
      const result = yield* callGreet(contract).pipe(
        Effect.provide(Mesh.layerConfig([plainLive(contract)]).pipe(Layer.provide(config({})))),
        Effect.provideService(Discovery.LogLevel, "Info"),
        Effect.provide(logs.layer)
      )
      assert.strictEqual(result.greeting, "hello ada")
      assert.isFalse(logs.lines.some((l) => l.message.startsWith("mesh: HTTP on")), JSON.stringify(logs.lines))

      const routed = greeter()
      const exit = yield* callGreet(routed).pipe(
        Effect.provide(Mesh.layerConfig([greeterLive(routed)]).pipe(Layer.provide(config({})))),
        Effect.exit
      )
      assert.isTrue(Exit.isFailure(exit))
      const error = Exit.findErrorOption(exit)
      assert.isTrue(error._tag === "Some" && error.value instanceof Mesh.MeshError)
      if (error._tag === "Some" && error.value instanceof Mesh.MeshError) {
        assert.strictEqual(error.value.reason, "NoHttpPort")
        assert.deepStrictEqual(error.value.routes, [`GET /${routed.name}/:name`])
        assert.match(error.value.message, /no HTTP port is configured: set HTTP_PORT/)
      }
    }))
})

describe("Mesh.layer", () => {
  it.live("without config: the embedded broker, HTTP on the port given", () =>
    Effect.gen(function*() {
      const contract = greeter()
      const port = yield* freePort
      const result = yield* Effect.gen(function*() {
        const rpc = yield* postJson(`http://127.0.0.1:${port}/rpc/${contract.name}/greet`, { name: "alan" })
        assert.deepStrictEqual(rpc, { status: 200, body: "hello alan" })
        return yield* callGreet(contract)
      }).pipe(
        Effect.provide(Mesh.layer([greeterLive(contract)], { http: { port, host: "127.0.0.1", disableLogger: true } }))
      )
      assert.deepStrictEqual(result, { greeting: "hello ada", broker: "memory" })
    }))
})

describe("health", () => {
  it.live("/healthz and /readyz on the HTTP edge and on METRICS_PORT; readiness drops while the instances drain", () =>
    Effect.gen(function*() {
      const contract = greeter()
      const httpPort = yield* freePort
      const metricsPort = yield* freePort
      const held = yield* Deferred.make<void>()
      const began = yield* Deferred.make<void>()
      const slow = Service.make(contract, {
        handlers: {
          greet: ({ name }) =>
            Effect.andThen(Deferred.succeed(began, undefined), Effect.as(Deferred.await(held), `hello ${name}`))
        }
      })
      const logs = captureLogs()
      const edge = `http://127.0.0.1:${httpPort}`
      const metrics = `http://127.0.0.1:${metricsPort}`
      const scope = yield* Scope.make()
      const context = yield* Layer.buildWithScope(
        Mesh.layerConfig([slow], { http: { disableLogger: true } }).pipe(
          Layer.provide(config({ HTTP_PORT: String(httpPort), METRICS_PORT: String(metricsPort), HTTP_HOST: "127.0.0.1" })),
          Layer.provide(logs.layer),
          Layer.provide(Layer.succeed(Discovery.LogLevel, "Info"))
        ),
        scope
      )
      const serving = { ready: true, broker: "connected", services: "serving" }
      for (const base of [edge, metrics]) {
        assert.deepStrictEqual(yield* fetchJson(`${base}/healthz`), { status: 200, body: { ok: true } })
        assert.deepStrictEqual(yield* fetchJson(`${base}/readyz`), { status: 200, body: serving })
      }
      const scraped = yield* Effect.promise(() => fetch(`${metrics}/metrics`).then((r) => r.text()))
      assert.include(scraped, "# TYPE")
      assert.isTrue(
        logs.lines.some((l) => l.message === `mesh: metrics and health on ${metrics}`),
        JSON.stringify(logs.lines)
      )
      // a call in progress, then the process stops: it drains, and is not ready meanwhile
      const call = yield* Effect.forkChild(
        Effect.provideContext(callGreet(contract), context)
      )
      yield* Deferred.await(began)
      const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void))
      const draining = yield* fetchJson(`${metrics}/readyz`).pipe(
        Effect.repeat({ until: (r) => r.status === 503, schedule: Schedule.spaced("20 millis") }),
        Effect.timeout("5 seconds")
      )
      assert.deepStrictEqual(draining, { status: 503, body: { ready: false, broker: "connected", services: "draining" } })
      yield* Deferred.succeed(held, undefined)
      assert.deepStrictEqual(yield* Fiber.join(call), { greeting: "hello ada", broker: "memory" })
      yield* Fiber.join(closing)
      const after = yield* Effect.tryPromise(() => fetch(`${metrics}/healthz`)).pipe(Effect.exit)
      assert.isTrue(Exit.isFailure(after))
    }))
})
