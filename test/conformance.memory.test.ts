import { MemoryBroker } from "effect-mesh"
import { brokerSuite } from "./fixtures/brokerSuite.ts"

brokerSuite("MemoryBroker", MemoryBroker.layer)
