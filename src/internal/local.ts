/**
 * A unary request as a value: what a client publishes in a `LocalBody` beside its bytes. On a broker
 * that hands values over (`MemoryBroker`), an instance serving the very same rpc takes it as it is
 * (no JSON, no decode, the caller's `CallContext` and span as they are) and answers with the handler's
 * Exit as a value too; any other consumer reads the bytes, as from RabbitMQ.
 *
 * @internal
 */
import type { Tracer } from "effect"
import type { Rpc } from "effect/rpc"
import type * as CallContext from "../CallContext.ts"

/** @internal */
export class LocalRequest {
  readonly rpc: Rpc.AnyWithProps
  /** made by the payload schema, and checked by its encode */
  readonly payload: unknown
  readonly context: CallContext.CallContext
  /** the caller's client span */
  readonly span: Tracer.AnySpan | undefined
  constructor(rpc: Rpc.AnyWithProps, payload: unknown, context: CallContext.CallContext, span: Tracer.AnySpan | undefined) {
    this.rpc = rpc
    this.payload = payload
    this.context = context
    this.span = span
  }
}
