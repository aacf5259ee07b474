/**
 * effect/rpc's `RpcServer.Protocol` over a `Broker`: how one service instance takes requests from its
 * queue and answers them.
 *
 * One delivery is one protocol client (as effect's HTTP protocol does), so a bad message or a defect
 * only ever affects its own call. The protocol answers what `RpcServer` cannot answer typed (an unknown
 * method, a body that is not JSON, a payload that fails its schema) itself, with the mesh's errors.
 * A delivery is acked only after its reply is published; a broker that fails the publish leaves it
 * unacked, so it is redelivered. Interrupts and stream acks come from callers over the control
 * exchange. `drain` stops taking requests, lets the running ones finish within a deadline, and puts
 * the rest back in the queue unanswered, for another instance. A request with the `x-mesh-command`
 * header (`Command.send`) needs no reply-to: it is acked when it completes and dead-lettered when it
 * fails.
 *
 * Every delivery is admitted once (internal/admission.ts). Unary rpcs without middleware (the hot
 * path) skip `RpcServer`: the instance's runner (`unary`) runs the handler in a fiber of its own, and
 * that fiber encodes the Exit with the rpc's schemas, publishes it and acks, in effect/rpc's wire format
 * all the same, written in the format the request came in (WireFormat.ts); a request that came as a value (a caller of this process, on the embedded broker) is
 * answered with a success as a value. Past its caller's deadline a call is stopped and its request
 * acked unanswered, as one that expired in the queue: the caller has told itself `CallTimeout`.
 * Streams and rpcs with middleware go through `RpcServer`.
 *
 * A sealed request (Sealed.ts) is opened at admission with the service's key, and everything answered
 * to it (its Exit, its chunks, a refusal of its payload) is sealed for its caller: the call's format is
 * a sealed one. One that does not open, or a request to a sealed rpc that is not sealed, is answered
 * with `InvalidPayload` and dead-lettered with the reason `sealed-refused`.
 *
 * @since 0.1.0
 */
import { Clock, Deferred, Duration, Effect, Exit, Option, Queue, Schema, SchemaIssue, Stream, Tracer } from "effect"
import type { Fiber, Scope } from "effect"
import { constVoid } from "effect/Function"
import type { RpcGroup, RpcSerialization } from "effect/rpc"
import { Rpc, RpcServer } from "effect/rpc"
import type { FromClientEncoded, FromServerEncoded } from "effect/rpc/RpcMessage"
import type { BrokerError, Delivery, LocalBody, QueueType } from "./Broker.ts"
import { Broker } from "./Broker.ts"
import * as CallContext from "./CallContext.ts"
import * as Admission from "./internal/admission.ts"
import * as Codecs from "./internal/codecs.ts"
import * as DeadLetterQueue from "./internal/deadLetterQueue.ts"
import type * as Formats from "./internal/formats.ts"
import * as Deadlines from "./internal/deadlines.ts"
import * as Identity from "./internal/identity.ts"
import * as Metrics from "./internal/metrics.ts"
import * as QueueTypes from "./internal/queueType.ts"
import * as topology from "./internal/topology.ts"
import * as wire from "./internal/wire.ts"
import type * as Sealed from "./Sealed.ts"
import type { ServiceError } from "./ServiceError.ts"

/**
 * @since 0.1.0
 */
export interface Options {
  readonly service: string
  readonly group: RpcGroup.RpcGroup<Rpc.Any>
  /** unacked requests this instance holds at once (the queue's prefetch) */
  readonly concurrency: number
  /** how long `drain` waits for running requests */
  readonly drainTimeout: Duration.Input
  /** unique per running instance: stream acks are routed to it */
  readonly instanceId: string
  /** the request queue's type (default `classic`; `Service.make` reads `MESH_QUEUE_TYPE` too) */
  readonly queueType?: QueueType | undefined
  /** on a quorum queue, after this many deliveries a request goes to the service's dead-letter queue */
  readonly deliveryLimit?: number | undefined
  /** the largest request body taken, in bytes (default 1 MiB); a larger one is refused undecoded */
  readonly maxMessageSize?: number | undefined
  /** the service's key: sealed requests are opened with it, and its sealed rpcs take nothing else (Sealed.ts) */
  readonly sealedKey?: Sealed.ServiceKey | undefined
  /**
   * the instance's unary rpcs, run without RpcServer (no client and request bookkeeping of its own,
   * no second decode); streams and the rest go through RpcServer
   */
  readonly unary?: UnaryRunner | undefined
}

