import { Config, Redacted } from "effect"
import type { Layer } from "effect"
import { AmqpBroker } from "effect-mesh"
import type { Broker, BrokerError } from "effect-mesh/Broker"
import { describe, expect, it } from "tstyche"

describe("AmqpBroker", () => {
  it("takes one URL or a cluster's nodes: a list (plain or redacted), or URLs separated by commas", () => {
    expect(AmqpBroker.layer({ url: "amqp://rabbit-1" })).type.toBe<Layer.Layer<Broker, BrokerError>>()
    expect(AmqpBroker.layer({ url: "amqp://rabbit-1,amqp://rabbit-2" })).type.toBe<Layer.Layer<Broker, BrokerError>>()
    expect(AmqpBroker.layer({ url: ["amqp://rabbit-1", Redacted.make("amqp://u:p@rabbit-2")] })).type.toBe<
      Layer.Layer<Broker, BrokerError>
    >()
    // a list needs at least one node
    expect(AmqpBroker.layer).type.not.toBeCallableWith({ url: [] as const })
    expect(AmqpBroker.layer).type.not.toBeCallableWith({ url: 5672 })
  })

  it("reads the nodes from AMQP_URLS or AMQP_URL, redacted", () => {
    expect(AmqpBroker.urlConfig).type.toBe<Config.Config<Redacted.Redacted<string>>>()
    expect(Config.option(AmqpBroker.urlConfig)).type.not.toBe<Config.Config<string>>()
  })
})
