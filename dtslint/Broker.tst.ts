import { Effect } from "effect"
import type { Scope } from "effect"
import type {
  Broker,
  BrokerError,
  Consumer,
  Delivery,
  ExchangeType,
  Incoming,
  LocalBody,
  Message,
  QueueInfo,
  QueueType,
  ReplyQueue
} from "effect-mesh/Broker"
import { bytesOf } from "effect-mesh/Broker"
import { describe, expect, it } from "tstyche"

declare const broker: Broker["Service"]

describe("Broker", () => {
  it("binds to headers exchanges with arguments", () => {
    expect<"headers">().type.toBeAssignableTo<ExchangeType>()
    expect(broker.bindQueue("q", "x", "", { "x-match": "any", kind: "invoice", urgent: true })).type.toBe<Effect.Effect<void, BrokerError>>()
    expect(broker.bindQueue).type.not.toBeCallableWith("q", "x", "", { kind: { nested: true } })
  })

  it("opens a reply queue with or without a take", () => {
    expect(broker.replyQueue()).type.toBe<Effect.Effect<ReplyQueue, BrokerError, Scope.Scope>>()
    expect(broker.replyQueue({ take: (incoming: Incoming) => incoming._tag === "Reply" })).type.toBe<
      Effect.Effect<ReplyQueue, BrokerError, Scope.Scope>
    >()
  })

  it("takes deliveries with a plain function, not an effect", () => {
    expect(broker.consume("q", { prefetch: 1, take: (delivery: Delivery) => delivery.redelivered })).type.toBe<
      Effect.Effect<Consumer, BrokerError, Scope.Scope>
    >()
    expect(broker.consume).type.not.toBeCallableWith("q", { prefetch: 1, take: (_: Delivery) => Effect.succeed(true) })
    expect(broker.replyQueue).type.not.toBeCallableWith({ take: (_: Incoming) => Effect.void })
  })

  it("says when a reply queue is lost: the only incoming without a message", () => {
    expect<Incoming["_tag"]>().type.toBe<"Reply" | "Returned" | "Lost">()
    expect<Extract<Incoming, { readonly _tag: "Lost" }>>().type.toBe<{ readonly _tag: "Lost" }>()
    const message = (incoming: Incoming): Message | undefined => incoming._tag === "Lost" ? undefined : incoming.message
    expect(message).type.toBe<(incoming: Incoming) => Message | undefined>()
  })

  it("declares a queue of a type, classic or quorum", () => {
    expect<QueueType>().type.toBe<"classic" | "quorum">()
    expect(broker.declareQueue("q", { type: "quorum", deliveryLimit: 5 })).type.toBe<Effect.Effect<string, BrokerError>>()
    expect(broker.declareQueue).type.not.toBeCallableWith("q", { type: "stream" })
  })

  it("checks a queue", () => {
    expect(broker.checkQueue("q")).type.toBe<Effect.Effect<QueueInfo, BrokerError>>()
  })

  it("publishes bytes, or a value with the way to its bytes; a message may carry a value", () => {
    const body: LocalBody = { _tag: "LocalBody", value: { n: 1 }, bytes: () => new Uint8Array() }
    expect(broker.publish("x", "k", body)).type.toBe<Effect.Effect<void, BrokerError>>()
    expect(broker.publish("x", "k", new Uint8Array())).type.toBe<Effect.Effect<void, BrokerError>>()
    expect(broker.publish).type.not.toBeCallableWith("x", "k", { _tag: "LocalBody", value: 1 })
    expect(bytesOf(body)).type.toBe<Uint8Array>()
    expect<Message["local"]>().type.toBe<unknown>()
  })
})
