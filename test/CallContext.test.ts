import { assert, describe, it } from "@effect/vitest"
import { CallContext } from "effect-mesh"

describe("CallContext", () => {
  it("child pushes one entry, keeps the correlation id and takes the nearer deadline", () => {
    const root = CallContext.child(CallContext.empty, { service: "a", method: "m", id: "1", deadline: 500 })
    assert.strictEqual(root.correlationId, "1")
    assert.deepStrictEqual(root.callIdStack, ["a.m.1"])
    const next = CallContext.child(root, { service: "b", method: "n", id: "2", deadline: 900 })
    assert.strictEqual(next.correlationId, "1")
    assert.deepStrictEqual(next.callIdStack, ["a.m.1", "b.n.2"])
    assert.strictEqual(next.deadline, 500)
    assert.strictEqual(CallContext.child(root, { service: "b", method: "n", id: "3", deadline: 100 }).deadline, 100)
  })

  it("keeps the call-id stack bounded, dropping the oldest", () => {
    let context = CallContext.empty
    for (let i = 0; i < CallContext.maxCallIdStack + 5; i++) {
      context = CallContext.child(context, { service: "s", method: "m", id: String(i), deadline: undefined })
    }
    assert.strictEqual(context.callIdStack.length, CallContext.maxCallIdStack)
    assert.strictEqual(context.callIdStack.at(-1), `s.m.${CallContext.maxCallIdStack + 4}`)
    assert.strictEqual(context.callIdStack[0], "s.m.5")
  })

  it("round-trips through headers, and reads malformed headers as empty", () => {
    const context: CallContext.CallContext = {
      correlationId: "c-1",
      callIdStack: ["a.m.1", "b.n.2"],
      userId: "ada",
      deadline: 1234,
      entries: { tenant: "acme" }
    }
    assert.deepStrictEqual(CallContext.fromHeaders(CallContext.toHeaders(context)), context)
    const header = CallContext.toHeaders(context)["x-mesh-context"]
    assert.deepStrictEqual(JSON.parse(header), context)
    // the transports read the deadline without parsing the rest, wherever a writer put it
    assert.strictEqual(CallContext.deadlineOf(header), 1234)
    assert.strictEqual(CallContext.deadlineOf(JSON.stringify({ correlationId: "c", deadline: 99 })), 99)
    assert.strictEqual(CallContext.deadlineOf(JSON.stringify({ deadline: 7 })), 7)
    assert.strictEqual(CallContext.deadlineOf(JSON.stringify({ correlationId: "c", entries: { deadline: "5" } })), undefined)
    assert.strictEqual(CallContext.deadlineOf(CallContext.toHeaders({ ...context, deadline: undefined })["x-mesh-context"]), undefined)
    for (const raw of ["{nope", "42", "null", JSON.stringify({ deadline: "soon", callIdStack: "a.b.c", entries: { n: 1 } })]) {
      const bad = CallContext.fromHeaders({ "x-mesh-context": raw })
      assert.strictEqual(bad.deadline, undefined)
      assert.deepStrictEqual(bad.callIdStack, [])
      assert.deepStrictEqual(bad.entries, {})
      assert.strictEqual(bad.correlationId, "")
    }
    assert.deepStrictEqual(CallContext.fromHeaders({}), CallContext.empty)
  })
})

describe("CallContext.root", () => {
  it("starts a call tree of its own: a fresh correlation id and one entry", () => {
    const a = CallContext.root("svc.timer:sweep")
    const b = CallContext.root("svc.timer:sweep")
    assert.notStrictEqual(a.correlationId, b.correlationId)
    assert.strictEqual(a.callIdStack.length, 1)
    assert.match(a.callIdStack[0], /^svc\.timer:sweep\.[0-9a-f-]{13}$/)
    assert.strictEqual(a.deadline, undefined)
  })
})
