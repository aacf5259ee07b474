/**
 * Server-Sent Events at the edge, both ways.
 *
 * Out to browsers: `Sse.response` turns any `Stream` of events into a `text/event-stream` answer
 * (with heartbeat comments so proxies keep it open), `Sse.layerHub` serves the hub's channels at
 * `/sse/<channel>`, so an `EventSource` gets the broadcasts that WebSocket subscribers get, and
 * `Sse.layerEvent` streams a mesh `Event` as it is published. (A streaming RPC reaches browsers as SSE
 * through `HttpGateway`'s `/rpc/<service>/<method>`.)
 *
 * In from the outside world (farine's HTTP stream): `Sse.source(url)` reads an external SSE endpoint
 * as a `Stream`, reconnecting with `Last-Event-ID` and honouring the server's `retry:`, and
 * `Sse.entrypoint` runs it inside a service, so each event becomes a call, an event published on the
 * mesh, a broadcast.
 *
 * ```ts
 * Service.make(Prices, {
 *   handlers,
 *   entrypoints: [
 *     Sse.entrypoint("ticker", { url: "https://example.com/ticks", schema: Schema.fromJsonString(Tick) },
 *       (event) => Hub.broadcast("ticks", "tick", event.data))
 *   ]
 * })
 * ```
 *
 * @since 0.1.0
 */
import { Cause, Duration, Effect, Layer, PubSub, Schedule, Schema, Stream } from "effect"
import type { Scope } from "effect"
import { Sse as SseEncoding } from "effect/encoding"
import type { HttpClientError } from "effect/http"
import { HttpClient, HttpClientRequest, HttpRouter, HttpServerResponse } from "effect/http"
import type { Broker, BrokerError } from "./Broker.ts"
import * as MeshEvent from "./Event.ts"
import { Hub, isValidChannel } from "./Hub.ts"
import * as edge from "./internal/edge.ts"
import * as Service from "./Service.ts"

// ---- models ----

/**
 * One event: its type (`message` when absent), its id, and its data (text; JSON by convention).
 *
 * @since 0.1.0
 */
export interface Event {
  readonly event?: string | undefined
  readonly id?: string | undefined
  readonly data: string
}

/**
 * An event read from a source, with its data decoded.
 *
 * @since 0.1.0
 */
export interface Received<A> {
  readonly event: string
  readonly id: string | undefined
  readonly data: A
}

/**
 * Why reading a source failed (`reason`): the request or the connection failed (`Request`), the server
 * did not answer 200 with `text/event-stream` (`Status`), a line was longer than `maxLineSize`
 * (`LineTooLong`) or an event larger than `maxEventSize` (`EventTooLarge`).
 *
 * @since 0.1.0
 */
export class SseSourceError extends Schema.TaggedError<SseSourceError>()("SseSourceError", {
  url: Schema.String,
  reason: Schema.Literals(["Request", "Status", "LineTooLong", "EventTooLarge"]),
  message: Schema.String
}) {}

/**
 * The limits of a source when its options do not set them: a line of 64 KiB, an event of 1 MiB.
 *
 * @since 0.1.0
 */
export const limits = {
  maxLineSize: 64 * 1024,
  maxEventSize: 1024 * 1024
} as const

/**
 * Options of `source`.
 *
 * @since 0.1.0
 */
export interface SourceOptions {
  /** extra request headers (authorization...) */
  readonly headers?: Readonly<Record<string, string>> | undefined
  /**
   * when to reconnect after the stream ends or fails (default: every second, forever; a server's
   * `retry:` sets the delay of the next attempt); `false` reads one connection and surfaces its error
   */
  readonly reconnect?: Schedule.Schedule<unknown, unknown> | false | undefined
  /** the longest line read, in bytes (default 64 KiB): a longer one fails the connection with `LineTooLong` */
  readonly maxLineSize?: number | undefined
  /** the largest event read, its lines together in bytes (default 1 MiB): a larger one fails the connection with `EventTooLarge` */
  readonly maxEventSize?: number | undefined
}

