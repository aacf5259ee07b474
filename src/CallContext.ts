/**
 * What travels with every call: a correlation id shared by a whole call tree, the call-id stack
 * (Nameko's `call_id_stack`: one `service.method.id` entry per hop), the user on whose behalf the
 * call runs, the deadline, and free-form entries.
 *
 * Handlers read it with `yield* CallContext.CallContext`. Calls a handler makes carry it on by
 * themselves, one entry deeper; a caller's timeout becomes the callee's deadline. On the wire it is a
 * handful of headers (see `toHeaders` / `fromHeaders`).
 *
 * @since 0.1.0
 */
import { Context, Effect } from "effect"
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
  readonly userId: string | undefined
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

/** @internal */
export const headerNames = {
  correlationId: "x-mesh-correlation-id",
  callIdStack: "x-mesh-call-id-stack",
  userId: "x-mesh-user-id",
  deadline: "x-mesh-deadline",
  entryPrefix: "x-mesh-ctx-"
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
 * Encodes a context as message headers.
 *
 * @since 0.1.0
 */
export const toHeaders = (context: CallContext): Record<string, string> => {
  const headers: Record<string, string> = {
    [headerNames.correlationId]: context.correlationId,
    [headerNames.callIdStack]: context.callIdStack.join(",")
  }
  if (context.userId !== undefined) headers[headerNames.userId] = context.userId
  if (context.deadline !== undefined) headers[headerNames.deadline] = String(context.deadline)
  for (const key in context.entries) headers[headerNames.entryPrefix + key] = context.entries[key]
  return headers
}

const parseStack = (raw: string | undefined): ReadonlyArray<string> =>
  raw === undefined || raw === "" ? [] : raw.split(",").slice(-maxCallIdStack)

/**
 * Reads a context from message headers; anything missing or malformed is left empty.
 *
 * @since 0.1.0
 */
export const fromHeaders = (headers: Headers.Headers | Readonly<Record<string, string | undefined>>): CallContext => {
  const get = (key: string): string | undefined => (headers as Record<string, string | undefined>)[key]
  const deadlineRaw = get(headerNames.deadline)
  const deadline = deadlineRaw === undefined ? NaN : Number(deadlineRaw)
  const entries: Record<string, string> = {}
  for (const key in headers) {
    if (key.startsWith(headerNames.entryPrefix)) {
      const value = get(key)
      if (value !== undefined) entries[key.slice(headerNames.entryPrefix.length)] = value
    }
  }
  return {
    correlationId: get(headerNames.correlationId) ?? "",
    callIdStack: parseStack(get(headerNames.callIdStack)),
    userId: get(headerNames.userId),
    deadline: Number.isFinite(deadline) ? deadline : undefined,
    entries
  }
}
