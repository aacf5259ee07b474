/**
 * effect-mesh as a user installs it. `npm pack` (which builds `dist/` on `prepack`), then a project of
 * its own outside this repository installs the tarball together with the newest `effect` and
 * `@effect/platform-node` the peer ranges allow, `@types/node` and `node@22.19.0` from npm, and:
 * - publint and arethetypeswrong pass on the tarball, which ships `dist/`, the sources its maps point
 *   to, README and LICENSE, and nothing else;
 * - exactly one copy of `effect` (and of `@effect/platform-node`) is installed;
 * - the consumer app in `fixtures/consumer/` type-checks with `strict`, `noUncheckedIndexedAccess` and
 *   `skipLibCheck: false`, under `moduleResolution` `nodenext` and `bundler`, with TypeScript 7 (this
 *   repository's) and the newest TypeScript 5;
 * - it runs, its service and client composed in one Layer (`Mesh.layerConfig`), on Node 22.19.0 (the
 *   lowest `engines` allows) and on the Node 24 of this repository, on the embedded broker and on the
 *   test RabbitMQ;
 * - the installed `mesh` bin (run by its shebang, on each Node) prints its help, and `mesh call` and
 *   the HTTP gateway answer from a `mesh run --port 0` of the consumer's service.
 *
 * The consumer's processes run without this repository's `NODE_OPTIONS`: its development condition
 * (`effect-mesh-source`) would point them at the shipped `.ts` sources.
 */
import { assert, beforeAll, describe, it } from "@effect/vitest"
import { type ChildProcess, spawn, spawnSync, type SpawnSyncReturns } from "node:child_process"
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync
} from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { amqpUrl } from "./fixtures/amqpUrl.ts"

const root = fileURLToPath(new URL("..", import.meta.url))
const manifest = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as {
  readonly version: string
  readonly engines: { readonly node: string }
  readonly peerDependencies: Readonly<Record<string, string>>
}
const bins = join(root, "node_modules", ".bin")
/** `engines` promises Node 22 from this version, and Node 24: the test runs on both */
const lowestNode22 = "22.19.0"

/** the environment of the consumer's processes: this repository's npm and node settings left out */
const cleanEnv = (extra: Readonly<Record<string, string>> = {}): NodeJS.ProcessEnv => {
  const env: NodeJS.ProcessEnv = {}
  for (const [key, value] of Object.entries(process.env)) {
    if (key === "NODE_OPTIONS" || key === "AMQP_URL" || key.toLowerCase().startsWith("npm_")) continue
    env[key] = value
  }
  return { ...env, ...extra }
}

const run = (
  command: string,
  args: ReadonlyArray<string>,
  options: { readonly cwd: string; readonly env?: NodeJS.ProcessEnv; readonly timeout?: number }
): SpawnSyncReturns<string> => {
  const result = spawnSync(command, args, {
    cwd: options.cwd,
    env: options.env ?? cleanEnv(),
    encoding: "utf8",
    timeout: options.timeout ?? 120_000
  })
  if (result.error !== undefined) throw result.error
  return result
}

/** runs a command that must succeed; its stdout */
const ok = (command: string, args: ReadonlyArray<string>, options: Parameters<typeof run>[2]): string => {
  const result = run(command, args, options)
  assert.strictEqual(
    result.status,
    0,
    `${command} ${args.join(" ")} exited ${result.status}\n${result.stdout}\n${result.stderr}`
  )
  return result.stdout
}

/** the newest published version that a range allows */
const newest = (name: string, range: string): string => {
  const out = ok("npm", ["view", `${name}@${range}`, "version", "--json"], { cwd: root })
  const versions: unknown = JSON.parse(out)
  const list = Array.isArray(versions) ? versions.map(String) : [String(versions)]
  const last = list.at(-1)
  if (last === undefined) throw new Error(`no version of ${name} matches ${range}`)
  return last
}

/** every installed copy of a package under a node_modules tree: the versions */
const copies = (dir: string, name: string): Array<string> => {
  const found: Array<string> = []
  const walk = (modules: string) => {
    if (!existsSync(modules)) return
    for (const entry of readdirSync(modules)) {
      const path = join(modules, entry)
      if (entry.startsWith(".") || !statSync(path).isDirectory()) continue
      if (entry.startsWith("@")) {
        for (const scoped of readdirSync(path)) visit(join(path, scoped), `${entry}/${scoped}`)
      } else visit(path, entry)
    }
  }
  const visit = (path: string, packageName: string) => {
    const json = join(path, "package.json")
    if (packageName === name && existsSync(json)) {
      found.push(String((JSON.parse(readFileSync(json, "utf8")) as { version: unknown }).version))
    }
    walk(join(path, "node_modules"))
  }
  walk(join(dir, "node_modules"))
  return found
}

