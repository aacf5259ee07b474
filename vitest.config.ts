import { defaultExclude, defineConfig } from "vitest/config"

// "effect-mesh" resolves to src/ under this condition (package.json exports), in the test files and in
// the programs the tests start
const conditions = ["effect-mesh-source"]

/** the programs the tests start inherit NODE_OPTIONS (npm scripts set it from .npmrc; a bare `vitest` does not) */
const nodeOptions = (given: string): string =>
  [given, ...conditions.filter((c) => !given.includes(`--conditions=${c}`)).map((c) => `--conditions=${c}`)]
    .filter((option) => option !== "").join(" ")

export default defineConfig({
  resolve: { conditions: [...conditions, "module", "node", "development|production"] },
  ssr: { resolve: { conditions: [...conditions, "module", "node", "development|production"] } },
  test: {
    include: ["test/**/*.test.ts"],
    // minutes of node restarts: `npm run test:cluster` (vitest.cluster.config.ts)
    exclude: [...defaultExclude, "test/clusterRestarts.test.ts"],
    globalSetup: ["test/globalSetup.ts"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    env: { NODE_OPTIONS: nodeOptions(process.env["NODE_OPTIONS"] ?? "") }
  }
})
