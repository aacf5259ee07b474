/**
 * One call in flight, from the caller's side: the one state machine every call of a process goes
 * through, whichever way it is made (a unary call, or effect/rpc's client for streams, untyped calls
 * and rpcs with middleware). It ends once, by whichever comes first: its answer, the broker's return
 * of its request (`ServiceNotFound`), its deadline (`CallTimeout`, made here and nowhere else in the
 * client), the loss of the connection (`TransportError` `OutcomeUnknown`) or a queue nobody consumes
 * (`ServiceNotFound` `NoConsumer`). A call that times out or whose caller goes away asks the instance
 * running it to stop.
 *
 * @internal
 */
import { Effect, Exit } from "effect"
import type { Fiber, Scope } from "effect"
import type { FromServerEncoded, RequestId } from "effect/rpc/RpcMessage"
import type { BrokerError } from "../Broker.ts"
import type { ServiceError } from "../ServiceError.ts"
import { CallTimeout, RemoteDefect, ServiceNotFound, TransportError } from "../ServiceError.ts"
import type * as Codecs from "./codecs.ts"
import type * as Deadlines from "./deadlines.ts"
import * as wire from "./wire.ts"

/** what the calls of one transport share */
export interface Calls {
  /** every call in flight, by correlation id: replies find their call here */
  readonly routes: Map<string, PendingCall>
  readonly deadlines: Deadlines.Deadlines
  /** asks the instances of the call's service to stop it */
  readonly interrupt: (call: PendingCall) => Effect.Effect<void>
}

/**
 * No reply to a call in flight can come any more (the connection, or the transport, is gone): each
 * fails with `TransportError` `OutcomeUnknown`, deadline or not. The routes are read as the loss is
 * dispatched: a call made after it cannot be among them, as its publish waits for the reconnection
 */
export const endAll = (routes: Map<string, PendingCall>, reason: string): Effect.Effect<void> =>
  Effect.suspend(() =>
    Effect.forEach(
      Array.from(routes.values()),
      (route) =>
        route.end(
          new TransportError({
            service: route.service,
            method: route.method,
            reason: "OutcomeUnknown",
            message: `${reason} while ${route.service}.${route.method} was in flight: its outcome is unknown (the request may or may not have run)`
          })
        ),
      { discard: true }
    )
  )

/** an answer: effect/rpc's message (a chunk, or the Exit encoded), or a success as a value */
export type Answer = FromServerEncoded | Exit.Exit<unknown, unknown>

/** @internal */
export abstract class PendingCall {
  /** the instance that answered, once one did: stream acks go to it */
  instance: string | undefined = undefined
  private timer: Deadlines.Entry | undefined = undefined
  /** a word (a chunk, or the end) came */
  protected heard = false
  protected done = false
  readonly calls: Calls
  readonly service: string
  readonly method: string
  readonly correlationId: string
  /** the caller's timeout, for its CallTimeout */
  readonly timeoutMillis: number
  /** the transport's sweep count when the call was made: how long it has waited, without a clock */
  readonly sweep: number
  constructor(calls: Calls, service: string, method: string, correlationId: string, timeoutMillis: number, sweep: number) {
    this.calls = calls
    this.service = service
    this.method = method
    this.correlationId = correlationId
    this.timeoutMillis = timeoutMillis
    this.sweep = sweep
  }

  /** the call is in flight: replies find it, and its deadline (epoch millis) is watched */
  begin(deadline: number | undefined): void {
    this.calls.routes.set(this.correlationId, this)
    if (deadline !== undefined) this.timer = this.calls.deadlines.add(deadline, Effect.suspend(() => this.expire()))
  }

  /** nothing has come for the call yet */
  waiting(): boolean {
    return !this.heard && !this.done
  }

  /** the call is over: no reply is routed to it now, its deadline is not watched */
  forget(): void {
    this.done = true
    this.calls.routes.delete(this.correlationId)
    if (this.timer !== undefined) this.calls.deadlines.remove(this.timer)
  }

  /** the deadline passed first: the caller gets CallTimeout, the instance an interrupt */
  private expire(): Effect.Effect<void> {
    if (this.done) return Effect.void
    return Effect.andThen(
      this.fail(new CallTimeout({ service: this.service, method: this.method, timeoutMillis: this.timeoutMillis })),
      this.calls.interrupt(this)
    )
  }

  /** the caller went away: the instance is asked to stop the call */
  cancel(): Effect.Effect<void> {
    if (this.done) return Effect.void
    this.forget()
    return this.calls.interrupt(this)
  }

  /** ends the call with one of the mesh's errors, if it has not ended */
  end(error: ServiceError): Effect.Effect<void> {
    return Effect.suspend(() => this.done ? Effect.void : this.fail(error))
  }

  /** the broker returned the request: no queue of the service is there */
  returned(): Effect.Effect<void> {
    return this.end(new ServiceNotFound({ service: this.service }))
  }

  /** the publish of the request failed: nothing was sent */
  unsent(error: BrokerError): TransportError {
    this.forget()
    return new TransportError({ service: this.service, method: this.method, message: error.message })
  }

  /** an answer from the instance `instance` (when it said) */
  abstract reply(answer: Answer, instance: string | undefined): Effect.Effect<void>

  /** ends the call with one of the mesh's errors */
  protected abstract fail(error: ServiceError): Effect.Effect<void>
}

/**
 * A unary call without effect/rpc's client: its answer resumes the caller right where it arrives
 * (effect's callback resumes its fiber synchronously), in the transport's callback.
 */
