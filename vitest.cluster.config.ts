import { defaultExclude, defineConfig } from "vitest/config"
import base from "./vitest.config.ts"

// `npm run test:cluster`: the tests on the checkout's three-node RabbitMQ cluster, one file at a time
// (they take its nodes away), the rolling restart included
export default defineConfig({
  ...base,
  test: {
    ...base.test,
    include: ["test/cluster*.test.ts"],
    exclude: defaultExclude,
    fileParallelism: false
  }
})
