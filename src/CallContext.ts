/**
 * What travels with every call: a correlation id shared by a whole call tree, the call-id stack
 * (Nameko's `call_id_stack`: one `service.method.id` entry per hop), the user on whose behalf the
 * call runs, the deadline, and free-form entries. Beside them, on the receiving side only, the sender
 * the broker verified (`verifiedUserId`).
 *
 * Handlers read it with `yield* CallContext.CallContext`. Calls a handler makes carry it on by
 * themselves, one entry deeper; a caller's timeout becomes the callee's deadline. On the wire it is one
 * header, its JSON (see `toHeaders` / `fromHeaders`).
 *
 * @since 0.1.0
 */
import { Context, Effect, Option } from "effect"
import { dual } from "effect/Function"
import type { Headers } from "effect/http"

/**
 * @since 0.1.0
 */
export interface CallContext {
  /** shared by every call in one tree; set by the first caller */
  readonly correlationId: string
  /** oldest first; the last entry is the current call (`service.method.id`) */
  readonly callIdStack: ReadonlyArray<string>
  /**
   * the user on whose behalf the call runs, as the caller claims it: anyone who can publish can claim
   * anyone, so it is for logs and for passing on, not for deciding who may do what
   */
  readonly userId: string | undefined
  /**
   * who sent this call, event or command, as the broker verified it: on RabbitMQ the AMQP `user_id`,
   * which RabbitMQ checks against the sending connection's user (so it names a broker user, a
   * service's or a gateway's, not an end user); on `MemoryBroker` its `identity` option. Set by the
   * receiving side from the message's properties, never read from the context header nor carried on
   * to the calls a handler makes; `undefined` where nothing was verified (outside a handler, an
   * embedded broker without an identity).
   */
  readonly verifiedUserId?: string | undefined
  /** epoch milliseconds after which nobody waits for the answer */
  readonly deadline: number | undefined
  readonly entries: Readonly<Record<string, string>>
}

/**
 * How many entries the call-id stack keeps (the oldest are dropped).
 *
 * @since 0.1.0
 */
export const maxCallIdStack = 16

/**
 * The context of the current call; outside any call, an empty one.
 *
 * @since 0.1.0
 */
export const CallContext = Context.Reference<CallContext>("effect-mesh/CallContext", {
  defaultValue: () => empty
})

/**
 * @since 0.1.0
 */
export const empty: CallContext = {
  correlationId: "",
  callIdStack: [],
  userId: undefined,
  deadline: undefined,
  entries: {}
}

/**
 * Runs an effect with a user id in its call context; calls it makes carry it.
 *
 * @since 0.1.0
 */
export const withUserId: {
  (userId: string): <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  <A, E, R>(self: Effect.Effect<A, E, R>, userId: string): Effect.Effect<A, E, R>
} = dual(
  2,
  <A, E, R>(self: Effect.Effect<A, E, R>, userId: string): Effect.Effect<A, E, R> =>
    Effect.updateService(self, CallContext, (c) => ({ ...c, userId }))
)

/**
 * Runs an effect with extra free-form entries in its call context.
 *
 * @since 0.1.0
 */
export const withEntries = (entries: Readonly<Record<string, string>>) =>
<A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.updateService(self, CallContext, (c) => ({ ...c, entries: { ...c.entries, ...entries } }))

/**
 * Runs an effect with a correlation id (for example one taken from an incoming HTTP request).
 *
 * @since 0.1.0
 */
export const withCorrelationId = (correlationId: string) =>
<A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.updateService(self, CallContext, (c) => ({ ...c, correlationId }))

// ---- wire format ----

/**
 * The context travels as one header, its JSON: each header of a message costs on every hop (amqplib
 * and RabbitMQ encode and decode field tables entry by entry), one long entry far less than several.
 *
 * @internal
 */
export const headerNames = {
  context: "x-mesh-context"
} as const

/**
 * The context of a call one hop further: the callee's entry pushed on the stack, the correlation id
 * kept (or made), the deadline the nearer of the caller's and this call's own.
 *
 * @since 0.1.0
 */
