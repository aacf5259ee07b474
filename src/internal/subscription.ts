/**
 * A subscription's consumer loop, for every kind of subscription that runs a handler per message
 * (`Event.handle`, `Amqp.consume`): each delivery decoded by the settler (an invalid one is
 * dead-lettered at once), then run on the instance runner in a run of its own with the message's
 * context and span; acked when the handler succeeds, retried or dead-lettered when it fails. At most
 * `concurrency` run at once: the consumer's prefetch. Stopping drains the running handlers (those past
 * the deadline are interrupted and their messages put back) before the consumer closes.
 *
 * @internal
 */
import { Cause, Duration, Effect, Exit, Fiber, Schedule, Stream } from "effect"
import type { Scope } from "effect"
import type { Broker, BrokerError, Delivery } from "../Broker.ts"
import type { Metadata } from "../Event.ts"
import type * as Metrics from "./metrics.ts"
import * as Runner from "./runner.ts"
import type * as Settler from "./settler.ts"
import type * as Spans from "./spans.ts"

/** a failed message's retries, unless the subscription says otherwise: 4, exponential from 500 ms */
export const defaultRetry: Schedule.Schedule<unknown, unknown> = Schedule.max([
  Schedule.exponential("500 millis"),
  Schedule.recurs(4)
])

/** how long a stopping instance lets running handlers finish, unless the subscription says otherwise */
export const defaultDrainTimeout = Duration.seconds(10)

/** what the loop needs of a subscription */
export interface Loop<M extends Metadata> {
  readonly broker: Broker["Service"]
  readonly label: string
  readonly queue: string
  readonly concurrency: number
  readonly drainTimeout: Duration.Input
  /** the consumer's tag, for the broker's management views */
  readonly tag: string
  readonly settler: Settler.Settler
  /** the run's name (its span's), service and metrics */
  readonly service: string
  readonly runName: string
  readonly metrics: Metrics.RunMetrics
  /** what the handler gets besides the payload, from what the settler read */
  readonly metadata: (delivery: Delivery, metadata: Metadata) => M
  readonly span: (delivery: Delivery, metadata: M) => Spans.SpanOptions
  readonly handler: (payload: unknown, metadata: M) => Effect.Effect<unknown, unknown, unknown>
}

/** consumes the subscription's queue until the scope closes */
export const run = <M extends Metadata>(loop: Loop<M>): Effect.Effect<void, BrokerError, Scope.Scope> =>
  Effect.gen(function*() {
    const { broker, settler } = loop
    const consumer = yield* broker.consume(loop.queue, { prefetch: loop.concurrency, tag: loop.tag })
    // the handler's services are the entrypoint's, which the lane's runs get
    const lane = Runner.lane(yield* Effect.context<never>())
    const start = (delivery: Delivery): Effect.Effect<void> => {
      const decoded = settler.decode(delivery)
      if (decoded._tag === "Invalid") return settler.invalid(delivery, decoded.issue)
      const metadata = loop.metadata(delivery, decoded.metadata)
      return Effect.sync(() => {
        lane.start(
          {
            service: loop.service,
            name: loop.runName,
            context: metadata.context,
            span: loop.span(delivery, metadata),
            settledInSpan: true,
            metrics: loop.metrics
          },
          loop.handler(decoded.payload, metadata) as Effect.Effect<unknown, unknown, Scope.Scope>,
          (exit) => Exit.isSuccess(exit) ? delivery.ack : settler.failCause(delivery, exit.cause)
        )
      })
    }
    const fiber = yield* Stream.runForEach(consumer.deliveries, start).pipe(
      Effect.catchCause((cause) =>
        Cause.hasInterruptsOnly(cause)
          ? Effect.void
          : Effect.logError(`${loop.label}: the subscription stopped`, cause)
      ),
      Effect.forkScoped
    )
    // added last, so it runs first: running handlers finish (or are stopped and their messages put
    // back) before the consumer is closed
    yield* Effect.addFinalizer(() =>
      Effect.andThen(consumer.cancel, Effect.andThen(lane.drain(loop.drainTimeout), Fiber.interrupt(fiber)))
    )
  })
