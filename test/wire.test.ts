import { assert, describe, it } from "@effect/vitest"
import { Cause, Exit, Schema } from "effect"
import { Rpc } from "effect/rpc"
import * as Codecs from "../src/internal/codecs.ts"
import * as wire from "../src/internal/wire.ts"
import { DivisionByZero, MathRpcs } from "./fixtures/services.ts"

const rpcOf = (tag: string) => MathRpcs.requests.get(tag) as unknown as Rpc.AnyWithProps

/** what effect/rpc itself makes of an Exit: the codecs' shorter way must agree with it */
const viaExitSchema = (rpc: Rpc.AnyWithProps) =>
  Schema.toCodecJson(Rpc.exitSchema(rpc as Rpc.Any)) as unknown as Schema.Codec<unknown, unknown>

describe("wire", () => {
  it("reads a W3C traceparent by its offsets, and other forms by their dashes", () => {
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736"
    const spanId = "00f067aa0ba902b7"
    assert.deepStrictEqual(wire.parseTraceparent(`00-${traceId}-${spanId}-01`), { traceId, spanId, sampled: true })
    assert.deepStrictEqual(wire.parseTraceparent(`00-${traceId}-${spanId}-00`), { traceId, spanId, sampled: false })
    // the sampled bit is bit 0 of the flags, in hex
    assert.strictEqual(wire.parseTraceparent(`00-${traceId}-${spanId}-0b`)?.sampled, true)
    assert.strictEqual(wire.parseTraceparent(`00-${traceId}-${spanId}-0a`)?.sampled, false)
    assert.strictEqual(wire.parseTraceparent(`00-${traceId}-${spanId}-zz`)?.sampled, true)
    // ids of other lengths (another tracer's) still arrive
    assert.deepStrictEqual(wire.parseTraceparent("00-abc-def-01"), { traceId: "abc", spanId: "def", sampled: true })
    assert.strictEqual(wire.parseTraceparent(`00-${traceId}-${spanId}`), undefined)
    assert.strictEqual(wire.parseTraceparent(`00--${spanId}-01`), undefined)
    assert.strictEqual(wire.parseTraceparent(undefined), undefined)
    // what the mesh writes, it reads back
    assert.deepStrictEqual(wire.parseTraceparent(wire.traceparent(traceId, spanId, false)), { traceId, spanId, sampled: false })
  })

  it("encodes and decodes an Exit as effect/rpc's Exit schema does, success or failure", () => {
    const divide = rpcOf("divide")
    const codecs = Codecs.codecsOf(divide)
    const encodeFull = Schema.encodeUnknownSync(viaExitSchema(divide))
    const exits: ReadonlyArray<Exit.Exit<unknown, unknown>> = [
      Exit.succeed(2.5),
      Exit.fail(new DivisionByZero({ dividend: 1 })),
      Exit.die("boom"),
      Exit.interrupt(7)
    ]
    for (const exit of exits) {
      const encoded = codecs.encodeExit(exit)
      assert.isTrue(Exit.isSuccess(encoded))
      if (Exit.isFailure(encoded)) continue
      assert.deepStrictEqual(encoded.value, encodeFull(exit))
      const decoded = codecs.decodeExit(JSON.parse(JSON.stringify(encoded.value)))
      assert.isTrue(Exit.isSuccess(decoded))
      if (Exit.isSuccess(decoded)) assert.strictEqual(decoded.value._tag, exit._tag)
    }
    const success = codecs.decodeExit({ _tag: "Success", value: 2.5 })
    assert.deepStrictEqual(success, Exit.succeed(Exit.succeed(2.5)))
    const failure = codecs.decodeExit(encodeFull(Exit.fail(new DivisionByZero({ dividend: 1 }))))
    assert.isTrue(Exit.isSuccess(failure) && Exit.isFailure(failure.value))
    if (Exit.isSuccess(failure) && Exit.isFailure(failure.value)) {
      assert.instanceOf(Cause.squash(failure.value.cause), DivisionByZero)
    }
  })

  it("refuses a success its schema cannot take, either way", () => {
    const codecs = Codecs.codecsOf(rpcOf("add"))
    assert.isTrue(Exit.isFailure(codecs.encodeExit(Exit.succeed("not a number"))))
    assert.isTrue(Exit.isFailure(codecs.decodeExit({ _tag: "Success", value: "not a number" })))
    assert.isTrue(Exit.isFailure(codecs.decodeExit({ _tag: "Nope" })))
    assert.isTrue(Exit.isFailure(codecs.decodeExit(null)))
  })

  it("makes an rpc's codecs once", () => {
    assert.strictEqual(Codecs.codecsOf(rpcOf("add")), Codecs.codecsOf(rpcOf("add")))
  })
})
