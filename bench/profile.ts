/**
 * Sums the self time of a V8 `.cpuprofile` (from `node --cpu-prof`, or `npm run bench -- --cpu-prof`)
 * by function, by file and by package, busy time only (idle excluded).
 *
 *   node bench/profile.ts <file.cpuprofile> [--top 40] [--match effect/rpc]
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
  options: { top: { type: "string", default: "40" }, match: { type: "string" } }
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
  const byFunction = new Map<string, number>()
  const byFile = new Map<string, number>()
  const byPackage = new Map<string, number>()
  let busy = 0
  let idle = 0
  const add = (m: Map<string, number>, k: string, v: number) => m.set(k, (m.get(k) ?? 0) + v)
  for (const [id, micros] of self) {
    const node = byId.get(id)
    if (node === undefined) continue
    const { functionName, lineNumber, url } = node.callFrame
    if (functionName === "(idle)") {
      idle += micros
      continue
    }
    busy += micros
    const where = fileOf(url)
    if (values.match !== undefined && !where.includes(values.match)) continue
    add(byFunction, `${functionName || "(anonymous)"}  ${where}:${lineNumber + 1}`, micros)
    add(byFile, where, micros)
    add(byPackage, packageOf(where), micros)
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
}

if (positionals.length === 0) {
  console.error("usage: node bench/profile.ts <file.cpuprofile> [--top 40] [--match text]")
  process.exit(2)
}
for (const file of positionals) summarize(file)
