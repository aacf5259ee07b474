/**
 * Header names events and commands use on the wire, next to the call context's own.
 */
import { Effect } from "effect"
import type { HeaderValue } from "../Broker.ts"
import * as CallContext from "../CallContext.ts"

export const header = {
  /** on a republished event: the message id it was first published with */
  eventId: "x-mesh-event-id",
  /** failed attempts before this delivery (absent on the first) */
  retries: "x-mesh-retries",
  /** epoch millis of the first failure, so a retry schedule can be replayed */
  firstFailure: "x-mesh-first-failure",
  /** on a dead-lettered event: why (`handler-failed`, `invalid-payload`) */
  deathReason: "x-mesh-death-reason",
  /** the last error, as text */
  error: "x-mesh-error",
  /** on a dead-lettered event: how many times the handler ran */
  attempts: "x-mesh-attempts",
  /** on a dead-lettered event: the queue it came from */
  queue: "x-mesh-queue",
  /** on a dead-lettered event: epoch millis */
  diedAt: "x-mesh-died-at",
  /** on an rpc request: run it, ack it when it completes, send no reply */
  command: "x-mesh-command"
} as const

/** whether an rpc request is a command (fire and forget) */
export const isCommand = (headers: Readonly<Record<string, HeaderValue>> | undefined): boolean => {
  const value = headers?.[header.command]
  return value === true || value === "true"
}

/** headers the broker or an earlier hop added that must not travel on with a republished message */
export const isTransient = (key: string): boolean =>
  key.startsWith("x-death") || key.startsWith("x-first-death") || key.startsWith("x-last-death") ||
  key === "x-delivery-count"

/** the call context a message carries: one hop further, without the publisher's deadline */
export const nextContextOf = (
  parent: CallContext.CallContext,
  service: string,
  method: string,
  id: string
): CallContext.CallContext => ({
  ...CallContext.child(parent, { service, method, id, deadline: undefined }),
  deadline: undefined
})

/** `nextContextOf` the current call context */
export const nextContext = (service: string, method: string, id: string) =>
  Effect.map(CallContext.CallContext, (parent) => nextContextOf(parent, service, method, id))
