/**
 * Direct calls: a client and a service instance in one process, on a broker whose consumers all live
 * in this process (`MemoryBroker`), skip the queue and serialization. The instance's handler runs in a
 * fiber of the instance (with the instance's services, the caller's `CallContext` and a server span
 * whose parent is the caller's client span); its result goes back to the caller as it is.
 *
 * What the queue guarantees, the registry keeps: an instance runs at most `concurrency` requests at
 * once (its prefetch) and the others wait, first come first served, for whichever instance frees a
 * slot first; a caller's deadline fails the call with the caller's `CallTimeout` and interrupts the
 * handler (or takes the request out of the line, so it never runs); a stopping instance takes no new
 * requests, lets the running ones finish within its drain deadline and hands the rest to another
 * instance (or keeps them waiting for one, as the queue would).
 *
 * Only calls whose rpc is the very rpc the instance serves go direct (the same contract: nothing to
 * encode); streams, untyped calls and rpcs with middleware take the queue.
 */
import { Cause, Context, Deferred, Effect, Exit } from "effect"
import type { Fiber, Scope } from "effect"
import type { Rpc } from "effect/rpc"
import type { UnaryRequest, UnaryRunner } from "../BrokerRpcServer.ts"
import * as Deadlines from "./deadlines.ts"

/** one request, as a client hands it over (the instance's runner takes requests from its queue alike) */
export type Request = UnaryRequest

/** a running service instance's unary rpcs, as `Service.make` runs them (from its queue too) */
export type Instance = UnaryRunner

export interface Registration {
  /**
   * Takes no new requests, waits for the running ones (at most `timeout` millis), then hands what
   * is still running to another instance (its handler interrupted).
   */
  readonly drain: (timeoutMillis: number) => Effect.Effect<void>
}

export interface Registry {
  readonly register: (instance: Instance) => Registration
  /** whether every instance of the service in this process serves this very rpc (and there is one) */
  readonly serves: (service: string, rpc: Rpc.Any) => boolean
  /**
   * Runs a request on an instance of the service in this process, when one has a free slot (else the
   * request waits in line). The effect is `settle` of the handler's exit, or `timedOut` when
   * `deadline` (epoch millis) passes first.
   */
  readonly call: (
    service: string,
    request: Request,
    deadline: number | undefined,
    timedOut: Effect.Effect<never, unknown>,
    settle: (exit: Exit.Exit<unknown, unknown>) => Effect.Effect<unknown, unknown>
  ) => Effect.Effect<unknown, unknown>
}

// ---- the registry, as a service ----

/**
 * The direct calls of this process's broker: `MemoryBroker.layer` provides a registry, and instances
 * (`Service.make`) and clients (`BrokerRpcClient`) find it in their context. None by default: a
 * Reference, so that no public Layer type names it.
 */
export const LocalCalls = Context.Reference<Registry | undefined>("effect-mesh/internal/LocalCalls", {
  defaultValue: () => undefined
})

const waiting = 0
const running = 1
const done = 2

/** one call, from the caller's side: waiting for a slot, running, or done */
class LocalCall {
  state: 0 | 1 | 2 = waiting
  fiber: Fiber.Fiber<unknown, unknown> | undefined = undefined
  timer: Deadlines.Entry | undefined = undefined
  /** the instance stopped while it ran: the call goes to another one */
  requeue = false
  readonly request: Request
  readonly resume: (result: Effect.Effect<unknown, unknown>) => void
  readonly settle: (exit: Exit.Exit<unknown, unknown>) => Effect.Effect<unknown, unknown>
  constructor(
    request: Request,
    resume: (result: Effect.Effect<unknown, unknown>) => void,
    settle: (exit: Exit.Exit<unknown, unknown>) => Effect.Effect<unknown, unknown>
  ) {
    this.request = request
    this.resume = resume
    this.settle = settle
  }
}

/** the instances of one service and the calls waiting for a slot */
class LocalLine {
  readonly slots: Array<LocalInstance> = []
  next = 0
  readonly queue: Array<LocalCall> = []
  head = 0

  enqueue(call: LocalCall): void {
    this.queue.push(call)
  }

  /** the oldest call still waiting, if any */
  dequeue(): LocalCall | undefined {
    while (this.head < this.queue.length) {
      const call = this.queue[this.head++]
      if (call.state === waiting) {
        this.compact()
        return call
      }
    }
    this.compact()
    return undefined
  }

  private compact(): void {
    if (this.head === this.queue.length) {
      this.queue.length = 0
      this.head = 0
    } else if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head)
      this.head = 0
    }
  }
}

/** a registered instance and what it runs */
class LocalInstance {
  active = 0
  draining = false
  readonly calls = new Set<LocalCall>()
  idle: Deferred.Deferred<void> | undefined = undefined
  readonly instance: Instance
  readonly line: LocalLine
  constructor(instance: Instance, line: LocalLine) {
    this.instance = instance
    this.line = line
  }
}