/**
 * One unary request as the instance's runner takes it, from the queue or from a caller in the same
 * process.
 *
 * @since 0.1.0
 */
export interface UnaryRequest {
  readonly rpc: Rpc.AnyWithProps
  /** the payload, made by the payload schema (as effect/rpc's client makes it) */
  readonly payload: unknown
  /** what the handler sees as effect/rpc's request headers (names in lower case), made on demand */
  readonly headers: () => Readonly<Record<string, string>>
  readonly context: CallContext.CallContext
  /** the caller's client span: the parent of the handler's server span */
  readonly span: Tracer.AnySpan | undefined
}

/**
 * A running instance's unary rpcs without middleware, as `Service.make` runs them: each request in a
 * fiber of its own with the instance's services, the caller's `CallContext` and a server span.
 *
 * @since 0.1.0
 */
export interface UnaryRunner {
  readonly service: string
  /** the rpcs it serves, by tag */
  readonly rpcs: ReadonlyMap<string, Rpc.Any>
  /**
   * runs one request in a fiber of its own; the fiber's exit is the caller's result. `onExit` runs in
   * that fiber once the handler ended (even interrupted), before the request's scope closes
   */
  readonly start: (
    request: UnaryRequest,
    onExit?: (exit: Exit.Exit<unknown, unknown>) => Effect.Effect<void>
  ) => Fiber.Fiber<unknown, unknown>
}

/**
 * A server protocol and the way to stop it gracefully.
 *
 * @since 0.1.0
 */
export interface BrokerRpcServer {
  readonly protocol: RpcServer.Protocol["Service"]
  readonly drain: Effect.Effect<void>
}

const formatIssue = SchemaIssue.makeFormatterDefault()

/** the reason a sealed request refused unopened is dead-lettered with (`DeadLetters.list` shows it) */
const sealedRefused = "sealed-refused"

const eof: FromClientEncoded = { _tag: "Eof" }

type ExitEncoded = Extract<FromServerEncoded, { readonly _tag: "Exit" }>["exit"]

const ignored = { onFailure: constVoid, onSuccess: constVoid }

/** what answers a call: effect/rpc's message, or a success as a value (for a caller of this process) */
type Answer = FromServerEncoded | LocalBody

/**
 * The Exit of a unary call in effect/rpc's encoded form, with the rpc's own schemas. A result they
 * cannot encode (an error the contract does not declare) becomes a defect saying so, as RpcServer
 * answers it; the second element is then that message, to log.
 */
const encodeExit = (rpc: Rpc.AnyWithProps, exit: Exit.Exit<unknown, unknown>): readonly [ExitEncoded, string | undefined] => {
  const encoded = Codecs.codecsOf(rpc).encodeExit(exit)
  if (Exit.isSuccess(encoded)) return [encoded.value as ExitEncoded, undefined]
  const issue = Option.match(Exit.findErrorOption(encoded), {
    onNone: () => "it could not be encoded",
    onSome: (error) => formatIssue(error.issue)
  })
  const message = `Failed to encode response for RPC "${rpc._tag}": ${issue}`
  return [{ _tag: "Failure", cause: [{ _tag: "Die", defect: message }] }, message]
}

