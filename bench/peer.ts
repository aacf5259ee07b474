/**
 * One process of the benchmark, driven by the orchestrator (`bench/index.ts`) over IPC:
 *
 *   node bench/peer.ts server|client ours|ours-classic|raw <runId> <amqpUrl>
 *   node bench/peer.ts server|client ours-observed|ours-classic-observed <runId> <amqpUrl> <otlpBaseUrl>
 *   node bench/peer.ts embedded ours <runId>
 *
 * A server serves the RPC contract and handles events; a client calls and publishes. `ours` runs
 * effect-mesh on quorum queues, `ours-classic` on classic ones; `raw` serves and calls every raw
 * queue. The `-observed` families run the same with effect's OTLP exporters posting to
 * `<otlpBaseUrl>` and a Prometheus scrape every second (`MeshFamily` in shared.ts). Each reports its own CPU time (`process.cpuUsage`) for the stretch the orchestrator measures.
 */
import * as ours from "./ours.ts"
import * as raw from "./raw.ts"
import type { Command, Reply, Request } from "./shared.ts"
import { baseRunId, isMeshFamily, isObserved, names, queueTypeOf } from "./shared.ts"

const [role, family = "", runId, url = "", otlpBaseUrl] = process.argv.slice(2)
if (process.send === undefined || runId === undefined) {
  console.error("peer.ts is started by bench/index.ts (it needs an IPC channel)")
  process.exit(2)
}
const n = names(runId)
/** the mesh peer's family, its queue type and names, and its exporters; `undefined` for raw */
const mesh = isMeshFamily(family)
  ? {
    queueType: queueTypeOf(family),
    names: (isObserved(family) ? n.observed : n.ours)[queueTypeOf(family)],
    observe: isObserved(family)
      ? { otlpBaseUrl: otlpBaseUrl ?? "", serviceName: `bench-${role}-${family}` }
      : undefined
  }
  : undefined
if (mesh?.observe !== undefined && otlpBaseUrl === undefined) {
  console.error(`peer.ts: ${family} needs the OTLP receiver's base URL`)
  process.exit(2)
}

const send = (reply: Reply): void => {
  process.send?.(reply)
}

type Handler = (command: Command) => Promise<unknown>

const unsupported = (command: Command): Promise<never> =>
  Promise.reject(new Error(`${role} ${family} does not do ${command._tag}`))

const makeHandler = async (): Promise<{ readonly handle: Handler; readonly close: () => Promise<void> }> => {
  if (role === "server") {
    const server = mesh !== undefined
      ? await ours.server(url, mesh.names, mesh.queueType, mesh.observe)
      : { ...await raw.server(url, n, names(baseRunId(runId))), observed: undefined }
    let events: Promise<void> | undefined
    return {
      handle: (command) => {
        switch (command._tag) {
          case "Cpu":
            return Promise.resolve(process.cpuUsage())
          case "ExpectEvents":
            events = server.expectEvents(command.count)
            return Promise.resolve(process.cpuUsage())
          case "AwaitEvents":
            return (events ?? Promise.resolve()).then(() => process.cpuUsage())
          case "Observed":
            return server.observed === undefined ? unsupported(command) : Promise.resolve(server.observed())
          default:
            return unsupported(command)
        }
      },
      close: server.close
    }
  }
  if (role === "client") {
    const client = mesh !== undefined
      ? await ours.client(url, mesh.names, mesh.observe)
      : { ...await raw.client(url, n), observed: undefined }
    return {
      handle: (command) => {
        switch (command._tag) {
          case "RpcWarmup":
            return client.rpc(command.run, command.run.warmupMs)
          case "RpcMeasure":
            return client.rpc(command.run, command.run.durationMs)
          case "Publish":
            return client.publish(command.run)
          case "Observed":
            return client.observed === undefined ? unsupported(command) : Promise.resolve(client.observed())
          default:
            return unsupported(command)
        }
      },
      close: client.close
    }
  }
  const embedded = await ours.embedded(n)
  return {
    handle: async (command) => {
      if (command._tag !== "Embedded") return unsupported(command)
      await embedded.run(command.run, command.run.warmupMs)
      return embedded.run(command.run, command.run.durationMs)
    },
    close: embedded.close
  }
}

const { close, handle } = await makeHandler()

process.on("message", (message: Request) => {
  const { command, id } = message
  if (command._tag === "Exit") {
    close().then(
      () => process.exit(0),
      (error: unknown) => {
        console.error(error)
        process.exit(1)
      }
    )
    return
  }
  handle(command).then(
    (value) => send({ _tag: "Done", id, value }),
    (error: unknown) => send({ _tag: "Failed", id, error: error instanceof Error ? error.stack ?? error.message : String(error) })
  )
})
send({ _tag: "Ready" })
