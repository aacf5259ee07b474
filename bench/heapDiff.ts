/**
 * `node bench/heapDiff.ts <before.heapsnapshot> <after.heapsnapshot> [--top 20]`: what grew between two
 * V8 heap snapshots (`npm run soak -- --snapshots` writes them): the nodes of each, counted by kind and
 * constructor (for objects and closures, their name), and the groups whose count changed, largest
 * growth first, with the bytes they hold themselves. Objects a leak keeps pile up here, under the
 * constructor of what leaks, even when the heap's total hides them.
 */
import { readFileSync } from "node:fs"
import { parseArgs } from "node:util"

const { positionals, values: flags } = parseArgs({
  allowPositionals: true,
  options: { top: { type: "string", default: "20" } }
})
const [beforeFile, afterFile] = positionals
if (beforeFile === undefined || afterFile === undefined) {
  console.error("usage: node bench/heapDiff.ts <before.heapsnapshot> <after.heapsnapshot> [--top 20]")
  process.exit(2)
}

interface Group {
  count: number
  bytes: number
}

/** a snapshot's nodes by `kind:name` (the name only where it says what made the node) */
const groups = (file: string): Map<string, Group> => {
  const snapshot: {
    readonly snapshot: { readonly meta: { readonly node_fields: Array<string>; readonly node_types: [Array<string>] } }
    readonly nodes: Array<number>
    readonly strings: Array<string>
  } = JSON.parse(readFileSync(file, "utf8"))
  const fields = snapshot.snapshot.meta.node_fields
  const kinds = snapshot.snapshot.meta.node_types[0]
  const [kindAt, nameAt, bytesAt] = ["type", "name", "self_size"].map((f) => fields.indexOf(f))
  const named = new Set(["object", "closure", "native", "hidden", "array"])
  const out = new Map<string, Group>()
  for (let i = 0; i < snapshot.nodes.length; i += fields.length) {
    const kind = kinds[snapshot.nodes[i + kindAt]]
    const key = named.has(kind) ? `${kind}:${snapshot.strings[snapshot.nodes[i + nameAt]].slice(0, 80)}` : kind
    const group = out.get(key) ?? { count: 0, bytes: 0 }
    group.count++
    group.bytes += snapshot.nodes[i + bytesAt]
    out.set(key, group)
  }
  return out
}

const before = groups(beforeFile)
const after = groups(afterFile)
const total = (g: Map<string, Group>) => Array.from(g.values()).reduce((sum, x) => ({ count: sum.count + x.count, bytes: sum.bytes + x.bytes }), { count: 0, bytes: 0 })
const [b, a] = [total(before), total(after)]
console.log(`nodes ${b.count} -> ${a.count} (${a.count - b.count >= 0 ? "+" : ""}${a.count - b.count}), bytes ${b.bytes} -> ${a.bytes}`)
const changed = Array.from(new Set([...before.keys(), ...after.keys()]), (key) => {
  const x = before.get(key) ?? { count: 0, bytes: 0 }
  const y = after.get(key) ?? { count: 0, bytes: 0 }
  return { key, before: x.count, after: y.count, bytes: y.bytes - x.bytes }
}).filter((row) => row.before !== row.after).sort((x, y) => (y.after - y.before) - (x.after - x.before))
console.log(`${changed.length} of ${new Set([...before.keys(), ...after.keys()]).size} groups changed their count`)
console.log("count change | before | after | bytes change | kind:constructor")
for (const row of changed.slice(0, Number(flags.top))) {
  console.log(`${row.after - row.before} | ${row.before} | ${row.after} | ${row.bytes} | ${row.key}`)
}