/** a success as the value it is, and its bytes for whoever reads them */
/** why an answer is a failure, for a failed command's warning: a mesh error's message, or the error's */
const failureOf = (answer: Answer): string => {
  if (answer._tag !== "Exit" || answer.exit._tag === "Success") return "interrupted"
  for (const reason of answer.exit.cause) {
    if (reason._tag === "Interrupt") continue
    const failure = reason._tag === "Fail" ? reason.error : reason.defect
    const meshError = wire.serviceErrorOfDefect(failure)
    if (Option.isSome(meshError)) return meshError.value.message
    const fields = typeof failure === "object" && failure !== null ? failure as Record<string, unknown> : {}
    return typeof fields["message"] === "string" ? fields["message"] : typeof fields["_tag"] === "string" ? fields["_tag"] : String(failure)
  }
  return "interrupted"
}

const localAnswer = (rpc: Rpc.AnyWithProps, requestId: string, exit: Exit.Exit<unknown, unknown>): LocalBody => ({
  _tag: "LocalBody",
  value: exit,
  bytes: () => wire.encodeJson({ _tag: "Exit", requestId, exit: encodeExit(rpc, exit)[0] })
})

/** what RpcServer decodes a payload with: the protocol has decoded it already */
const alreadyDecoded = Schema.Any

interface RunningRequest {
  readonly delivery: Delivery
  readonly replyTo: string
  readonly requestId: string
  /** a command (`Command.send`): acked when it completes, never answered */
  readonly command: boolean
  /** the caller's deadline, while it is watched */
  timer: Deadlines.Entry | undefined
  /** the handler's fiber, when the call runs on the unary runner */
  fiber: Fiber.Fiber<unknown, unknown> | undefined
  /** the request came as a value: a success is answered as one */
  readonly local: boolean
  /** the format its answer is written in: the request's */
  readonly format: Formats.BodyFormat
  /** its method's metrics, and when it began (`performance.now()`) */
  readonly metrics: Metrics.RunMetrics
  readonly startedAt: number
}

/**
 * Declares the service's queues and starts consuming them. The protocol buffers requests until
 * `RpcServer` runs it.
 *
 * @since 0.1.0
 */