/** a registry, for as long as the scope lasts */
export const make: Effect.Effect<Registry, never, Scope.Scope> = Effect.gen(function*() {
  const deadlines = yield* Deadlines.make
  const lines = new Map<string, LocalLine>()

  const lineOf = (service: string): LocalLine => {
    let line = lines.get(service)
    if (line === undefined) {
      line = new LocalLine()
      lines.set(service, line)
    }
    return line
  }

  const finish = (call: LocalCall, result: Effect.Effect<unknown, unknown>) => {
    call.state = done
    if (call.timer !== undefined) deadlines.remove(call.timer)
    call.resume(result)
  }

  const start = (slot: LocalInstance, call: LocalCall): void => {
    slot.active++
    slot.calls.add(call)
    call.state = running
    call.requeue = false
    const fiber = slot.instance.start(call.request)
    call.fiber = fiber
    fiber.addObserver((exit) => {
      slot.active--
      slot.calls.delete(call)
      if (call.state === running) {
        if (call.requeue && Exit.isFailure(exit) && Cause.hasInterrupts(exit.cause)) {
          call.state = waiting
          call.fiber = undefined
          dispatch(slot.line, call)
        } else {
          finish(call, call.settle(exit))
        }
      }
      if (slot.draining) {
        if (slot.active === 0 && slot.idle !== undefined) Deferred.doneUnsafe(slot.idle, Exit.void)
      } else {
        const next = slot.line.dequeue()
        if (next !== undefined) start(slot, next)
      }
    })
  }

  /** to the next instance with a free slot (round robin), else into the line */
  const dispatch = (line: LocalLine, call: LocalCall): void => {
    const count = line.slots.length
    for (let i = 0; i < count; i++) {
      const slot = line.slots[(line.next + i) % count]
      if (slot.active < slot.instance.concurrency) {
        line.next = (line.next + i + 1) % count
        start(slot, call)
        return
      }
    }
    line.enqueue(call)
  }

  const register = (instance: Instance): Registration => {
    const line = lineOf(instance.service)
    const slot = new LocalInstance(instance, line)
    line.slots.push(slot)
    // requests that waited for an instance (handed over by one that stopped) start here
    for (let free = instance.concurrency; free > 0; free--) {
      const call = line.dequeue()
      if (call === undefined) break
      start(slot, call)
    }
    const drain = (timeoutMillis: number) =>
      Effect.suspend(() => {
        slot.draining = true
        const index = line.slots.indexOf(slot)
        if (index >= 0) line.slots.splice(index, 1)
        if (slot.active === 0) return Effect.void
        slot.idle = Deferred.makeUnsafe<void>()
        return Effect.andThen(
          Effect.timeoutOption(Deferred.await(slot.idle), timeoutMillis),
          Effect.suspend(() => {
            const left = Array.from(slot.calls)
            if (left.length === 0) return Effect.void
            for (const call of left) call.requeue = true
            return Effect.andThen(
              Effect.logInfo(`${instance.service}: ${left.length} request(s) still running at shutdown go to another instance`),
              Effect.forEach(left, (call) => call.fiber === undefined ? Effect.void : interruptFiber(call.fiber), {
                discard: true
              })
            )
          })
        )
      })
    return { drain }
  }

  const serves = (service: string, rpc: Rpc.Any): boolean => {
    const line = lines.get(service)
    if (line === undefined || line.slots.length === 0) return false
    for (const slot of line.slots) if (slot.instance.rpcs.get(rpc._tag) !== rpc) return false
    return true
  }

  const call = (
    service: string,
    request: Request,
    deadline: number | undefined,
    timedOut: Effect.Effect<never, unknown>,
    settle: (exit: Exit.Exit<unknown, unknown>) => Effect.Effect<unknown, unknown>
  ): Effect.Effect<unknown, unknown> =>
    Effect.callback<unknown, unknown>((resume) => {
      const call = new LocalCall(request, resume, settle)
      if (deadline !== undefined) {
        call.timer = deadlines.add(
          deadline,
          Effect.suspend(() => {
            if (call.state === done) return Effect.void
            const fiber = call.fiber
            finish(call, timedOut)
            // the caller is told first; the handler learns it by its interruption
            return fiber === undefined ? Effect.void : interruptFiber(fiber)
          })
        )
      }
      dispatch(lineOf(service), call)
      // the caller went away (interrupted): the request leaves the line, or its handler is stopped
      return Effect.suspend(() => {
        if (call.state === done) return Effect.void
        const fiber = call.fiber
        call.state = done
        if (call.timer !== undefined) deadlines.remove(call.timer)
        return fiber === undefined ? Effect.void : interruptFiber(fiber)
      })
    })

  return { register, serves, call }
})

/** interrupts without waiting for the fiber to end (its observer settles the call) */
const interruptFiber = (fiber: Fiber.Fiber<unknown, unknown>): Effect.Effect<void> =>
  Effect.sync(() => fiber.interruptUnsafe())