// ---- out: responses ----

const encoder = new TextEncoder()

/**
 * Encodes one event as SSE text.
 *
 * @since 0.1.0
 */
export const encode = (event: Event): Uint8Array =>
  encoder.encode(SseEncoding.encoder.write({ _tag: "Event", event: event.event ?? "message", id: event.id, data: event.data }))

/**
 * A `text/event-stream` response streaming the events, with a comment every `heartbeat` (default 15
 * seconds) while nothing else is sent.
 *
 * @since 0.1.0
 */
export const response = <E>(
  events: Stream.Stream<Event, E>,
  options?: {
    readonly heartbeat?: Duration.Input | undefined
    readonly headers?: Readonly<Record<string, string>> | undefined
  }
): HttpServerResponse.HttpServerResponse => {
  const heartbeat = Stream.tick(options?.heartbeat ?? "15 seconds").pipe(
    Stream.drop(1),
    Stream.map(() => encoder.encode(": heartbeat\n\n"))
  )
  const body = Stream.map(events, encode).pipe(Stream.merge(heartbeat, { haltStrategy: "left" }))
  return HttpServerResponse.stream(body, {
    contentType: "text/event-stream",
    headers: { "cache-control": "no-cache", ...options?.headers }
  })
}

/**
 * Serves the hub's channels as SSE at `path` (default `/sse/:channel`): first a `connected` event once
 * the channel's broadcasts are routed to this instance, then one event per broadcast (its event name,
 * its data as JSON, a sequence number as id).
 *
 * @since 0.1.0
 */
export const layerHub = (options?: {
  readonly path?: `/${string}:channel${string}` | undefined
  readonly heartbeat?: Duration.Input | undefined
}): Layer.Layer<never, never, HttpRouter.HttpRouter | Hub> =>
  Layer.effectDiscard(Effect.gen(function*() {
    const router = yield* HttpRouter.HttpRouter
    const hub = yield* Hub
    yield* router.add(
      "GET",
      options?.path ?? "/sse/:channel",
      Effect.map(HttpRouter.params, (params) => {
        const channel = params["channel"] ?? ""
        if (!isValidChannel(channel)) return edge.badRequest(`invalid channel name "${channel}"`)
        let n = 0
        // subscribed before the first event: `connected` means "broadcasts from now on reach you"
        const events = Stream.unwrap(Effect.map(hub.subscribe(channel), (messages) =>
          Stream.concat(
            Stream.succeed<Event>({ event: "connected", data: JSON.stringify({ channel }) }),
            Stream.map(messages, (message): Event => ({
              event: message.event,
              id: String(n++),
              data: JSON.stringify(message.data)
            }))
          )))
        return response(events, { heartbeat: options?.heartbeat })
      })
    )
  }))

/**
 * Serves a mesh event at `path` as SSE: every event published (by any service, on any instance) is
 * sent to every connected client, its payload encoded as JSON by the event's schema, the event's
 * type as the SSE event name. The gateway instance gets its own `broadcast` subscription, which lives
 * as long as the Layer.
 *
 * @since 0.1.0
 */
