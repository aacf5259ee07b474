/**
 * Fuzzed inputs, decoder by decoder: every function that reads bytes or headers from outside the
 * process (a request, a command, a reply, a control message, an event, Nameko's wire, the call
 * context and trace headers, an SSE stream, a config file) is given random and nearly-valid input. None
 * throws; each answers with its typed outcome. Seed and count: test/fixtures/fuzz.ts.
 */
import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Cause, Effect, Exit, FileSystem, Option, Schedule, Stream } from "effect"
import { Sse as SseEncoding } from "effect/encoding"
import fc from "fast-check"
import type { Rpc } from "effect/rpc"
import { Broker, CallContext, MeshConfig, MemoryBroker } from "effect-mesh"
import type { Delivery, HeaderValue } from "effect-mesh/Broker"
import * as Admission from "../src/internal/admission.ts"
import * as Codecs from "../src/internal/codecs.ts"
import * as edge from "../src/internal/edge.ts"
import * as events from "../src/internal/events.ts"
import * as Metrics from "../src/internal/metrics.ts"
import * as namekoWire from "../src/internal/namekoWire.ts"
import * as Settler from "../src/internal/settler.ts"
import * as wire from "../src/internal/wire.ts"
import { bytes, headerValue, jsonText, parameters } from "./fixtures/fuzz.ts"
import { contracts } from "./fixtures/services.ts"

const math = contracts("fuzz").math
const rpcs = Array.from(math.group.requests.values()) as Array<Rpc.AnyWithProps>
const methods = [...rpcs.map((rpc) => rpc._tag), "nothing", "", "__proto__", "constructor"]

/** text close to what the mesh's request bodies are */
const nearPayload = jsonText(fc.oneof(
  fc.record({ a: fc.oneof(fc.double(), fc.string()), b: fc.oneof(fc.double(), fc.constant(null)) }, { requiredKeys: [] }),
  fc.record({ from: fc.oneof(fc.integer(), fc.double()), millis: fc.double(), message: fc.string(), count: fc.integer() }, {
    requiredKeys: []
  }),
  fc.jsonValue({ maxDepth: 3 })
))

const hex = (maxLength: number) => fc.string({ unit: fc.constantFrom(..."0123456789abcdefX-"), maxLength })

const contextHeader = jsonText(fc.record({
  deadline: fc.oneof(fc.double(), fc.integer(), fc.string()),
  correlationId: fc.oneof(fc.string(), fc.integer()),
  callIdStack: fc.oneof(fc.array(fc.string(), { maxLength: 40 }), fc.string()),
  userId: fc.oneof(fc.string(), fc.constant(null)),
  entries: fc.oneof(fc.dictionary(fc.string(), fc.string()), fc.dictionary(fc.string(), fc.jsonValue()))
}, { requiredKeys: [] }).map((v) => v as unknown))

const headers: fc.Arbitrary<Record<string, HeaderValue> | undefined> = fc.option(
  fc.record({
    [CallContext.headerNames.context]: fc.oneof(contextHeader, headerValue),
    [wire.header.traceparent]: fc.oneof(
      fc.string({ maxLength: 60 }),
      fc.tuple(hex(34), hex(18), fc.string({ maxLength: 3 }))
        .map(([t, s, f]) => `00-${t}-${s}-${f}`)
    ),
    [events.header.command]: fc.oneof(fc.boolean(), fc.constantFrom("true", "false", "1"), headerValue),
    [events.header.retries]: headerValue,
    [events.header.eventId]: headerValue,
    [events.header.firstFailure]: headerValue
  }, { requiredKeys: [] }).chain((known) =>
    fc.dictionary(fc.string({ maxLength: 12 }), headerValue, { maxKeys: 4 }).map((extra) => ({ ...extra, ...known }))
  ),
  { nil: undefined }
)

const properties = fc.record({
  contentType: fc.option(fc.constantFrom("application/json", "text/plain", "", "application/json; charset=utf-8"), { nil: undefined }),
  correlationId: fc.option(fc.string({ maxLength: 20 }), { nil: undefined }),
  replyTo: fc.option(fc.string({ maxLength: 20 }), { nil: undefined }),
  messageId: fc.option(fc.string({ maxLength: 20 }), { nil: undefined }),
  type: fc.option(fc.constantFrom(...methods), { nil: undefined }),
  userId: fc.option(fc.string({ maxLength: 10 }), { nil: undefined }),
  headers
})