export const child = (
  parent: CallContext,
  options: {
    readonly service: string
    readonly method: string
    readonly id: string
    readonly deadline: number | undefined
  }
): CallContext => {
  const stack = parent.callIdStack.length >= maxCallIdStack
    ? parent.callIdStack.slice(parent.callIdStack.length - maxCallIdStack + 1)
    : parent.callIdStack
  const deadline = parent.deadline === undefined
    ? options.deadline
    : options.deadline === undefined
    ? parent.deadline
    : Math.min(parent.deadline, options.deadline)
  return {
    correlationId: parent.correlationId === "" ? options.id : parent.correlationId,
    callIdStack: [...stack, `${options.service}.${options.method}.${options.id}`],
    userId: parent.userId,
    deadline,
    entries: parent.entries
  }
}

/**
 * The context of work that starts a call tree of its own (a timer run, a worker): a fresh
 * correlation id and one call-id entry `<entry>.<id>`.
 *
 * @since 0.1.0
 */
export const root = (entry: string): CallContext => {
  const correlationId = crypto.randomUUID()
  return { ...empty, correlationId, callIdStack: [`${entry}.${correlationId.slice(0, 13)}`] }
}

/**
 * Encodes a context as message headers (one header: `x-mesh-context`, the context as JSON).
 *
 * @since 0.1.0
 */
export const toHeaders = (context: CallContext): Record<string, string> => ({
  // the deadline first: the transports read it on every call without parsing the rest
  [headerNames.context]: JSON.stringify(
    // the verified sender is the receiver's to learn from its broker, never the sender's to say
    context.deadline === undefined && context.verifiedUserId === undefined ? context : {
      deadline: context.deadline,
      correlationId: context.correlationId,
      callIdStack: context.callIdStack,
      userId: context.userId,
      entries: context.entries
    }
  )
})

const deadlinePrefix = "{\"deadline\":"

/**
 * The deadline of a context header: read from its start when `toHeaders` wrote it, else parsed.
 *
 * @internal
 */
export const deadlineOf = (header: string | undefined): number | undefined => {
  if (header === undefined) return undefined
  if (header.startsWith(deadlinePrefix)) {
    const end = header.indexOf(",", deadlinePrefix.length)
    const deadline = Number(header.slice(deadlinePrefix.length, end < 0 ? header.length - 1 : end))
    if (Number.isFinite(deadline)) return deadline
  }
  return header.includes("\"deadline\"") ? fromHeader(header).deadline : undefined
}

const parse = Option.liftThrowable((text: string): unknown => JSON.parse(text))

const isStringRecord = (u: unknown): u is Readonly<Record<string, string>> =>
  typeof u === "object" && u !== null && !Array.isArray(u) && Object.values(u).every((v) => typeof v === "string")

/**
 * Reads a context from message headers; anything missing or malformed is left empty.
 *
 * @since 0.1.0
 */
export const fromHeaders = (headers: Headers.Headers | Readonly<Record<string, string | undefined>>): CallContext =>
  fromHeader((headers as Record<string, string | undefined>)[headerNames.context])

/**
 * Reads a context from the value of its header (`x-mesh-context`); missing or malformed is empty.
 *
 * @internal
 */
export const fromHeader = (raw: string | undefined): CallContext => {
  if (raw === undefined) return empty
  const parsed = parse(raw)
  if (Option.isNone(parsed) || typeof parsed.value !== "object" || parsed.value === null) return empty
  const u = parsed.value as Record<string, unknown>
  const stack = Array.isArray(u["callIdStack"]) ? u["callIdStack"].filter((e): e is string => typeof e === "string") : []
  const deadline = u["deadline"]
  return {
    correlationId: typeof u["correlationId"] === "string" ? u["correlationId"] : "",
    callIdStack: stack.length > maxCallIdStack ? stack.slice(-maxCallIdStack) : stack,
    userId: typeof u["userId"] === "string" ? u["userId"] : undefined,
    deadline: typeof deadline === "number" && Number.isFinite(deadline) ? deadline : undefined,
    entries: isStringRecord(u["entries"]) ? u["entries"] : {}
  }
}
