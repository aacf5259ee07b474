/**
 * Every ```ts block of README.md compiles as written, imports included, under the project's own
 * tsconfig.json (strict, `noUnusedLocals`, `exactOptionalPropertyTypes`...).
 *
 * Each block becomes a module of its own in a fresh folder under `.scratch-readme/` (git-ignored),
 * type-checked in one `tsc --noEmit` run with a generated tsconfig extending the root one. A block
 * imports `effect-mesh` as a user's code does (it resolves to `src/` under the `effect-mesh-source`
 * condition of the root tsconfig).
 *
 * The convention for blocks that belong together: an HTML comment right before a block names its
 * file, and other blocks import from that file as they would in a project of their own:
 *
 *     <!-- readme: contract.ts -->
 *     ```ts
 *     export const Calculator = ServiceContract.make("calculator", CalculatorRpcs)
 *     ```
 *
 *     ```ts
 *     import { Calculator } from "./contract.ts"
 *     ```
 *
 * The comment does not show on GitHub; the import does, so a reader sees where a name comes from. A
 * block without a name is `block-<its line in README>.ts`, and nothing may import it. A ```ts block
 * that is not meant to compile does not exist: show such text as ```text.
 */
import { assert, describe, it } from "@effect/vitest"
import { spawnSync } from "node:child_process"
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll } from "vitest"

const root = fileURLToPath(new URL("..", import.meta.url))

interface Block {
  /** the file the block becomes */
  readonly file: string
  /** the README line of the block's first line of code (1-based) */
  readonly line: number
  readonly code: string
}

const blockName = /^<!--\s*readme:\s*([\w.-]+\.ts)\s*-->$/

/** the ```ts blocks of a markdown text, named by the `<!-- readme: name.ts -->` right before them */
const blocksOf = (markdown: string): ReadonlyArray<Block> => {
  const lines = markdown.split("\n")
  const blocks: Array<Block> = []
  for (let i = 0; i < lines.length; i++) {
    if (lines[i].trim() !== "```ts") continue
    const named = i > 0 ? blockName.exec(lines[i - 1].trim()) : null
    const start = i + 1
    let end = start
    while (end < lines.length && lines[end].trim() !== "```") end++
    blocks.push({ file: named === null ? `block-${start + 1}.ts` : named[1], line: start + 1, code: lines.slice(start, end).join("\n") + "\n" })
    i = end
  }
  return blocks
}

const readme = readFileSync(join(root, "README.md"), "utf8")
const blocks = blocksOf(readme)
const dir = join(root, ".scratch-readme", crypto.randomUUID().slice(0, 8))

/** the compiler's diagnostics, by file: `file.ts(line,col): error TS...` and the lines that go on with it */
const compile = (): ReadonlyMap<string, ReadonlyArray<string>> => {
  mkdirSync(dir, { recursive: true })
  for (const block of blocks) writeFileSync(join(dir, block.file), block.code)
  writeFileSync(
    join(dir, "tsconfig.json"),
    JSON.stringify({ extends: "../../tsconfig.json", compilerOptions: { noEmit: true }, include: ["*.ts"] }, null, 2)
  )
  const result = spawnSync(join(root, "node_modules", ".bin", "tsc"), ["-p", join(dir, "tsconfig.json"), "--pretty", "false"], {
    cwd: dir,
    encoding: "utf8"
  })
  if (result.error !== undefined) throw result.error
  const byFile = new Map<string, Array<string>>()
  let current: Array<string> | undefined
  for (const line of result.stdout.split("\n")) {
    const diagnostic = /^(.+?\.ts)\((\d+),(\d+)\): (.*)$/.exec(line)
    if (diagnostic !== null) {
      const file = diagnostic[1]
      const block = blocks.find((b) => b.file === file)
      const where = block === undefined ? diagnostic[1] : `README.md:${block.line + Number(diagnostic[2]) - 1}:${diagnostic[3]}`
      current = byFile.get(file) ?? []
      byFile.set(file, current)
      current.push(`${where} ${diagnostic[4]}`)
    } else if (line.trim() !== "" && current !== undefined) {
      current.push(`  ${line.trim()}`)
    }
  }
  if (result.status !== 0 && byFile.size === 0) {
    byFile.set("tsc", [`tsc exited with ${result.status}: ${result.stdout}${result.stderr}`])
  }
  return byFile
}

describe("README.md", () => {
  const diagnostics = compile()
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  it("has ts blocks, each with a file name of its own", () => {
    assert.isAbove(blocks.length, 0)
    const names = blocks.map((b) => b.file)
    assert.deepStrictEqual(names.filter((name, i) => names.indexOf(name) !== i), [], "two blocks name the same file")
  })

  it.each(blocks.map((b) => [`${b.file} (README.md:${b.line})`, b] as const))("%s compiles as written", (_, block) => {
    assert.deepStrictEqual(diagnostics.get(block.file) ?? [], [])
  })

  it("leaves no compiler error outside the blocks", () => {
    const files = new Set(blocks.map((b) => b.file))
    assert.deepStrictEqual([...diagnostics].filter(([file]) => !files.has(file)), [])
  })
})