export class UnaryCall extends PendingCall {
  /** set when the call ended before its caller waited for it */
  private result: Effect.Effect<unknown, unknown> | undefined = undefined
  private resume: ((result: Effect.Effect<unknown, unknown>) => void) | undefined = undefined
  private readonly decode: Codecs.Codecs["decodeExit"]
  constructor(
    calls: Calls,
    service: string,
    method: string,
    correlationId: string,
    decode: Codecs.Codecs["decodeExit"],
    timeoutMillis: number,
    sweep: number
  ) {
    super(calls, service, method, correlationId, timeoutMillis, sweep)
    this.decode = decode
  }

  private settle(result: Effect.Effect<unknown, unknown>): void {
    if (this.done) return
    this.forget()
    if (this.resume === undefined) this.result = result
    else this.resume(result)
  }

  /** takes an answer at once: a success as a value, or an encoded Exit (a chunk says nothing here) */
  answer(answer: Answer): void {
    if (Exit.isExit(answer)) return this.settle(answer)
    if (answer._tag !== "Exit") return
    const exit = this.decode(answer.exit)
    this.settle(
      Exit.isSuccess(exit)
        ? exit.value
        : Effect.die(wire.serviceErrorDefect(
          new RemoteDefect({ service: this.service, method: this.method, message: "the reply could not be decoded" })
        ))
    )
  }

  /** the request was returned: said at once */
  returnedNow(): void {
    this.settle(Effect.die(wire.serviceErrorDefect(new ServiceNotFound({ service: this.service }))))
  }

  reply(answer: Answer): Effect.Effect<void> {
    return Effect.sync(() => this.answer(answer))
  }

  protected fail(error: ServiceError): Effect.Effect<void> {
    return Effect.sync(() => this.settle(Effect.die(wire.serviceErrorDefect(error))))
  }

  /**
   * publishes the request and waits for the answer; a caller that goes away stops the call. While it
   * waits, the wait's own cleanup says so. While the request is published (where an answer from this
   * process may already have come), the fiber's end does: an interrupted fiber always ends, and an
   * observer costs nothing when the publish returns first
   */
  run(fiber: Fiber.Fiber<unknown, unknown>, publish: Effect.Effect<void, BrokerError>): Effect.Effect<unknown, unknown> {
    const gone = () => {
      if (!this.done) Effect.runFork(this.cancel())
    }
    const leave = fiber.addObserver(gone)
    return Effect.flatMap(
      Effect.catch(publish, (error) => {
        leave()
        return Effect.die(wire.serviceErrorDefect(this.unsent(error)))
      }),
      () => {
        leave()
        return this.result !== undefined ? this.result : Effect.callback<unknown, unknown>((resume) => {
          this.resume = resume
          return Effect.suspend(() => this.cancel())
        })
      }
    )
  }
}

/** what the calls through one effect/rpc client share */
export interface Protocol {
  readonly write: (clientId: number, message: FromServerEncoded) => Effect.Effect<void>
  /** its calls by effect/rpc's request id */
  readonly pending: Map<RequestId, ProtocolCall>
  /** where a chunk's write waits for its reader */
  readonly scope: Scope.Scope
}

/** a call through effect/rpc's client: its answers are written to the client, chunk by chunk */
export class ProtocolCall extends PendingCall {
  readonly protocol: Protocol
  readonly requestId: RequestId
  readonly clientId: number
  constructor(
    calls: Calls,
    protocol: Protocol,
    service: string,
    method: string,
    correlationId: string,
    requestId: RequestId,
    clientId: number,
    timeoutMillis: number,
    sweep: number
  ) {
    super(calls, service, method, correlationId, timeoutMillis, sweep)
    this.protocol = protocol
    this.requestId = requestId
    this.clientId = clientId
  }

  override begin(deadline: number | undefined): void {
    this.protocol.pending.set(this.requestId, this)
    super.begin(deadline)
  }

  override forget(): void {
    if (this.protocol.pending.get(this.requestId) === this) this.protocol.pending.delete(this.requestId)
    super.forget()
  }

  private write(message: FromServerEncoded): Effect.Effect<void> {
    if (message._tag === "Exit") this.forget()
    // effect/rpc's write picks its target (the client's reader, or a buffer until the reader runs) when
    // it is called: it must be called when the write runs, not when it is built (a forked chunk write
    // built before the reader started would go to a buffer already replayed, and be lost)
    return Effect.suspend(() =>
      this.protocol.write(this.clientId, { ...message, requestId: this.requestId } as FromServerEncoded)
    )
  }

  reply(answer: Answer, instance: string | undefined): Effect.Effect<void> {
    // effect/rpc's client reads encoded answers only
    if (Exit.isExit(answer) || this.done) return Effect.void
    this.heard = true
    if (instance !== undefined) this.instance = instance
    // a chunk waits for its consumer to pull; it must not hold up other calls' replies.
    // Order is kept: the next chunk is only sent after this one is written and acked
    if (answer._tag === "Defect") {
      // one delivery is one protocol client on the server, so its defect is this call's: as an Exit, it
      // ends this call alone. effect/rpc's client would clear every call of the client, then fail to
      // decode a malformed defect, and leave this one waiting for ever
      return this.write({ _tag: "Exit", requestId: String(this.requestId), exit: { _tag: "Failure", cause: [{ _tag: "Die", defect: answer.defect }] } })
    }
    return answer._tag === "Chunk"
      ? Effect.asVoid(Effect.forkIn(this.write(answer), this.protocol.scope))
      : this.write(answer)
  }

  protected fail(error: ServiceError): Effect.Effect<void> {
    return this.write({ _tag: "Exit", requestId: String(this.requestId), exit: wire.serviceErrorExit(error) })
  }
}
