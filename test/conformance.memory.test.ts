import { MemoryBroker } from "effect-mesh"
import { amqpSuite } from "./fixtures/amqpSuite.ts"
import { brokerContract } from "./fixtures/brokerContract.ts"
import { brokerSuite } from "./fixtures/brokerSuite.ts"
import { clientFaultSuite } from "./fixtures/clientFaultSuite.ts"
import { deadLetterSuite } from "./fixtures/deadLetterSuite.ts"
import { identitySuite } from "./fixtures/identitySuite.ts"
import { sealedSuite } from "./fixtures/sealedSuite.ts"
import { singleInstanceSuite } from "./fixtures/singleInstanceSuite.ts"
import { wireFormatSuite } from "./fixtures/wireFormatSuite.ts"

brokerContract("MemoryBroker", MemoryBroker.layer)
// calls between clients and services of one process go direct (the default) ...
brokerSuite("MemoryBroker", MemoryBroker.layer)
// ... or through the queue, as on RabbitMQ
brokerSuite("MemoryBroker (queued calls)", MemoryBroker.layerWith({ directCalls: false }), { rpcOnly: true })
deadLetterSuite("MemoryBroker", MemoryBroker.layer)
amqpSuite("MemoryBroker", MemoryBroker.layer)
singleInstanceSuite("MemoryBroker", MemoryBroker.layer)
clientFaultSuite("MemoryBroker", MemoryBroker.layer)
// no sender is verified in one process unless the broker is given an identity, which it then stamps
identitySuite("MemoryBroker", MemoryBroker.layer, undefined)
identitySuite("MemoryBroker (identity)", MemoryBroker.layerWith({ identity: "mesh-local" }), "mesh-local")
identitySuite("MemoryBroker (identity, queued calls)", MemoryBroker.layerWith({ identity: "mesh-local", directCalls: false }), "mesh-local")
wireFormatSuite("MemoryBroker", MemoryBroker.layer)
wireFormatSuite("MemoryBroker (queued calls)", MemoryBroker.layerWith({ directCalls: false }))
sealedSuite("MemoryBroker", MemoryBroker.layer)
sealedSuite("MemoryBroker (queued calls)", MemoryBroker.layerWith({ directCalls: false }))
