/**
 * The one declaration of a dead-letter queue, for rpc, command and event dead letters alike: bounded
 * as `DeadLetters.current` says, and bound to the mesh's dead-letter exchange under its own name.
 */
import { Clock, Duration, Effect } from "effect"
import type { Broker, BrokerError, Delivery } from "../Broker.ts"
import * as DeadLetters from "../DeadLetters.ts"
import * as events from "./events.ts"
import * as topology from "./topology.ts"

/**
 * Declares `queue` as a bounded dead-letter queue and binds it to `topology.deadLetterExchange`.
 *
 * A queue of that name declared before with other arguments (a deployment older than the bounds, or
 * other bounds) makes RabbitMQ answer PRECONDITION_FAILED: it is kept as it is, still bound, with a
 * warning saying how to bound it in place. Deleting it would lose the dead letters it holds.
 * Configuration that cannot be read is a defect: the service must not start on bounds nobody chose.
 */
export const declare = (broker: Broker["Service"], queue: string): Effect.Effect<void, BrokerError> =>
  Effect.gen(function*() {
    const bounds = yield* DeadLetters.current.pipe(
      Effect.mapError((error) => new Error(`dead-letter queue bounds: ${error.message}`)),
      Effect.orDie
    )
    const options = DeadLetters.queueOptions(bounds)
    yield* broker.declareQueue(queue, options).pipe(
      Effect.catchIf(
        (error) => error.reason === "Precondition",
        (error) => Effect.logWarning(mismatch(queue, options.maxLength ?? 0, options.messageTtl ?? 0, error.message))
      )
    )
    yield* broker.bindQueue(queue, topology.deadLetterExchange, queue)
  })

const mismatch = (queue: string, maxLength: number, ttl: number, message: string): string =>
  `dead-letter queue '${queue}' exists with other arguments (${message}): it is kept as it is and ` +
  `is not bounded to ${maxLength} messages for ${Duration.format(Duration.millis(ttl))}. Bound it in ` +
  `place with a policy: rabbitmqctl set_policy mesh-dead-letters '\\.dead$' ` +
  `'{"max-length":${maxLength},"message-ttl":${ttl},"overflow":"drop-head"}' --apply-to queues; ` +
  `or, once it is empty (mesh dlq ${queue} --replay or --purge), delete it and restart`

/**
 * Dead-letters a delivery of `queue` with the mesh's reason and error (what `DeadLetters.list` shows):
 * its body and properties go to `deadQueue` as they came, confirmed, with the reason in its headers,
 * and only then is it acked. A republish that fails leaves the broker's own dead-lettering
 * (`nack`, reason `rejected`): the message is never lost, nor sent back to the queue it failed in.
 */
export const deadLetter = (
  broker: Broker["Service"],
  delivery: Delivery,
  queue: string,
  deadQueue: string,
  reason: string,
  error: string
): Effect.Effect<void> =>
  Effect.flatMap(Clock.currentTimeMillis, (now) => {
    const props = delivery.properties
    return broker.publish("", deadQueue, delivery.body, {
      contentType: props.contentType,
      correlationId: props.correlationId,
      messageId: props.messageId,
      type: props.type,
      headers: {
        ...props.headers,
        [events.header.deathReason]: reason,
        [events.header.error]: error,
        [events.header.queue]: queue,
        [events.header.diedAt]: now
      },
      persistent: true,
      confirm: true
    }).pipe(
      Effect.matchCauseEffect({ onSuccess: () => delivery.ack, onFailure: () => delivery.nack(false) }),
      Effect.uninterruptible
    )
  })
