#!/usr/bin/env node
/**
 * The `mesh` executable: runs `Cli.main` as the process's main program. SIGINT / SIGTERM interrupt
 * it; `Cli.teardown` turns the result into the exit code.
 *
 * @since 0.1.0
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Cli from "./Cli.ts"

NodeRuntime.runMain(Cli.main, { disableErrorReporting: true, teardown: Cli.teardown })