export const layerEvent = <Source extends string, Type extends string, S extends Schema.Top>(
  event: MeshEvent.Event<Source, Type, S>,
  options: {
    readonly path: HttpRouter.PathInput
    readonly heartbeat?: Duration.Input | undefined
  }
): Layer.Layer<never, BrokerError, HttpRouter.HttpRouter | Broker | S["EncodingServices"]> =>
  Layer.unwrap(Effect.gen(function*() {
    const pubsub = yield* Effect.acquireRelease(PubSub.unbounded<Event>(), PubSub.shutdown)
    const encode = Schema.encodeEffect(Schema.toCodecJson(event.schema))
    const services = yield* Effect.context<S["EncodingServices"]>()
    // one at a time: clients see events in the order the broker delivers them
    const relay = MeshEvent.handle(event, { delivery: "broadcast", name: "sse", concurrency: 1 }, (payload, metadata) =>
      encode(payload).pipe(
        Effect.provideContext(services),
        Effect.flatMap((json) =>
          PubSub.publish(pubsub, { event: event.type, id: metadata.messageId, data: JSON.stringify(json) })
        ),
        Effect.orDie
      ))
    const route = Layer.effectDiscard(Effect.gen(function*() {
      const router = yield* HttpRouter.HttpRouter
      yield* router.add(
        "GET",
        options.path,
        Effect.sync(() =>
          response(
            Stream.unwrap(Effect.map(PubSub.subscribe(pubsub), (subscription) =>
              Stream.concat(
                Stream.succeed<Event>({ event: "connected", data: JSON.stringify({ event: event.type }) }),
                Stream.fromSubscription(subscription)
              ))),
            { heartbeat: options.heartbeat }
          )
        )
      )
    }))
    return Layer.merge(relay.layer({ service: `sse-${event.source}-${event.type}`, instanceId: crypto.randomUUID() }), route)
  })) as Layer.Layer<never, BrokerError, HttpRouter.HttpRouter | Broker | S["EncodingServices"]>

// ---- in: sources ----

/**
 * An external SSE endpoint as a stream of events, reconnecting (with `Last-Event-ID`) when the
 * connection ends or fails.
 *
 * @since 0.1.0
 */
export const source = (
  url: string,
  options?: SourceOptions
): Stream.Stream<Received<string>, SseSourceError, HttpClient.HttpClient> =>
  Stream.unwrap(Effect.sync(() => {
    const state: { lastEventId: string | undefined; retry: Duration.Duration | undefined } = {
      lastEventId: undefined,
      retry: undefined
    }
    const once = connect(url, options, state)
    const reconnect = options?.reconnect
    if (reconnect === false) return once
    const schedule = reconnect ?? Schedule.spaced("1 second")
    // a failure ends this connection like a clean end does: both reconnect
    const attempt = once.pipe(
      Stream.catch((error) => Stream.fromEffect(Effect.as(Effect.logWarning("an SSE source failed", error), undefined))),
      Stream.filter((e): e is Received<string> => e !== undefined),
      Stream.concat(Stream.fromEffect(Effect.suspend(() => {
        const delay = state.retry
        state.retry = undefined
        return delay === undefined ? Effect.void : Effect.sleep(delay)
      })).pipe(Stream.drain))
    )
    return Stream.repeat(attempt, schedule as Schedule.Schedule<unknown, void>)
  }))

/**
 * Reads an external SSE endpoint inside a service: each event, its data decoded with `schema` (a codec
 * from the data text, e.g. `Schema.fromJsonString(Tick)`), goes to `handler` in order. Events whose
 * data does not decode are logged and skipped; a failing handler is logged and the next event goes on.
 *
 * @since 0.1.0
 */
export const entrypoint = <A, RD, E, R>(
  name: string,
  options: SourceOptions & {
    readonly url: string
    readonly schema: Schema.Codec<A, string, RD>
  },
  handler: (event: Received<A>) => Effect.Effect<void, E, R>
): Service.Entrypoint<never, HttpClient.HttpClient | RD | Exclude<R, Scope.Scope>> => {
  const decode = Schema.decodeEffect(options.schema)
  return Service.entrypoint(`sse:${name}`, (instance) =>
    Layer.effectDiscard(
      source(options.url, options).pipe(
        Stream.runForEach((event) =>
          decode(event.data).pipe(
            Effect.flatMap((data) => handler({ ...event, data })),
            Effect.catchCause((cause) =>
              Cause.hasInterruptsOnly(cause)
                ? Effect.failCause(cause)
                : Effect.logWarning(`${instance.service} sse:${name}: an event was not handled`, cause)
            ),
            Effect.scoped
          )
        ),
        Effect.catchCause((cause) => Effect.logError(`${instance.service} sse:${name} stopped`, cause)),
        Effect.forkScoped
      )
    )) as Service.Entrypoint<never, HttpClient.HttpClient | RD | Exclude<R, Scope.Scope>>
}