export const make: (options: Options) => Effect.Effect<BrokerRpcServer, BrokerError, Broker | Scope.Scope> = Effect
  .fnUntraced(function*(options: Options) {
    const broker = yield* Broker
    const service = options.service
    yield* topology.declareCommon(broker)
    const queue = topology.rpcQueue(service)
    const deadQueue = topology.rpcDeadLetterQueue(service)
    yield* DeadLetterQueue.declare(broker, deadQueue)
    const queueType = options.queueType ?? QueueTypes.defaults.requests
    yield* broker.declareQueue(queue, {
      durable: true,
      deadLetterExchange: topology.deadLetterExchange,
      deadLetterRoutingKey: deadQueue,
      ...QueueTypes.options(queueType, options.deliveryLimit ?? 5)
    }).pipe(Effect.catch(QueueTypes.refused(queue, queueType)))
    yield* broker.bindQueue(queue, topology.rpcExchange, topology.rpcRoutingKey(service))
    const controlQueue = yield* broker.declareQueue("", { exclusive: true, autoDelete: true })
    yield* broker.bindQueue(controlQueue, topology.controlExchange, topology.controlServiceKey(service))
    yield* broker.bindQueue(controlQueue, topology.controlExchange, topology.controlInstanceKey(options.instanceId))

    const calls = new Map<number, RunningRequest>()
    let nextClientId = 0
    let draining = false
    let idle: Deferred.Deferred<void> | undefined
    const disconnects = yield* Queue.unbounded<number>()
    // only a chunk names this instance: its ack must come back here; after an Exit nothing does
    const chunkHeaders = { [wire.header.instance]: options.instanceId }

    // past its caller's deadline nobody waits for a call's answer: the work is stopped and the
    // caller told why. One watcher for every call, rather than a timer and a race of fibers per call
    const deadlines = yield* Deadlines.make
    const clock = yield* Clock.Clock

    // each method's metrics, made once (internal/metrics.ts); removed with the instance
    const services = yield* Effect.context<never>()
    const metrics = Metrics.rpcServers(service, services)
    yield* Effect.addFinalizer(() => Effect.sync(metrics.remove))

    /** the call is over, with this outcome: it leaves the calls, its deadline is not watched */
    const forget = (clientId: number, call: RunningRequest, outcome: Exit.Exit<unknown, unknown>) => {
      call.metrics.end(outcome, (performance.now() - call.startedAt) / 1000, services)
      calls.delete(clientId)
      if (call.timer !== undefined) deadlines.remove(call.timer)
      if (idle !== undefined && calls.size === 0) Deferred.doneUnsafe(idle, Exit.void)
    }

    const publishReply = (replyTo: string, requestId: string, message: Answer, format: Formats.BodyFormat) =>
      broker.publish("", replyTo, message._tag === "LocalBody" ? message : format.encode(message), {
        correlationId: requestId,
        contentType: format.contentType,
        headers: message._tag === "Chunk" ? chunkHeaders : undefined
      })

    // a command has nobody to answer: acked once it ran, dead-lettered when it failed
    const settleCommand = (call: RunningRequest, message: Answer) =>
      message._tag === "LocalBody" || (message._tag === "Exit" && message.exit._tag === "Success")
        ? call.delivery.ack
        : Effect.andThen(
          Effect.logWarning(`${service}: command ${call.requestId} (${call.delivery.properties.type}) dead-lettered: ${failureOf(message)}`),
          call.delivery.nack(false)
        )

    // the reply is published first; only then is the request acked, on its own channel
    const finish = (clientId: number, call: RunningRequest, message: Answer) => {
      forget(clientId, call, Metrics.outcomeOfAnswer(message))
      if (call.command) return settleCommand(call, message)
      return publishReply(call.replyTo, call.requestId, message, call.format).pipe(
        Effect.matchCauseEffect({
          onSuccess: () => call.delivery.ack,
          onFailure: (cause) =>
            Effect.andThen(
              Effect.logWarning(`could not reply to ${service} request ${call.requestId}; leaving it to redelivery`, cause),
              call.delivery.nack(true)
            )
        })
      )
    }

    const answer = (delivery: Delivery, replyTo: string, requestId: string, error: ServiceError, format: Formats.BodyFormat) =>
      replyTo === ""
        ? Effect.andThen(
          Effect.logWarning(`${service}: command ${requestId} dead-lettered: ${error.message}`),
          delivery.nack(false)
        )
        : publishReply(replyTo, requestId, { _tag: "Exit", requestId, exit: wire.serviceErrorExit(error) }, format).pipe(
        Effect.matchCauseEffect({
          onSuccess: () => delivery.ack,
          onFailure: () => delivery.nack(true)
        })
      )

    // a sealed request that did not open (or a request to a sealed rpc that was not sealed): the caller
    // is told, the message kept in the dead-letter queue with why, and the instance goes on
    const refuseSealed = (delivery: Delivery, refused: Admission.Refused, issue: string) =>
      Effect.andThen(
        Effect.andThen(
          Effect.logWarning(`${service}: sealed request ${refused.requestId} (${delivery.properties.type}) dead-lettered: ${issue}`),
          refused.replyTo === ""
            ? Effect.void
            : Effect.ignore(publishReply(refused.replyTo, refused.requestId, { _tag: "Exit", requestId: refused.requestId, exit: wire.serviceErrorExit(refused.error) }, refused.format))
        ),
        DeadLetterQueue.deadLetter(broker, delivery, queue, deadQueue, sealedRefused, issue)
      )

    // the payload is decoded here, once: a payload that fails its schema is answered with the mesh's
    // `InvalidPayload`, and RpcServer gets the decoded value with a codec that passes it through
    const payloadSchemas = new Set<unknown>()
    for (const rpc of options.group.requests.values()) payloadSchemas.add((rpc as Rpc.AnyWithProps).payloadSchema)
    const codecFor: RpcSerialization.CodecFor = (schema) =>
      payloadSchemas.has(schema) ? alreadyDecoded as Schema.Codec<never, unknown> : Schema.toCodecJson(schema)

    let writeRequest!: (clientId: number, message: FromClientEncoded) => Effect.Effect<void>
    let writeRequestAndEof!: (clientId: number, request: FromClientEncoded) => Effect.Effect<void>

    // every delivery is admitted once (internal/admission.ts); what `take` declines keeps its answer
    // for `onDelivery`, which settles it
    const admit = Admission.make(service, options.group, options.maxMessageSize ?? wire.defaultMaxMessageSize, options.sealedKey?.key)
    const now = () => clock.currentTimeMillisUnsafe()
    const declined = new WeakMap<Delivery, Admission.Admission>()

    /**
     * The common case, taken in the transport's callback: an admitted request for a unary rpc starts
     * on the runner at once, without a hop through the deliveries' stream. Anything else is left to
     * `onDelivery`, with its admission.
     */
    const take = (delivery: Delivery): boolean => {
      const runner = options.unary
      if (runner === undefined || draining) return false
      const admission = admit(delivery, now)
      if (admission._tag === "Admitted" && !admission.command && runner.rpcs.has(admission.rpc._tag)) {
        const { call, clientId } = register(delivery, admission, false)
        watchDeadline(clientId, call, admission)
        startUnary(runner, clientId, call, admission)
        return true
      }
      declined.set(delivery, admission)
      return false
    }

    const onDelivery = (delivery: Delivery): Effect.Effect<void> => {
      // on a broker that hands every delivery to the stream, the common case is taken here
      const admission = declined.get(delivery)
      if (admission === undefined && take(delivery)) return Effect.void
      const admitted = admission ?? declined.get(delivery) ?? admit(delivery, now)
      declined.delete(delivery)
      switch (admitted._tag) {
        case "Unanswerable":
          return Effect.andThen(
            Effect.logWarning(`${service}: a message without reply-to or correlation id was dead-lettered`),
            delivery.nack(false)
          )
        case "Expired":
          // the caller has given up: running it now would be wasted work
          return Effect.andThen(Effect.logDebug(`${service}.${admitted.method}: dropped a request past its deadline`), delivery.ack)
        case "Refused":
          if (draining) return delivery.nack(true)
          return admitted.deadLetter === undefined
            ? answer(delivery, admitted.replyTo, admitted.requestId, admitted.error, admitted.format)
            : refuseSealed(delivery, admitted, admitted.deadLetter)
      }
      if (draining) return delivery.nack(true)
      const started = start(delivery, admitted)
      watchDeadline(started.clientId, started.call, admitted)
      return started.write
    }

    /**
     * Past its caller's deadline, a call is given up as a request that expired in the queue is: its
     * handler stopped, the request acked unanswered (its caller has told itself `CallTimeout`), a
     * command dead-lettered. What RpcServer answers for the interrupted call then finds no call.
     */
    const watchDeadline = (clientId: number, call: RunningRequest, admitted: Admission.Admitted) => {
      if (Number.isFinite(admitted.deadline)) call.timer = deadlines.add(admitted.deadline, expire(clientId, admitted.rpc._tag))
    }

    const expire = (clientId: number, method: string) =>
      Effect.suspend(() => {
        const call = calls.get(clientId)
        if (call === undefined) return Effect.void
        forget(clientId, call, Metrics.pastDeadline)
        const settle = call.command
          ? Effect.andThen(
            Effect.logWarning(`${service}: command ${call.requestId} (${method}) ran past its deadline; dead-lettered`),
            call.delivery.nack(false)
          )
          : Effect.andThen(Effect.logDebug(`${service}.${method}: stopped a request past its deadline`), call.delivery.ack)
        return Effect.andThen(settle, stop(clientId, call))
      })

    /** interrupts a call's handler, wherever it runs */
    const stop = (clientId: number, call: RunningRequest): Effect.Effect<void> =>
      call.fiber === undefined
        ? writeRequest(clientId, { _tag: "Interrupt", requestId: call.requestId })
        : Effect.sync(() => call.fiber?.interruptUnsafe())

    /** runs a unary call on the runner; the fiber answers it as it ends (unless it was answered already) */
    const startUnary = (runner: UnaryRunner, clientId: number, call: RunningRequest, admitted: Admission.Admitted): void => {
      const { local, rpc } = admitted
      const properties = call.delivery.properties
      const traceparent = local === undefined ? wire.stringHeader(properties.headers, wire.header.traceparent) : undefined
      const parent = wire.parseTraceparent(traceparent)
      call.fiber = runner.start({
        rpc,
        payload: admitted.payload,
        // made when the handler reads them (DirectOptions keeps them)
        headers: () => wire.stringHeaders(properties.headers),
        context: Identity.verify(
          local?.context ?? CallContext.fromHeader(wire.stringHeader(properties.headers, CallContext.headerNames.context)),
          properties.userId
        ),
        span: local !== undefined ? local.span : parent === undefined ? undefined : Tracer.externalSpan(parent)
      }, (exit) => {
        if (calls.get(clientId) !== call) return Effect.void
        // a success for a caller of this process goes back as the value it is
        if (call.local && Exit.isSuccess(exit)) return finish(clientId, call, localAnswer(rpc, call.requestId, exit))
        const [encoded, failure] = encodeExit(rpc, exit)
        const answer = finish(clientId, call, { _tag: "Exit", requestId: call.requestId, exit: encoded })
        return failure === undefined ? answer : Effect.andThen(Effect.logError(`${service}: ${failure}`), answer)
      })
    }

    const register = (delivery: Delivery, admitted: Admission.Admitted, command: boolean) => {
      const clientId = nextClientId++
      const { replyTo, requestId } = admitted
      // correlation ids are unique per caller process and beyond (BrokerRpcClient): the key of a call
      const callMetrics = metrics.of(admitted.rpc._tag)
      const call: RunningRequest = {
        delivery,
        replyTo,
        requestId,
        command,
        timer: undefined,
        fiber: undefined,
        local: admitted.local !== undefined,
        format: admitted.format,
        metrics: callMetrics,
        startedAt: performance.now()
      }
      callMetrics.begin(services)
      calls.set(clientId, call)
      return { call, clientId }
    }

    const start = (
      delivery: Delivery,
      admitted: Admission.Admitted
    ): { readonly call: RunningRequest; readonly clientId: number; readonly write: Effect.Effect<void> } => {
      const { command, payload, requestId } = admitted
      const method = admitted.rpc._tag
      const headers = delivery.properties.headers
      const { call, clientId } = register(delivery, admitted, command)
      const unary = options.unary
      if (unary !== undefined && unary.rpcs.has(method)) {
        return { call, clientId, write: Effect.sync(() => startUnary(unary, clientId, call, admitted)) }
      }
      const parent = wire.parseTraceparent(wire.stringHeader(headers, wire.header.traceparent))
      const request: FromClientEncoded = {
        _tag: "Request",
        id: requestId,
        tag: method,
        payload,
        headers: Identity.requestHeaders(headers, delivery.properties.userId),
        ...parent
      }
      return { call, clientId, write: writeRequestAndEof(clientId, request) }
    }

    const onControl = (delivery: Delivery): Effect.Effect<void> => {
      const message = Option.filter(wire.decodeJson(delivery.body), wire.isControl)
      if (Option.isNone(message)) return delivery.ack
      // the calls it holds are at most its prefetch, and control messages few: found by a look at each
      const found = Array.from(calls).find(([, running]) => running.requestId === message.value.requestId)
      if (found === undefined) return delivery.ack
      const [clientId, call] = found
      // a unary call has nothing to acknowledge; its interrupt stops its fiber
      if (call.fiber !== undefined) {
        return Effect.andThen(message.value._tag === "Interrupt" ? stop(clientId, call) : Effect.void, delivery.ack)
      }
      const write = message.value._tag === "Interrupt"
        ? writeRequest(clientId, { _tag: "Interrupt", requestId: message.value.requestId })
        : writeRequest(clientId, { _tag: "Ack", requestId: message.value.requestId })
      // a late control message for a finished call makes RpcServer answer with an interrupt: ignore it
      return Effect.andThen(Effect.exit(write), delivery.ack)
    }

    const protocol = yield* RpcServer.Protocol.make((write) => {
      writeRequest = (clientId, message) => Effect.matchCause(write(clientId, message), ignored)
      // the request and its end: this client sends nothing else (interrupts come as control messages)
      writeRequestAndEof = (clientId, request) =>
        Effect.matchCause(Effect.andThen(write(clientId, request), write(clientId, eof)), ignored)
      return Effect.succeed({
        disconnects,
        send: (clientId: number, response: FromServerEncoded): Effect.Effect<void> => {
          const call = calls.get(clientId)
          if (call === undefined) return Effect.void
          switch (response._tag) {
            case "Chunk":
              // a command's stream is drained, not sent: acknowledge each chunk on the caller's behalf
              if (call.command) return writeRequest(clientId, { _tag: "Ack", requestId: call.requestId })
              return Effect.ignore(publishReply(call.replyTo, call.requestId, response, call.format))
            case "Exit":
              return finish(clientId, call, response)
            case "Defect":
              return finish(clientId, call, {
                _tag: "Exit",
                requestId: call.requestId,
                exit: { _tag: "Failure", cause: [{ _tag: "Die", defect: response.defect }] }
              })
            default:
              return Effect.void
          }
        },
        end: (clientId: number) => {
          const call = calls.get(clientId)
          if (call !== undefined) forget(clientId, call, Metrics.interrupted)
          return Effect.void
        },
        clientIds: Effect.sync(() => new Set(calls.keys())),
        initialMessage: Effect.succeedNone,
        supportsAck: true,
        supportsTransferables: false,
        supportsSpanPropagation: true,
        supportsNotifications: false,
        codecFor
      })
    })

    // take must never throw in the transport's callback: whatever throws goes the long way, guarded
    const takeSafely = Option.liftThrowable(take)
    const requests = yield* broker.consume(queue, {
      prefetch: options.concurrency,
      tag: `${service}.${options.instanceId}`,
      take: (delivery) => Option.getOrElse(takeSafely(delivery), () => false)
    })
    const control = yield* broker.consume(controlQueue, { prefetch: 256, tag: `${service}.control` })
    // a delivery whose handling dies (even as its effect is built) is logged and dead-lettered (a
    // no-op if it was settled already); the consumer goes on
    const guard = (f: (d: Delivery) => Effect.Effect<void>) => (d: Delivery) =>
      Effect.catchCause(
        Effect.suspend(() => f(d)),
        (cause) => Effect.andThen(Effect.logError(`${service}: a delivery could not be handled`, cause), d.nack(false))
      )
    yield* requests.deliveries.pipe(Stream.runForEach(guard(onDelivery)), Effect.forkScoped)
    yield* control.deliveries.pipe(Stream.runForEach(guard(onControl)), Effect.forkScoped)

    const drain = Effect.gen(function*() {
      draining = true
      yield* requests.cancel
      if (calls.size > 0) {
        idle = Deferred.makeUnsafe<void>()
        yield* Effect.timeoutOption(Deferred.await(idle), options.drainTimeout)
      }
      const left = Array.from(calls.entries())
      if (left.length > 0) {
        yield* Effect.logInfo(`${service}: ${left.length} request(s) still running at shutdown go back to the queue`)
      }
      for (const [clientId, call] of left) {
        forget(clientId, call, Metrics.interrupted)
        yield* call.delivery.nack(true)
        // RpcServer's calls stop when it does; a unary call's fiber is stopped here
        if (call.fiber !== undefined) call.fiber.interruptUnsafe()
      }
    })

    return { protocol, drain }
  })

/**
 * The default drain deadline.
 *
 * @since 0.1.0
 */
export const defaultDrainTimeout: Duration.Duration = Duration.seconds(10)
