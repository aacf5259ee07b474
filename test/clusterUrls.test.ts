/**
 * Several RabbitMQ nodes for one broker: `AmqpBroker` takes a list of URLs (or URLs separated by
 * commas) and connects to one that answers; the configuration reads them from `amqp.urls` in a file,
 * `AMQP_URLS` or a comma-separated `AMQP_URL`; every URL's password is masked wherever it is shown.
 * Failover between live nodes under load is test/cluster.test.ts, on a three-node cluster.
 */
import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Option, Redacted, Schedule } from "effect"
import { AmqpBroker, MeshConfig } from "effect-mesh"
import { writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { amqpUrl } from "./fixtures/amqpUrl.ts"
import { freePort } from "./fixtures/freePort.ts"


const file = (name: string, text: string) => {
  const path = join(tmpdir(), `mesh-urls-${crypto.randomUUID().slice(0, 8)}-${name}`)
  writeFileSync(path, text)
  return path
}

describe("AmqpBroker with several nodes", () => {
  it.live("connects to the node that answers, whichever of the list it tries first (a list, or URLs separated by commas)", () =>
    Effect.gen(function*() {
      const dead = `amqp://guest:guest@127.0.0.1:${yield* freePort}`
      const live = amqpUrl()
      // the first node tried is picked at random: ten brokers try both orders
      for (let i = 0; i < 10; i++) {
        const url = i % 2 === 0 ? `${dead},${live}` : [Redacted.make(dead), live] as const
        const broker = yield* AmqpBroker.make({ url, connectTimeout: "2 seconds" })
        assert.isTrue(yield* broker.ready)
        const queue = yield* broker.declareQueue("", { exclusive: true, autoDelete: true })
        yield* broker.publish("", queue, new TextEncoder().encode("hello"), { confirm: true })
        assert.strictEqual(yield* broker.checkQueue(queue).pipe(Effect.map((q) => q.messages)), 1)
      }
    }).pipe(Effect.scoped))

  it.live("no node answers: the error names every node, passwords masked", () =>
    Effect.gen(function*() {
      const ports = [yield* freePort, yield* freePort]
      const url = ports.map((port) => `amqp://app:s3cret@127.0.0.1:${port}`).join(",")
      const error = yield* Effect.flip(
        Effect.scoped(AmqpBroker.make({ url, initialConnect: Schedule.recurs(0), connectTimeout: "1 second" }))
      )
      assert.include(error.message, `amqp://app:***@127.0.0.1:${ports[0]},amqp://app:***@127.0.0.1:${ports[1]}`)
      assert.notInclude(error.message, "s3cret")
    }))

  it.effect("config: amqp.urls in a file (AMQP_URLS), a comma-separated AMQP_URL; show masks each URL's password", () =>
    Effect.gen(function*() {
      const loaded = yield* MeshConfig.loadFile(
        file("f.yaml", "amqp:\n  urls:\n    - amqp://app:pw1@rabbit-1/\n    - amqp://app:pw2@rabbit-2/\n"),
        {}
      )
      const fromFile = MeshConfig.provider(loaded, {})
      const urls = yield* MeshConfig.amqpUrl.pipe(Effect.provideService(ConfigProvider.ConfigProvider, fromFile))
      assert.strictEqual(Option.map(urls, Redacted.value).pipe(Option.getOrUndefined), "amqp://app:pw1@rabbit-1/,amqp://app:pw2@rabbit-2/")
      assert.strictEqual(
        yield* MeshConfig.brokerLocation.pipe(Effect.provideService(ConfigProvider.ConfigProvider, fromFile)),
        "amqp amqp://app:***@rabbit-1/,amqp://app:***@rabbit-2/"
      )
      const shown = yield* MeshConfig.show(loaded, {}).pipe(Effect.provideService(ConfigProvider.ConfigProvider, fromFile))
      assert.deepInclude(shown, { key: "AMQP_URLS", value: "amqp://app:***@rabbit-1/,amqp://app:***@rabbit-2/", source: "file" })

      const env = { AMQP_URL: "amqp://app:pw1@rabbit-1/,amqps://ops:p,w@rabbit-2:5671/" }
      const fromEnv = MeshConfig.provider(undefined, env)
      const shownEnv = yield* MeshConfig.show(undefined, env).pipe(Effect.provideService(ConfigProvider.ConfigProvider, fromEnv))
      // a comma inside a password is not a separator: only one that a scheme follows is
      assert.deepInclude(shownEnv, { key: "AMQP_URL", value: "amqp://app:***@rabbit-1/,amqps://ops:***@rabbit-2:5671/", source: "env" })
      assert.strictEqual(MeshConfig.redactUrl(env.AMQP_URL), "amqp://app:***@rabbit-1/,amqps://ops:***@rabbit-2:5671/")
    }).pipe(Effect.provide(NodeServices.layer)))
})