// ---- internal ----

/** one connection: events as they arrive; remembers the last id and the server's retry delay */
const connect = (
  url: string,
  options: SourceOptions | undefined,
  state: { lastEventId: string | undefined; retry: Duration.Duration | undefined }
): Stream.Stream<Received<string>, SseSourceError, HttpClient.HttpClient> =>
  Stream.unwrap(Effect.gen(function*() {
    const client = yield* HttpClient.HttpClient
    const fail = (reason: SseSourceError["reason"], message: string) => new SseSourceError({ url, reason, message })
    const request = HttpClientRequest.get(url).pipe(
      HttpClientRequest.setHeaders({
        accept: "text/event-stream",
        ...options?.headers,
        ...(state.lastEventId === undefined ? {} : { "last-event-id": state.lastEventId })
      })
    )
    const response = yield* client.execute(request).pipe(
      Effect.mapError((error: HttpClientError.HttpClientError) => fail("Request", error.message))
    )
    const type = response.headers["content-type"] ?? ""
    if (response.status !== 200 || !type.startsWith("text/event-stream")) {
      return yield* fail("Status", `answered ${response.status} ${type}`)
    }
    const maxLineSize = options?.maxLineSize ?? limits.maxLineSize
    const maxEventSize = options?.maxEventSize ?? limits.maxEventSize
    return response.stream.pipe(
      Stream.mapError((error) => fail("Request", error.message)),
      withinLimits(maxLineSize, maxEventSize, fail),
      Stream.decodeText,
      Stream.pipeThroughChannel(SseEncoding.decode({ maxEventSize })),
      Stream.catch((error) => {
        if (SseEncoding.Retry.is(error)) {
          state.retry = error.duration
          return Stream.empty
        }
        if (error._tag === "SseError") return Stream.fail(eventTooLarge(fail, maxEventSize))
        return Stream.fail(error)
      }),
      Stream.map((event): Received<string> => {
        if (event.id !== undefined) state.lastEventId = event.id
        return { event: event.event, id: event.id, data: event.data }
      })
    )
  }))

const eventTooLarge = (fail: (reason: SseSourceError["reason"], message: string) => SseSourceError, max: number) =>
  fail("EventTooLarge", `an event is larger than ${max} bytes (maxEventSize)`)

/**
 * Fails the stream, before its bytes are decoded or buffered, when a line (up to CR, LF or CRLF) is
 * longer than `maxLine` bytes or an event's lines (up to a blank line) are more than `maxEvent` bytes
 * together: the SSE decoder keeps an unfinished line and an unfinished event whole, however long.
 */
const withinLimits = (
  maxLine: number,
  maxEvent: number,
  fail: (reason: SseSourceError["reason"], message: string) => SseSourceError
) =>
<R>(bytes: Stream.Stream<Uint8Array, SseSourceError, R>): Stream.Stream<Uint8Array, SseSourceError, R> =>
  Stream.suspend(() => {
    let line = 0
    let event = 0
    let afterCR = false
    return Stream.mapEffect(bytes, (chunk) => {
      for (let i = 0; i < chunk.length; i++) {
        const byte = chunk[i]
        if (byte === 10 || byte === 13) {
          // the LF of a CRLF ends no second line
          if (byte === 10 && afterCR) {
            afterCR = false
            continue
          }
          afterCR = byte === 13
          if (line === 0) event = 0
          line = 0
          continue
        }
        afterCR = false
        if (++line > maxLine) return Effect.fail(fail("LineTooLong", `a line is longer than ${maxLine} bytes (maxLineSize)`))
        if (++event > maxEvent) return Effect.fail(eventTooLarge(fail, maxEvent))
      }
      return Effect.succeed(chunk)
    })
  })
