/**
 * Sums the self time of a V8 `.cpuprofile` (from `node --cpu-prof`, or `npm run bench -- --cpu-prof`)
 * by function, by file and by package, busy time only (idle excluded); with `--inclusive`, also the
 * total time under each function (itself and what it called, each sample counted once per function).
 *
 *   node bench/profile.ts <file.cpuprofile> [--top 40] [--match effect/rpc] [--inclusive]
 */
import { readFileSync } from "node:fs"
import { parseArgs } from "node:util"

interface ProfileNode {
  readonly id: number
  readonly callFrame: {
    readonly functionName: string
    readonly url: string
    readonly lineNumber: number
  }
  readonly children?: ReadonlyArray<number>
}

interface Profile {
  readonly nodes: ReadonlyArray<ProfileNode>
  readonly samples: ReadonlyArray<number>
  readonly timeDeltas: ReadonlyArray<number>
}

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: { top: { type: "string", default: "40" }, match: { type: "string" }, inclusive: { type: "boolean", default: false } }
})
const top = Number(values.top)

/** where a frame lives, shortened: `effect/Effect.ts`, `src/BrokerRpcServer.ts`, `amqplib/...`, `node:...` */
const fileOf = (url: string): string => {
  if (url === "") return "(native)"
  const path = url.replace(/^file:\/\//, "")
  const modules = path.lastIndexOf("/node_modules/")
  if (modules >= 0) {
    return path.slice(modules + "/node_modules/".length).replace(/^effect\/(dist|src)\//, "effect/")
  }
  const project = path.search(/\/(src|bench|test)\//)
  return project >= 0 ? path.slice(project + 1) : path
}

const packageOf = (file: string): string => {
  if (file.startsWith("effect/")) {
    const parts = file.split("/")
    return parts.length > 2 ? `effect/${parts[1]}` : "effect"
  }
  if (file.startsWith("src/")) return "effect-mesh"
  if (file.startsWith("node:")) return "node"
  return file.split("/")[0]
}

const summarize = (file: string) => {
  const profile = JSON.parse(readFileSync(file, "utf8")) as Profile
  const byId = new Map(profile.nodes.map((n) => [n.id, n]))
  const self = new Map<number, number>()
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i]
    self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0))
  }
  const parent = new Map<number, number>()
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id)
  const keyOf = (node: ProfileNode) => {
    const { functionName, lineNumber, url } = node.callFrame
    return `${functionName || "(anonymous)"}  ${fileOf(url)}:${lineNumber + 1}`
  }
  const byFunction = new Map<string, number>()
  const inclusive = new Map<string, number>()
  const byFile = new Map<string, number>()
  const byPackage = new Map<string, number>()
  let busy = 0
  let idle = 0
  const add = (m: Map<string, number>, k: string, v: number) => m.set(k, (m.get(k) ?? 0) + v)
  for (const [id, micros] of self) {
    const node = byId.get(id)
    if (node === undefined) continue
    const { functionName, url } = node.callFrame
    if (functionName === "(idle)") {
      idle += micros
      continue
    }
    busy += micros
    const where = fileOf(url)
    if (values.match !== undefined && !where.includes(values.match)) continue
    add(byFunction, keyOf(node), micros)
    add(byFile, where, micros)
    add(byPackage, packageOf(where), micros)
    if (values.inclusive === true) {
      const seen = new Set<string>()
      for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
        const frame = byId.get(at)
        if (frame === undefined) break
        const key = keyOf(frame)
        if (!seen.has(key)) {
          seen.add(key)
          add(inclusive, key, micros)
        }
      }
    }
  }
  const show = (title: string, m: Map<string, number>) => {
    console.log(`\n${title}`)
    for (const [key, micros] of [...m].sort((a, b) => b[1] - a[1]).slice(0, top)) {
      console.log(`${(micros / 1000).toFixed(0).padStart(8)} ms ${(micros / busy * 100).toFixed(1).padStart(5)}%  ${key}`)
    }
  }
  console.log(`${file}\nbusy ${(busy / 1000).toFixed(0)} ms, idle ${(idle / 1000).toFixed(0)} ms`)
  show("by package", byPackage)
  show("by file", byFile)
  show("by function (self time)", byFunction)
  if (values.inclusive === true) show("by function (inclusive time)", inclusive)
}

if (positionals.length === 0) {
  console.error("usage: node bench/profile.ts <file.cpuprofile> [--top 40] [--match text]")
  process.exit(2)
}
for (const file of positionals) summarize(file)
