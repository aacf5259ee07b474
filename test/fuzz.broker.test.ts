/**
 * Fuzzed messages through real services, over both brokers: test/fixtures/fuzzSuite.ts.
 */
import { Layer, Schedule } from "effect"
import { AmqpBroker, MemoryBroker } from "effect-mesh"
import { amqpUrl } from "./fixtures/amqpUrl.ts"
import { fuzzSuite } from "./fixtures/fuzzSuite.ts"

fuzzSuite("MemoryBroker", MemoryBroker.layer)
// calls through the queue, as on RabbitMQ
fuzzSuite("MemoryBroker (queued calls)", MemoryBroker.layerWith({ directCalls: false }))
// suspended: the URL is known only once the global setup has started RabbitMQ
fuzzSuite("AmqpBroker", Layer.suspend(() => AmqpBroker.layer({ url: amqpUrl(), reconnect: Schedule.spaced("250 millis") })))
