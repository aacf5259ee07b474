/**
 * A database per call on the embedded broker and a real PostgreSQL (`scripts/postgres.sh`).
 */
import { afterAll } from "@effect/vitest"
import { MemoryBroker } from "effect-mesh"
import { database } from "./fixtures/postgres.ts"
import { sqlSuite } from "./fixtures/sqlSuite.ts"

const db = database("sql_memory")
afterAll(() => db.release())

sqlSuite("MemoryBroker", MemoryBroker.layer, () => db.layer)
