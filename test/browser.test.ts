/**
 * A real browser on the edge: headless Chromium (Debian's, installed by scripts/chromium.sh when
 * missing) loads a page that connects over WebSocket, subscribes to a channel, asks a service running
 * on another instance (behind RabbitMQ) to broadcast, and shows the broadcast in its DOM.
 *
 * The page's HTML stays open until the page reports that it rendered the broadcast (an RPC over its
 * socket), so Chromium's `--dump-dom`, which prints the DOM once the document has loaded, shows it.
 */
import { assert, beforeAll, describe, it } from "@effect/vitest"
import { Deferred, Effect, Layer, Stream } from "effect"
import { FetchHttpClient, HttpRouter, HttpServerResponse } from "effect/http"
import { Rpc, RpcGroup } from "effect/rpc"
import { AmqpBroker, HttpGateway, Hub, Service, ServiceClient, ServiceContract, WebSocketGateway } from "effect-mesh"
import { spawn, spawnSync } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { amqpUrl } from "./fixtures/amqpUrl.ts"
import { notifier, notifierService } from "./fixtures/edgeServices.ts"

let chromium = ""

beforeAll(() => {
  const found = spawnSync("bash", [join(import.meta.dirname, "..", "scripts", "chromium.sh")], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"]
  })
  if (found.status !== 0) throw new Error("scripts/chromium.sh failed")
  chromium = found.stdout.trim()
}, 900_000)

/** runs Chromium on a URL and returns the DOM it printed */
const dumpDom = (url: string) =>
  Effect.acquireUseRelease(
    Effect.sync(() => mkdtempSync(join(tmpdir(), "mesh-chromium-"))),
    (profile) =>
      Effect.callback<string, Error>((resume) => {
        const child = spawn(chromium, [
          "--headless",
          "--no-sandbox",
          "--disable-gpu",
          "--disable-quic",
          "--no-first-run",
          "--disable-background-networking",
          "--disable-component-update",
          "--disable-sync",
          `--user-data-dir=${profile}`,
          "--dump-dom",
          url
        ], { stdio: ["ignore", "pipe", "pipe"] })
        let out = ""
        let err = ""
        child.stdout.on("data", (chunk: Buffer) => (out += chunk.toString("utf8")))
        child.stderr.on("data", (chunk: Buffer) => (err += chunk.toString("utf8")))
        child.on("exit", (code) =>
          resume(code === 0 ? Effect.succeed(out) : Effect.fail(new Error(`chromium exited ${code}: ${err}`))))
        return Effect.sync(() => child.kill("SIGKILL"))
      }).pipe(Effect.timeout("60 seconds")),
    (profile) => Effect.sync(() => rmSync(profile, { recursive: true, force: true }))
  )

const page = (notifierName: string, pageName: string) => `<!doctype html>
<html><head><meta charset="utf-8"><title>effect-mesh</title></head><body>
<h1>broadcasts</h1><ul id="broadcasts"></ul>
<script>
const ws = new WebSocket(location.origin.replace(/^http/, "ws") + "/ws")
const call = (method, data, correlation_id) => ws.send(JSON.stringify({ method, data, correlation_id }))
ws.onmessage = (message) => {
  const frame = JSON.parse(message.data)
  if (frame.type === "event" && frame.event === "connected") call("subscribe", { channel: "browser" }, "subscribe")
  if (frame.type === "result" && frame.correlation_id === "subscribe")
    call("${notifierName}.announce", { channel: "browser", text: "hello from the mesh" }, "announce")
  if (frame.type === "event" && frame.event === "announcement") {
    const item = document.createElement("li")
    item.className = "broadcast"
    item.textContent = frame.data.text + " (from " + frame.data.from + ")"
    document.getElementById("broadcasts").appendChild(item)
    call("${pageName}.rendered", {}, "rendered")
  }
}
</script>
`

describe("a headless Chromium page", () => {
  it.live("connects over WebSocket and shows a broadcast another instance sent through RabbitMQ", () =>
    Effect.gen(function*() {
      const suffix = crypto.randomUUID().slice(0, 8)
      const n = notifier(suffix)
      const Page = ServiceContract.make(`page-${suffix}`, RpcGroup.make(Rpc.make("rendered")))
      const rendered = yield* Deferred.make<void>()
      const broker = AmqpBroker.layer({ url: amqpUrl() })
      // instance B: the notifier, on its own connection
      yield* Layer.build(
        notifierService(n, "instance-b").pipe(Layer.provideMerge(ServiceClient.layer), Layer.provideMerge(Layer.fresh(broker)))
      )
      // instance A: the edge, which also runs the page's service
      const PageRoute = HttpRouter.add(
        "GET",
        "/",
        HttpServerResponse.stream(
          Stream.concat(
            Stream.succeed(page(n.name, Page.name)),
            Stream.fromEffect(Effect.as(Deferred.await(rendered), "</body></html>\n"))
          ).pipe(Stream.encodeText),
          { contentType: "text/html; charset=utf-8" }
        )
      )
      const edge = yield* Layer.build(
        Layer.mergeAll(
          PageRoute,
          Service.make(Page, { handlers: { rendered: () => Effect.asVoid(Deferred.succeed(rendered, undefined)) } }),
          WebSocketGateway.layer({ contracts: [n, Page] })
        ).pipe(
          Layer.provideMerge(HttpGateway.layer({ port: 0, disableLogger: true })),
          Layer.provideMerge(Hub.layer),
          Layer.provideMerge(ServiceClient.layer),
          Layer.provideMerge(Layer.fresh(broker)),
          Layer.provide(FetchHttpClient.layer)
        )
      )
      const url = yield* HttpGateway.url.pipe(Effect.provide(edge))
      const dom = yield* dumpDom(`${url}/`)
      assert.include(dom, `<li class="broadcast">hello from the mesh (from instance-b)</li>`)
    }).pipe(Effect.scoped), 120_000)
})