const work = mkdtempSync(join(tmpdir(), "effect-mesh-consumer-"))
const app = join(work, "app")
let tarball = ""
const versions = { effect: "", platform: "" }
/** per Node major: a folder whose `node` is that Node, put first on PATH to run the `mesh` shebang */
const nodes: Array<{ readonly major: string; readonly binary: string; readonly pathDir: string }> = []

beforeAll(() => {
  const packed = JSON.parse(ok("npm", ["pack", "--json", "--pack-destination", work], { cwd: root, env: cleanEnv(), timeout: 180_000 })) as ReadonlyArray<{ readonly filename: string }>
  tarball = join(work, packed[0]?.filename ?? "")
  versions.effect = newest("effect", manifest.peerDependencies["effect"] ?? "")
  versions.platform = newest("@effect/platform-node", manifest.peerDependencies["@effect/platform-node"] ?? "")

  mkdirSync(app)
  cpSync(join(root, "test", "fixtures", "consumer"), app, { recursive: true })
  writeFileSync(
    join(app, "package.json"),
    JSON.stringify({ name: "consumer", private: true, type: "module", allowScripts: { node: true } }, null, 2)
  )
  ok("npm", [
    "install",
    "--no-audit",
    "--no-fund",
    tarball,
    `effect@${versions.effect}`,
    `@effect/platform-node@${versions.platform}`,
    "@types/node@^24",
    "typescript@^5",
    `node@${lowestNode22}`
  ], { cwd: app, timeout: 300_000 })

  for (const [major, binary] of [["22", join(app, "node_modules", "node", "bin", "node")], ["24", join(root, "node_modules", "node", "bin", "node")]] as const) {
    const pathDir = join(work, `node${major}`)
    mkdirSync(pathDir)
    symlinkSync(binary, join(pathDir, "node"))
    nodes.push({ major, binary, pathDir })
  }
  return () => rmSync(work, { recursive: true, force: true })
}, 600_000)

