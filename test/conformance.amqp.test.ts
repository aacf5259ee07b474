import { Layer, Schedule } from "effect"
import { AmqpBroker } from "effect-mesh"
import { amqpUrl } from "./fixtures/amqpUrl.ts"
import { amqpSuite } from "./fixtures/amqpSuite.ts"
import { brokerContract } from "./fixtures/brokerContract.ts"
import { brokerSuite } from "./fixtures/brokerSuite.ts"
import { clientFaultSuite } from "./fixtures/clientFaultSuite.ts"
import { deadLetterSuite } from "./fixtures/deadLetterSuite.ts"
import { identitySuite } from "./fixtures/identitySuite.ts"
import { sealedSuite } from "./fixtures/sealedSuite.ts"
import { singleInstanceSuite } from "./fixtures/singleInstanceSuite.ts"
import { wireFormatSuite } from "./fixtures/wireFormatSuite.ts"

// suspended: the URL is known only once the global setup has started RabbitMQ
const layer = Layer.suspend(() => AmqpBroker.layer({ url: amqpUrl(), reconnect: Schedule.spaced("250 millis") }))

brokerContract("AmqpBroker", layer)
brokerSuite("AmqpBroker", layer)
deadLetterSuite("AmqpBroker", layer)
amqpSuite("AmqpBroker", layer)
singleInstanceSuite("AmqpBroker", layer)
clientFaultSuite("AmqpBroker", layer)
// RabbitMQ verifies the user the URL logs in as (the tests' node: guest)
identitySuite("AmqpBroker", layer, "guest")
wireFormatSuite("AmqpBroker", layer)
sealedSuite("AmqpBroker", layer)