const delivery = (body: Uint8Array, props: Delivery["properties"], redelivered = false): Delivery => ({
  body,
  exchange: "",
  routingKey: "fuzz",
  properties: props,
  redelivered,
  deliveryCount: 0,
  ack: Effect.void,
  nack: () => Effect.void
})

describe("fuzzed decoders", () => {
  it("requests and commands: the admission step answers every delivery with one of its outcomes", () => {
    const admit = Admission.make(math.name, edge.erase(math).group, 300)
    fc.assert(
      fc.property(bytes(nearPayload), properties, fc.integer({ min: 0, max: 4_000_000_000_000 }), (body, props, now) => {
        const admission = admit(delivery(body, props), () => now)
        switch (admission._tag) {
          case "Admitted":
            assert.isDefined(admission.rpc)
            assert.isAtMost(body.length, 300)
            return
          case "Refused":
            assert.include(["InvalidPayload", "MethodNotFound"], admission.error._tag)
            return
          case "Unanswerable":
          case "Expired":
            return
        }
      }),
      parameters(3000)
    )
  })

  it("replies: every rpc's Exit decoder answers any JSON with an Exit", () => {
    fc.assert(
      fc.property(fc.constantFrom(...rpcs), fc.oneof(
        fc.jsonValue({ maxDepth: 4 }),
        fc.record({
          _tag: fc.constantFrom("Success", "Failure", "Exit", "Chunk"),
          value: fc.jsonValue({ maxDepth: 2 }),
          cause: fc.array(fc.record({ _tag: fc.constantFrom("Fail", "Die", "Interrupt", "Sequential"), error: fc.jsonValue({ maxDepth: 2 }), defect: fc.jsonValue({ maxDepth: 2 }) }, { requiredKeys: ["_tag"] }), { maxLength: 3 })
        }, { requiredKeys: ["_tag"] })
      ), (rpc, u) => {
        const decoded = Codecs.codecsOf(rpc).decodeExit(u)
        assert.isTrue(Exit.isExit(decoded))
        if (Exit.isSuccess(decoded)) assert.isTrue(Exit.isExit(decoded.value))
      }),
      parameters(3000)
    )
  })

  it("the wire's own readers: JSON bodies, control messages, traceparent, mesh errors in defects, header values", () => {
    fc.assert(
      fc.property(bytes(jsonText()), fc.jsonValue({ maxDepth: 3 }), fc.option(fc.string({ maxLength: 70 }), { nil: undefined }), headers, (body, json, traceparent, hs) => {
        const parsed = wire.decodeJson(body)
        assert.isTrue(Option.isOption(parsed))
        Option.map(parsed, (u) => wire.isControl(u))
        wire.isControl(json)
        assert.isTrue(Option.isOption(wire.serviceErrorOfDefect(json)))
        assert.isTrue(Option.isOption(wire.serviceErrorOfDefect({ "effect-mesh/ServiceError": json })))
        const span = wire.parseTraceparent(traceparent)
        if (span !== undefined) {
          assert.isString(span.traceId)
          assert.isBoolean(span.sampled)
        }
        wire.headerEntries(hs)
        wire.stringHeaders(hs)
        events.isCommand(hs)
      }),
      parameters(3000)
    )
  })

  it("the call context header: any text is a context (empty when it is not one), with a finite deadline or none", () => {
    fc.assert(
      fc.property(fc.oneof(contextHeader, fc.string()), (raw) => {
        const context = CallContext.fromHeader(raw)
        assert.isString(context.correlationId)
        assert.isAtMost(context.callIdStack.length, CallContext.maxCallIdStack)
        const deadline = CallContext.deadlineOf(raw)
        if (deadline !== undefined) assert.isTrue(Number.isFinite(deadline), String(deadline))
        if (context.deadline !== undefined) assert.isTrue(Number.isFinite(context.deadline))
        for (const value of Object.values(context.entries)) assert.isString(value)
      }),
      parameters(3000)
    )
  })

  it("Nameko's wire: requests, replies and context headers", () => {
    const signatures: Record<string, ReadonlyArray<string>> = { add: ["a", "b"], countdown: ["from"], whoami: [] }
    const nearNameko = jsonText(fc.oneof(
      fc.record({ args: fc.oneof(fc.array(fc.jsonValue({ maxDepth: 2 }), { maxLength: 4 }), fc.jsonValue()), kwargs: fc.oneof(fc.dictionary(fc.constantFrom("a", "b", "from", "x", "__proto__"), fc.jsonValue({ maxDepth: 2 })), fc.jsonValue()) }, { requiredKeys: [] }).map((v) => v as unknown),
      fc.record({ result: fc.jsonValue({ maxDepth: 2 }), error: fc.oneof(fc.constant(null), fc.jsonValue({ maxDepth: 2 }), fc.record({ exc_type: fc.jsonValue(), exc_path: fc.jsonValue(), exc_args: fc.jsonValue(), value: fc.jsonValue() }, { requiredKeys: [] })) }, { requiredKeys: [] }).map((v) => v as unknown)
    ))
    const namekoHeaders = fc.dictionary(
      fc.oneof(fc.constantFrom(namekoWire.callIdStackHeader, namekoWire.userIdHeader, namekoWire.correlationIdHeader), fc.string({ maxLength: 12 }).map((k) => `nameko.${k}`)),
      fc.oneof(headerValue, fc.array(fc.string()).map((a) => JSON.stringify(a)))
    )
    const served = rpcs.filter((rpc) => rpc._tag in signatures)
    fc.assert(
      fc.property(fc.constantFrom(...served), bytes(nearNameko), namekoHeaders, (rpc, body, hs) => {
        const request = namekoWire.readRequest(rpc, signatures[rpc._tag], body)
        assert.include(["Payload", "Refused"], request._tag)
        const reply = namekoWire.readReply(body)
        if (reply?.error !== undefined) {
          assert.isString(reply.error.exc_type)
          assert.isString(reply.error.value)
        }
        const context = namekoWire.contextOf(hs, { service: "fuzz", method: rpc._tag, id: "1" })
        assert.isString(context.correlationId)
        for (const entry of context.callIdStack) assert.isString(entry)
      }),
      parameters(3000)
    )
  })

  it.effect("events: a subscription's decoder makes every delivery an event or an issue to dead-letter it with", () =>
    Effect.gen(function*() {
      const broker = yield* Broker.Broker
      const decodePayload = namekoWire.jsonDecoder(rpcs[0].payloadSchema)
      const settler = Settler.make(broker, {
        label: "fuzz",
        queue: "fuzz",
        deadQueue: "fuzz.dead",
        durable: false,
        maxMessageSize: 300,
        metrics: Metrics.eventSettling("fuzz", "fuzz.tick")
      }, decodePayload, Schedule.recurs(3))
      fc.assert(
        fc.property(bytes(nearPayload), properties, fc.boolean(), (body, props, redelivered) => {
          const decoded = settler.decode(delivery(body, props, redelivered))
          if (decoded._tag === "Valid") {
            assert.isString(decoded.metadata.messageId)
            assert.isAtLeast(decoded.metadata.attempt, 1)
            assert.isString(decoded.metadata.context.correlationId)
          } else {
            assert.isString(decoded.issue)
          }
        }),
        parameters(3000)
      )
    }).pipe(Effect.provide(MemoryBroker.layer)))

  it.effect("events: a failed event with any retry headers is retried or dead-lettered at once, on a schedule that never ends too", () =>
    Effect.gen(function*() {
      const broker = yield* Broker.Broker
      const queue = `fuzz-retry-${crypto.randomUUID().slice(0, 8)}`
      yield* broker.declareQueue(queue, { durable: false })
      yield* broker.declareQueue(`${queue}.dead`, { durable: false })
      const schedules = [Schedule.spaced("1 second"), Schedule.recurs(3), Schedule.exponential("10 millis")]
      const context = yield* Effect.context<never>()
      const retries = fc.oneof(headerValue, fc.constantFrom(Number.MAX_SAFE_INTEGER, 1e12, "9007199254740991", 2 ** 31), fc.nat(50))
      yield* Effect.promise(() =>
        fc.assert(
          fc.asyncProperty(fc.constantFrom(...schedules), retries, headerValue, (retry, count, firstFailure) => {
            const settler = Settler.make(broker, {
              label: "fuzz",
              queue,
              deadQueue: `${queue}.dead`,
              durable: false,
              maxMessageSize: 300,
              metrics: Metrics.eventSettling("fuzz", "fuzz.tick")
            }, namekoWire.jsonDecoder(rpcs[0].payloadSchema), retry)
            const failed = delivery(new TextEncoder().encode("{}"), {
              headers: { [events.header.retries]: count, [events.header.firstFailure]: firstFailure }
            })
            return Effect.runPromiseWith(context)(
              settler.failCause(failed, Cause.fail("handler failed")).pipe(
                Effect.timeoutOrElse({
                  duration: "2 seconds",
                  orElse: () => Effect.die(new Error(`settling an event with x-mesh-retries ${String(count)} took over 2 s`))
                })
              )
            )
          }),
          parameters(300)
        )
      )
    }).pipe(Effect.provide(MemoryBroker.layer)))

  it.effect("SSE text: effect's decoder, which Sse.source reads with, makes any text events, a Retry or an SseError", () =>
    Effect.promise(() =>
      fc.assert(
        fc.asyncProperty(
          fc.array(fc.oneof(
            fc.string({ maxLength: 30 }),
            fc.constantFrom("data: x\n", "\n", "\r\n", "\r", "id: 1\n", "event: e\n", "retry: 10\n", "retry: 99999999999999999999\n", ": c\n", "data\n", "\uFEFF", "id: \u0000\n"),
            fc.string({ unit: "binary", maxLength: 20 })
          ), { maxLength: 30 }),
          (chunks) =>
            Stream.fromIterable(chunks).pipe(
              Stream.pipeThroughChannel(SseEncoding.decode({ maxEventSize: 64 })),
              Stream.runCollect,
              Effect.exit,
              Effect.map((exit) => {
                if (Exit.isSuccess(exit)) {
                  for (const event of exit.value) assert.isAtMost(event.data.length, 64)
                  return
                }
                const error = Exit.findErrorOption(exit)
                assert.isTrue(Option.isSome(error), String(exit.cause))
                const failure = Option.getOrThrow(error)
                assert.isTrue(SseEncoding.Retry.is(failure) || failure._tag === "SseError")
              }),
              Effect.runPromise
            )
        ),
        parameters(1000)
      )
    ))

  it.effect("config files: any YAML or JSON text loads, or fails with MeshConfigError", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped()
      const yamlish = fc.array(fc.oneof(
        fc.string({ maxLength: 20 }),
        fc.constantFrom("amqp:\n", "  url: ", "${AMQP_URL}", "${X:default}", "$${", "- ", "&a ", "*a", "!!binary ", "? ", ": ", "{", "[", "'", "\"", "\n", "\t", "---\n", "~", "<<: *a\n"),
        jsonText()
      ), { maxLength: 12 }).map((parts) => parts.join(""))
      let n = 0
      const load = (text: string, ext: string) =>
        Effect.gen(function*() {
          const path = `${dir}/config-${n++}.${ext}`
          yield* fs.writeFileString(path, text)
          const exit = yield* Effect.exit(MeshConfig.loadFile(path, { AMQP_URL: "amqp://x" }))
          if (Exit.isFailure(exit)) {
            const error = Exit.findErrorOption(exit)
            assert.isTrue(Option.isSome(error), `a defect for ${JSON.stringify(text)}: ${String(exit.cause)}`)
            assert.strictEqual(Option.getOrThrow(error)._tag, "MeshConfigError")
          } else {
            for (const key of Object.keys(exit.value.flat)) assert.isString(key)
          }
        })
      const services = yield* Effect.context<FileSystem.FileSystem>()
      yield* Effect.promise(() =>
        fc.assert(
          fc.asyncProperty(fc.oneof(yamlish, jsonText()), fc.constantFrom("yaml", "json"), (text, ext) =>
            Effect.runPromiseWith(services)(load(text, ext))),
          parameters(500)
        )
      )
    }).pipe(Effect.scoped, Effect.provide(NodeServices.layer)))
})