describe("the npm package", () => {
  it("ships dist/, its sources, README and LICENSE, and passes publint and arethetypeswrong", () => {
    const files = ok("tar", ["-tzf", tarball], { cwd: work }).split("\n").filter((line) => line !== "")
      .map((line) => line.replace(/^package\//, ""))
    for (const file of ["package.json", "README.md", "LICENSE", "dist/index.js", "dist/index.d.ts", "dist/index.d.ts.map", "dist/index.js.map", "dist/bin.js", "src/index.ts"]) {
      assert.include(files, file)
    }
    const strays = files.filter((file) => !/^(dist|src)\//.test(file) && !["package.json", "README.md", "LICENSE"].includes(file))
    assert.deepStrictEqual(strays, [])
    assert.isFalse(files.some((file) => file.startsWith("dist/") && file.endsWith(".ts") && !file.endsWith(".d.ts")))

    ok(join(bins, "publint"), ["--strict", tarball], { cwd: root })
    const entrypoints = readdirSync(join(root, "src")).filter((file) => /^[A-Z]\w*\.ts$/.test(file))
      .map((file) => `./${file.replace(/\.ts$/, "")}`)
    assert.isAbove(entrypoints.length, 20)
    ok(join(bins, "attw"), ["--profile", "esm-only", "--include-entrypoints", ...entrypoints, "--", tarball], { cwd: root })
  })

  it("installs beside the newest effect the peer range allows: one copy of effect and of @effect/platform-node", () => {
    assert.deepStrictEqual(copies(app, "effect"), [versions.effect])
    assert.deepStrictEqual(copies(app, "@effect/platform-node"), [versions.platform])
    assert.deepStrictEqual(copies(app, "effect-mesh"), [manifest.version])
    // the internal modules stay closed to consumers
    const blocked = run(nodes[1]?.binary ?? "", ["--input-type=module", "-e", "await import('effect-mesh/internal/wire')"], { cwd: app })
    assert.match(blocked.stderr, /ERR_PACKAGE_PATH_NOT_EXPORTED/)
  })

  it("a strict consumer type-checks with 0 errors under nodenext and bundler resolution, with TypeScript 7 and 5", () => {
    // this repository's TypeScript 7, and the newest TypeScript 5 that the consumer installed
    for (const tsc of [join(bins, "tsc"), join(app, "node_modules", ".bin", "tsc")]) {
      for (const config of ["tsconfig.nodenext.json", "tsconfig.bundler.json"]) {
        const result = run(tsc, ["-p", config], { cwd: app })
        assert.strictEqual(result.status, 0, `${tsc} -p ${config}:\n${result.stdout}${result.stderr}`)
      }
    }
    assert.match(ok(join(app, "node_modules", ".bin", "tsc"), ["--version"], { cwd: app }), /^Version 5\./)
    // four whole-program checks of the package (each up to the helper's 120 s) on a machine the other
    // test files share: 120 s in all was too little once the package grew (131 s seen under load)
  }, 480_000)

  it("runs on Node 22.19.0 and Node 24, on the embedded broker and on RabbitMQ", () => {
    assert.strictEqual(manifest.engines.node, `^${lowestNode22} || ^24.0.0`)
    for (const { binary, major } of nodes) {
      for (const amqp of [undefined, amqpUrl()]) {
        const out = ok(binary, ["app.ts"], { cwd: app, env: cleanEnv(amqp === undefined ? {} : { AMQP_URL: amqp }) })
        const seen = JSON.parse(out.trim().split("\n").at(-1) ?? "") as Record<string, unknown>
        assert.strictEqual(String(seen["node"]).split(".")[0], major)
        if (major === "22") assert.strictEqual(seen["node"], lowestNode22)
        assert.match(String(seen["broker"]), amqp === undefined ? /^memory/ : /^amqp /)
        assert.deepStrictEqual(seen["order"], { item: "tea", quantity: 4, total: 10 })
        assert.strictEqual(seen["refused"], "OutOfStock: 10 left")
        assert.deepStrictEqual(seen["countdown"], [3, 2, 1, 0])
      }
    }
  }, 180_000)

  it("the installed mesh bin: --help, and mesh call and HTTP against mesh run --port of the consumer's service, on each Node", async () => {
    const mesh = join(app, "node_modules", ".bin", "mesh")
    for (const { major, pathDir } of nodes) {
      const env = cleanEnv({ PATH: `${pathDir}:${process.env["PATH"] ?? ""}`, AMQP_URL: amqpUrl() })
      // the shebang (`#!/usr/bin/env node`) finds this Node
      assert.match(ok("node", ["--version"], { cwd: app, env }), new RegExp(`^v${major}\\.`))
      const help = ok(mesh, ["--help"], { cwd: app, env })
      assert.match(help, /SUBCOMMANDS/)
      assert.match(ok(mesh, ["--version"], { cwd: app, env }), new RegExp(manifest.version.replaceAll(".", "\\.")))

      const service = spawn(mesh, ["run", "service.ts", "--port", "0"], { cwd: app, env, stdio: ["ignore", "pipe", "pipe"] })
      const output = collect(service)
      try {
        await waitFor(output, /consumer-shop: instance \S+ started/, 60_000)
        const call = run(mesh, ["call", "consumer-shop.order", "{\"item\":\"tea\",\"quantity\":2}"], { cwd: app, env })
        assert.deepStrictEqual({ status: call.status, stdout: call.stdout.trim() }, {
          status: 0,
          stdout: "{\"item\":\"tea\",\"quantity\":2,\"total\":5}"
        })
        const refused = run(mesh, ["call", "consumer-shop.order", "{\"item\":\"tea\",\"quantity\":50}"], { cwd: app, env })
        assert.deepStrictEqual({ status: refused.status, stderr: refused.stderr.trim() }, {
          status: 1,
          stderr: "mesh: OutOfStock {\"available\":10}"
        })
        const stream = run(mesh, ["call", "consumer-shop.countdown", "{\"from\":2}"], { cwd: app, env })
        assert.deepStrictEqual(stream.stdout.trim().split("\n"), ["2", "1", "0"])

        await waitFor(output, /mesh: HTTP on http:\/\/\S+/, 10_000)
        const base = /mesh: HTTP on (http:\/\/\S+)/.exec(output.text())?.[1] ?? ""
        const response = await fetch(`${base}/rpc/consumer-shop/order`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ item: "tea", quantity: 3 })
        })
        assert.deepStrictEqual(
          { status: response.status, body: await response.json() },
          { status: 200, body: { item: "tea", quantity: 3, total: 7.5 } }
        )
      } finally {
        service.kill("SIGTERM")
      }
      assert.strictEqual(await exited(service), 0, output.text())
    }
  }, 240_000)
})

/** what a process printed so far, on stdout and stderr */
const collect = (child: ChildProcess) => {
  let text = ""
  child.stdout?.on("data", (chunk: Buffer) => (text += chunk.toString("utf8")))
  child.stderr?.on("data", (chunk: Buffer) => (text += chunk.toString("utf8")))
  return { text: () => text, child }
}

const waitFor = (output: ReturnType<typeof collect>, pattern: RegExp, millis: number): Promise<void> =>
  new Promise((resolve, reject) => {
    const started = Date.now()
    const poll = setInterval(() => {
      if (pattern.test(output.text())) {
        clearInterval(poll)
        resolve()
      } else if (Date.now() - started > millis || output.child.exitCode !== null) {
        clearInterval(poll)
        reject(new Error(`no line matching ${pattern} within ${millis} ms; output:\n${output.text()}`))
      }
    }, 50)
  })

const exited = (child: ChildProcess): Promise<number | null> =>
  child.exitCode !== null
    ? Promise.resolve(child.exitCode)
    : new Promise((resolve) => child.once("exit", (code) => resolve(code)))
