/**
 * The deadlines of calls in flight, watched by one fiber per owner (a client transport, a service
 * instance) instead of a timer and a race of two fibers per call, which is what `Effect.timeout`
 * costs. A call adds what to do when its deadline passes and removes it when it ends first, which is
 * the common case. Calls made with one timeout come with increasing deadlines, so the watcher seldom
 * re-arms: it sleeps until the earliest deadline it knows of, then looks again. It sleeps on the
 * effect `Clock`, so `TestClock` drives it.
 */
import { Cause, Effect } from "effect"
import type { Scope } from "effect"

/** a registered deadline; `index` is its place in the heap, -1 once removed or expired */
export interface Entry {
  readonly deadline: number
  readonly onExpire: Effect.Effect<void>
  index: number
}

export interface Deadlines {
  /** runs `onExpire` (in the watcher's fiber) once `deadline` (epoch millis) has passed */
  readonly add: (deadline: number, onExpire: Effect.Effect<void>) => Entry
  /** forgets a deadline; removing one that expired or was removed before does nothing */
  readonly remove: (entry: Entry) => void
}

/**
 * Starts a watcher that lives as long as the scope.
 */
export const make: Effect.Effect<Deadlines, never, Scope.Scope> = Effect.gen(function*() {
  const heap: Array<Entry> = []
  /** the deadline the watcher sleeps until (Infinity: until woken) */
  let armedFor = Number.POSITIVE_INFINITY
  let wake: (() => void) | undefined

  const swap = (i: number, j: number) => {
    const a = heap[i]
    const b = heap[j]
    heap[i] = b
    heap[j] = a
    b.index = i
    a.index = j
  }
  const up = (i: number) => {
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (heap[parent].deadline <= heap[i].deadline) return
      swap(i, parent)
      i = parent
    }
  }
  const down = (i: number) => {
    for (;;) {
      const left = 2 * i + 1
      const right = left + 1
      let least = i
      if (left < heap.length && heap[left].deadline < heap[least].deadline) least = left
      if (right < heap.length && heap[right].deadline < heap[least].deadline) least = right
      if (least === i) return
      swap(i, least)
      i = least
    }
  }
  const removeAt = (i: number) => {
    const entry = heap[i]
    const last = heap.pop()!
    if (last !== entry) {
      heap[i] = last
      last.index = i
      down(i)
      up(last.index)
    }
    entry.index = -1
  }

  const add = (deadline: number, onExpire: Effect.Effect<void>): Entry => {
    const entry: Entry = { deadline, onExpire, index: heap.length }
    heap.push(entry)
    up(entry.index)
    if (deadline < armedFor && wake !== undefined) wake()
    return entry
  }

  const remove = (entry: Entry): void => {
    if (entry.index >= 0) removeAt(entry.index)
  }

  const woken = Effect.callback<void>((resume) => {
    wake = () => {
      wake = undefined
      resume(Effect.void)
    }
    return Effect.sync(() => {
      wake = undefined
    })
  })

  const expire = (entry: Entry) =>
    Effect.catchCause(entry.onExpire, (cause) =>
      Cause.hasInterruptsOnly(cause) ? Effect.void : Effect.logError("a deadline could not be enforced", cause))

  const watch = Effect.forever(Effect.clockWith((clock) =>
    Effect.suspend(() => {
      const now = clock.currentTimeMillisUnsafe()
      const expired: Array<Entry> = []
      while (heap.length > 0 && heap[0].deadline <= now) {
        expired.push(heap[0])
        removeAt(0)
      }
      // then look again: what expired may have added deadlines (a periodic one adds its next)
      if (expired.length > 0) return Effect.forEach(expired, expire, { discard: true })
      armedFor = heap.length > 0 ? heap[0].deadline : Number.POSITIVE_INFINITY
      return heap.length > 0 ? Effect.raceFirst(Effect.sleep(armedFor - now), woken) : woken
    })
  ))
  yield* Effect.forkScoped(watch)
  return { add, remove }
})
