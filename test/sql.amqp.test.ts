/**
 * A database per call on RabbitMQ and a real PostgreSQL (`scripts/postgres.sh`).
 */
import { afterAll } from "@effect/vitest"
import { Layer, Schedule } from "effect"
import { AmqpBroker } from "effect-mesh"
import { amqpUrl } from "./fixtures/amqpUrl.ts"
import { database } from "./fixtures/postgres.ts"
import { sqlSuite } from "./fixtures/sqlSuite.ts"

const db = database("sql_amqp")
afterAll(() => db.release())

// suspended: the URL is known only once the global setup has started RabbitMQ
sqlSuite("AmqpBroker", Layer.suspend(() => AmqpBroker.layer({ url: amqpUrl(), reconnect: Schedule.spaced("250 millis") })), () => db.layer)
