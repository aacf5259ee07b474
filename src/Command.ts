/**
 * Commands: a call of a service's rpc whose result nobody waits for (fire and forget, at least once).
 * A command travels as a request in the service's queue, marked so that the instance sends no reply:
 * it is admitted and run like any call (the same schema, size limit and context), acked when it
 * completes, and dead-lettered to the service's dead-letter queue when it fails. A sealed rpc's command
 * is sealed for the service's key, as a call is (Sealed.ts).
 *
 * ```ts
 * yield* Command.send(Audit, "record", { line: "daily report" })
 * ```
 *
 * @since 0.1.0
 */
import { Effect, Exit, Metric, Option, SchemaIssue } from "effect"
import type { Rpc } from "effect/rpc"
import { Broker } from "./Broker.ts"
import * as CallContext from "./CallContext.ts"
import * as Codecs from "./internal/codecs.ts"
import * as internal from "./internal/events.ts"
import * as Metrics from "./internal/metrics.ts"
import * as SealedKeys from "./internal/sealedKeys.ts"
import * as Sealing from "./internal/sealing.ts"
import * as topology from "./internal/topology.ts"
import * as wire from "./internal/wire.ts"
import type { ServiceContract } from "./ServiceContract.ts"
import { InvalidPayload, ServiceNotFound, TransportError } from "./ServiceError.ts"

const formatIssue = SchemaIssue.makeFormatterDefault()

/**
 * Sends a command: a call of a service's rpc whose result nobody waits for. It succeeds once the
 * broker has the request in the service's queue (it waits there when no instance runs); an instance
 * runs it and acks it when it completes, at least once. A command that fails goes to the service's
 * dead-letter queue.
 *
 * @since 0.1.0
 */
export const send = <
  const Name extends string,
  Rpcs extends Rpc.Any,
  const Tag extends Rpcs["_tag"]
>(
  contract: ServiceContract<Name, Rpcs>,
  method: Tag,
  payload: Rpc.PayloadConstructor<Extract<Rpcs, { readonly _tag: Tag }>>
): Effect.Effect<void, ServiceNotFound | InvalidPayload | TransportError, Broker> =>
  Effect.gen(function*() {
    const broker = yield* Broker
    const service = contract.name
    const rpc = contract.group.requests.get(method) as Rpc.AnyWithProps | undefined
    if (rpc === undefined) return yield* Effect.die(new globalThis.Error(`${service} has no method "${method}"`))
    const schema = rpc.payloadSchema
    const made = yield* Effect.mapError(
      schema.makeEffect(payload),
      (issue) => new InvalidPayload({ service, method, issue: formatIssue(issue) })
    )
    const codecs = Codecs.codecsOf(rpc)
    const encoded = codecs.encodePayload(made)
    if (Exit.isFailure(encoded)) {
      return yield* new InvalidPayload({
        service,
        method,
        issue: Option.match(Exit.findErrorOption(encoded), {
          onNone: () => "the payload could not be encoded",
          onSome: (error) => formatIssue(error.issue)
        })
      })
    }
    yield* topology.ensureCommon(broker).pipe(
      Effect.mapError((e) => new TransportError({ service, method, message: e.message }))
    )
    const id = crypto.randomUUID()
    // a sealed method's command is sealed for the service, as a call is (Sealed.ts); nobody answers it
    const plaintext = codecs.format.encode(encoded.value)
    const body = codecs.sealed
      ? Sealing.sealRequest(yield* SealedKeys.keyFor(broker, service, method), { service, method, correlationId: id }, plaintext).body
      : plaintext
    const contentType = codecs.sealed ? Sealing.contentTypeOf(codecs.format) : codecs.format.contentType
    const context = yield* internal.nextContext(service, method, id)
    // a producer's span, which the instance's span of the command is a child of
    yield* Effect.useSpan(
      `${service}.${method} send`,
      { kind: "producer", attributes: { "messaging.system": "rabbitmq", "messaging.operation.type": "send", "rpc.method": method } },
      (span) =>
        broker.publish(topology.rpcExchange, topology.rpcRoutingKey(service), body, {
          mandatory: true,
          confirm: true,
          persistent: true,
          // in its contract's format, as a call is
          contentType,
          type: method,
          correlationId: id,
          messageId: id,
          headers: {
            ...CallContext.toHeaders(context),
            [internal.header.command]: "true",
            [wire.header.traceparent]: wire.traceparent(span.traceId, span.spanId, span.sampled)
          }
        })
    ).pipe(
      Effect.mapError((e) =>
        e.reason === "Unroutable"
          ? new ServiceNotFound({ service })
          : new TransportError({ service, method, message: e.message })
      )
    )
    yield* Metric.update(Metrics.commandSent(service, method), 1)
  })
