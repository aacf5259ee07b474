/**
 * A cluster-wide lease on a single-active-consumer queue: of all the instances consuming the queue,
 * the broker delivers to one only, and a job runs on that one. Used by singleton timers and workers.
 *
 * - The broker's single-active-consumer rule is the lease. A "token" message in the queue is only how
 *   the active consumer learns that it is active (AMQP says nothing otherwise): whoever holds a token
 *   leads. Tokens are interchangeable, so duplicates are harmless (only the active consumer ever gets
 *   one), and the holder keeps the newest it received and acks the older ones, so they vanish.
 * - Every instance seeds a token when it starts consuming: the first consumer gets it and leads.
 * - The holder renews the lease every `lease / 4` by handing its token back (nack, requeue) and
 *   waiting up to `lease / 2` for a token to come back. A holder whose connection dropped while it
 *   lives (its consumer silently re-attached behind another) gets nothing back and stops its job, so
 *   it stops within `3/4 * lease` of losing the channel.
 * - A token that arrives `redelivered` was held by someone who did not release it (it died, or lost
 *   its channel and may still be running): the new holder waits `lease` before starting, by which time
 *   a live former holder has stopped. A leaving holder releases cleanly: it stops its job, cancels its
 *   consumer (another becomes active), publishes a fresh token (confirmed) and acks its own, so the
 *   next holder starts at once.
 */
import { Cause, Duration, Effect, Exit, Fiber, Queue, Scope, Stream } from "effect"
import type { Broker, BrokerError, Delivery } from "../Broker.ts"

export interface Options {
  /** the lease's queue: one fixed name per lease across the cluster */
  readonly queue: string
  /** see the module doc: bounds both failover and how long a deposed holder may still run */
  readonly lease: Duration.Duration
  /** who is asking, for the token and logs */
  readonly instanceId: string
}

/** unused for a day, the queue goes (with any token in it; the next instance to start seeds again) */
const queueExpires = 24 * 60 * 60 * 1000

/**
 * Runs `job` whenever this instance holds the lease, and interrupts it when the lease is lost. Never
 * ends; broker failures are logged and the lease is taken up again.
 */
export const run = <R>(
  broker: Broker["Service"],
  options: Options,
  job: Effect.Effect<void, never, R>
): Effect.Effect<never, never, R> => {
  const lease = Duration.toMillis(options.lease)
  const body = new TextEncoder().encode(JSON.stringify({ lease: options.queue, issuer: options.instanceId }))
  const publishToken = (confirm: boolean) =>
    broker.publish("", options.queue, body, {
      persistent: true,
      contentType: "application/json",
      ...(confirm ? { mandatory: true, confirm: true } : {})
    })

  const session = Effect.gen(function*() {
    // quorum: on a cluster the lease (its queue, its token) outlives the node it was declared on; a
    // classic queue would be gone with its node, and with it every instance's singleton job
    yield* broker.declareQueue(options.queue, {
      durable: true,
      type: "quorum",
      singleActiveConsumer: true,
      expires: queueExpires
    })
    const consumer = yield* broker.consume(options.queue, { prefetch: 2, tag: `lease:${options.instanceId}` })
    const inbox = yield* Stream.toQueue(consumer.deliveries, { capacity: "unbounded" })
    const scope = yield* Scope.Scope

    let held: Delivery | undefined
    let leader: Fiber.Fiber<void> | undefined

    /** keeps the newest token: an older one may sit on a channel that is gone, the newest cannot */
    const keep = (token: Delivery) =>
      Effect.suspend(() => {
        const previous = held
        held = token
        return previous === undefined ? Effect.void : previous.ack
      })
    // a token taken from the inbox is always kept: one dropped on the way would sit unacked on this
    // consumer, where nobody else can ever get it
    const take = Effect.uninterruptibleMask((restore) =>
      Effect.flatMap(restore(Queue.take(inbox)), (token) => Effect.as(keep(token), token))
    )
    const absorb = Effect.flatMap(Queue.clear(inbox), (tokens) => Effect.forEach(tokens, keep, { discard: true }))

    const stopJob = Effect.suspend(() => {
      const fiber = leader
      leader = undefined
      return fiber === undefined ? Effect.void : Fiber.interrupt(fiber)
    })

    /** hands the token back and waits for one: true while this consumer is the active one */
    const renew = Effect.gen(function*() {
      yield* absorb
      const token = held
      held = undefined
      if (token !== undefined) yield* token.nack(true)
      yield* Effect.timeoutOption(take, lease / 2)
      return held !== undefined
    })

    // added after the consumer, so it runs before the consumer closes (which would requeue the token)
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        yield* stopJob
        const token = held
        if (token === undefined) return
        yield* consumer.cancel
        const published = yield* Effect.exit(Effect.timeout(publishToken(true), "5 seconds"))
        // without a fresh token in the queue, closing the consumer requeues this one instead
        if (Exit.isSuccess(published)) yield* token.ack
      })
    )

    yield* Effect.ignore(publishToken(false))
    while (true) {
      const token = held ?? (yield* take)
      if (token.redelivered) yield* Effect.sleep(lease)
      while (yield* renew) {
        if (leader === undefined) {
          yield* Effect.logDebug("holding the lease")
          leader = yield* Effect.forkIn(job, scope)
        }
        yield* Effect.sleep(lease / 4)
      }
      if (leader !== undefined) yield* Effect.logWarning("lost the lease: stopping")
      yield* stopJob
    }
  })

  return session.pipe(
    Effect.scoped,
    Effect.catchCause((cause: Cause.Cause<BrokerError | Cause.Done>) =>
      Cause.hasInterruptsOnly(cause)
        ? Effect.interrupt
        : Effect.logWarning("the lease's consumer ended: taking it up again", cause)
    ),
    Effect.andThen(Effect.sleep(lease)),
    Effect.forever,
    Effect.annotateLogs({ lease: options.queue })
  )
}
