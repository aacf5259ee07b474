/**
 * The transactional outbox: an event is published if and only if the database transaction that
 * produced it commits. `publish` writes the event into an outbox table in the current transaction (of
 * effect's `SqlClient`, usually the call's: see `Sql`); a relay (`layerRelay`, or the `relay`
 * entrypoint of a service) publishes the committed rows with `Event.publish`, waits for the broker's
 * confirm, and marks them sent. A rolled-back transaction leaves no row, so no event.
 *
 * The guarantee is at least once, with a stable message id: each committed event is published until
 * the broker confirmed it and the row was marked sent. A process killed after its commit, before the
 * relay published (or the relay itself, between the confirm and the mark), loses nothing: the row is
 * still unsent, and the next relay (after a restart, or on another instance) publishes it. In the
 * second case the event goes out twice, with the same `messageId`, which is the row's id; a
 * subscriber that must act once per commit wraps its handler in `once`, which records the ids it
 * processed in the same transaction as its own work.
 *
 * ```ts
 * yield* Outbox.createTables()                      // once, at start or in a migration
 * // in a handler, inside its transaction:
 * yield* sql`insert into orders ${sql.insert(order)}`
 * yield* Outbox.publish(OrderPlaced, order)
 * // on the service: the relay of the events it publishes
 * entrypoints: [Outbox.relay({ events: [OrderPlaced] })]
 * // on a subscriber that must process each event once
 * Event.handle(OrderPlaced, {}, Outbox.once("billing", (order) => charge(order)))
 * ```
 *
 * The tables and queries are PostgreSQL's (`jsonb`, `FOR UPDATE SKIP LOCKED`, so several relays share
 * the work without publishing a row twice at once). Events keep their order within one relay's batch;
 * across relays, as across a pool of subscribers, there is none.
 *
 * @since 0.1.0
 */
import { Duration, Effect, Exit, Layer, Option, Schema, SchemaIssue } from "effect"
import { SqlClient, type SqlError } from "effect/sql"
import type { Broker } from "./Broker.ts"
import * as CallContext from "./CallContext.ts"
import * as Event from "./Event.ts"
import * as Service from "./Service.ts"
import * as Sql from "./Sql.ts"

// ---- models ----

/**
 * Where the outbox lives: the table of events (default `mesh_outbox`); the table of the ids `once`
 * processed is its name with `_processed`.
 *
 * @since 0.1.0
 */
export interface Options {
  readonly table?: string | undefined
}

/**
 * Options of the relay.
 *
 * @since 0.1.0
 */
export interface RelayOptions extends Options {
  /** the events it publishes; rows of other events stay in the table for a relay that knows them */
  readonly events: ReadonlyArray<Event.Any>
  /** how often it looks for committed rows when the table had none (default 200 ms) */
  readonly interval?: Duration.Input | undefined
  /** rows per transaction (default 100) */
  readonly batchSize?: number | undefined
  /**
   * how long a sent row stays in the table (default 1 day), for inspection: the relay deletes older
   * ones (at most every minute). The ids `once` recorded are not deleted: they are the subscribers'
   */
  readonly keepSent?: Duration.Input | undefined
}

// ---- constructors ----

/**
 * Creates the outbox's tables and index when missing (idempotent, safe from several processes at
 * once): run it at start, or put its statements in a migration.
 *
 * @since 0.1.0
 */
export const createTables = (options?: Options): Effect.Effect<void, SqlError.SqlError, SqlClient.SqlClient> =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => {
    const { processed, table } = namesOf(options)
    return sql.withTransaction(Effect.gen(function*() {
      // concurrent `create table if not exists` can collide in PostgreSQL's catalog: one at a time
      yield* sql`select pg_advisory_xact_lock(hashtext(${table}))`
      yield* sql`create table if not exists ${sql(table)} (
        seq bigserial primary key,
        id text not null unique,
        source text not null,
        type text not null,
        payload jsonb not null,
        context text not null,
        created_at timestamptz not null default now(),
        sent_at timestamptz
      )`
      yield* sql`create index if not exists ${sql(`${table}_unsent`)} on ${sql(table)} (seq) where sent_at is null`
      yield* sql`create table if not exists ${sql(processed)} (
        consumer text not null,
        message_id text not null,
        processed_at timestamptz not null default now(),
        primary key (consumer, message_id)
      )`
    }))
  })

/**
 * Writes an event into the outbox, in the current transaction: it is published once that
 * transaction commits, and never if it rolls back. The payload is checked and encoded by the event's
 * schema now (`EventError` `InvalidPayload`), and the current call context goes with it, so the
 * subscribers see the call that produced it. Outside a transaction the row commits at once.
 *
 * @since 0.1.0
 */
export const publish = <Source extends string, Type extends string, S extends Schema.Top>(
  event: Event.Event<Source, Type, S>,
  payload: S["~type.make.in"],
  options?: Options
): Effect.Effect<void, Event.EventError | SqlError.SqlError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const made = yield* Effect.mapError(event.schema.makeEffect(payload), (issue) => invalid(event, formatIssue(issue)))
    const encoded = codecOf(event).encode(made)
    if (Exit.isFailure(encoded)) {
      return yield* invalid(event, Option.match(Exit.findErrorOption(encoded), {
        onNone: () => "the payload could not be encoded",
        onSome: (error) => formatIssue(error.issue)
      }))
    }
    const context = yield* CallContext.CallContext
    const { table } = namesOf(options)
    yield* sql`insert into ${sql(table)} ${
      sql.insert({
        id: crypto.randomUUID(),
        source: event.source,
        type: event.type,
        payload: JSON.stringify(encoded.value),
        context: CallContext.toHeaders(context)[CallContext.headerNames.context]
      })
    }`
  })

/**
 * The relay as a Layer: creates the tables when missing, then publishes committed rows with
 * `Event.publish` (broker confirms, the row's id as the event's `messageId`, the context of the call
 * that wrote it) and marks them sent in the same transaction that locked them. A row it cannot
 * publish (the broker is down) stays unsent and is tried again on the next round.
 *
 * @since 0.1.0
 */
export const layerRelay = (options: RelayOptions): Layer.Layer<never, SqlError.SqlError, SqlClient.SqlClient | Broker> =>
  Layer.effectDiscard(Effect.gen(function*() {
    if (options.events.length === 0) return yield* Effect.die(new globalThis.Error("Outbox.relay: no events to relay"))
    yield* createTables(options)
    const round = relayRound(options)
    const interval = Duration.fromInputUnsafe(options.interval ?? "200 millis")
    // a full batch: there may be more, at once; otherwise wait for the interval
    const loop = Effect.flatMap(round, (more) => more ? Effect.void : Effect.sleep(interval)).pipe(
      Effect.catchCause((cause) =>
        Effect.andThen(Effect.logWarning("outbox relay: a round failed; trying again", cause), Effect.sleep(interval))
      ),
      Effect.forever
    )
    yield* Effect.forkScoped(loop)
    const keep = Duration.fromInputUnsafe(options.keepSent ?? "1 day")
    const pruneEvery = Duration.max(interval, Duration.min(keep, Duration.minutes(1)))
    yield* Effect.forkScoped(prune(options, keep).pipe(
      Effect.catchCause((cause) => Effect.logWarning("outbox relay: deleting sent rows failed", cause)),
      Effect.andThen(Effect.sleep(pruneEvery)),
      Effect.forever
    ))
  }))

/**
 * The relay as an entrypoint of `Service.make`: runs while the service's instance runs.
 *
 * @since 0.1.0
 */
export const relay = (options: RelayOptions): Service.Entrypoint<SqlError.SqlError, SqlClient.SqlClient | Broker> =>
  Service.entrypoint(`outbox relay (${namesOf(options).table})`, () => layerRelay(options))

/**
 * Runs an event handler once per event, whatever the deliveries: in a transaction (as
 * `Sql.transactional`) that first records the event's `messageId` for `consumer` and skips the
 * handler when it was recorded before. A handler that fails records nothing, so its retries run it.
 * For the events the outbox publishes (whose ids are the rows'), and for any other event (its id is
 * the same on every delivery and retry).
 *
 * @since 0.1.0
 */
export const once = <P, A, E, R>(
  consumer: string,
  handler: (payload: P, metadata: Event.Metadata) => Effect.Effect<A, E, R>,
  options?: Options
): (payload: P, metadata: Event.Metadata) => Effect.Effect<void, Exclude<E, SqlError.SqlError>, R | SqlClient.SqlClient> =>
  Sql.transactional((payload: P, metadata: Event.Metadata) =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const { processed } = namesOf(options)
      const fresh = yield* sql<{ readonly message_id: string }>`insert into ${sql(processed)} ${
        sql.insert({ consumer, message_id: metadata.messageId })
      } on conflict do nothing returning message_id`
      if (fresh.length === 0) {
        return yield* Effect.logDebug(`${consumer}: event ${metadata.messageId} was processed before; skipped`)
      }
      yield* handler(payload, metadata)
    })
  )

// ---- internal ----

interface Row {
  readonly id: string
  readonly source: string
  readonly type: string
  readonly payload: unknown
  readonly context: string
}

const namesOf = (options: Options | undefined) => {
  const table = options?.table ?? "mesh_outbox"
  return { table, processed: `${table}_processed` }
}

/** one transaction: locks a batch of unsent rows, publishes them in order, marks the published sent */
const relayRound = (options: RelayOptions): Effect.Effect<boolean, SqlError.SqlError, SqlClient.SqlClient | Broker> => {
  const { table } = namesOf(options)
  const batchSize = options.batchSize ?? 100
  const events = new Map(options.events.map((event) => [`${event.source}.${event.type}`, event]))
  const keys = Array.from(events.keys())
  return Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql.withTransaction(Effect.gen(function*() {
      const rows = yield* sql<Row>`select id, source, type, payload, context from ${sql(table)}
        where sent_at is null and (source || '.' || type) in ${sql.in(keys)}
        order by seq limit ${batchSize} for update skip locked`
      const sent: Array<string> = []
      for (const row of rows) {
        const event = events.get(`${row.source}.${row.type}`)
        if (event === undefined) continue
        const decoded = yield* Effect.exit(codecOf(event).decode(row.payload))
        if (Exit.isFailure(decoded)) {
          // the event's schema changed since the row was written: it stays for a relay that reads it
          yield* Effect.logError(`outbox relay: event ${row.id} (${row.source}.${row.type}) does not decode`, decoded.cause)
          continue
        }
        const published = yield* Effect.exit(publishRow(event, decoded.value, row))
        if (Exit.isFailure(published)) {
          // the broker did not confirm it: this one and the rest wait for the next round, in order
          yield* Effect.logWarning(`outbox relay: event ${row.id} (${row.source}.${row.type}) not published yet`, published.cause)
          break
        }
        sent.push(row.id)
      }
      if (sent.length > 0) yield* sql`update ${sql(table)} set sent_at = now() where ${sql.in("id", sent)}`
      return rows.length === batchSize && sent.length === rows.length
    })))
}

/** deletes the rows sent longer than `keep` ago */
const prune = (options: Options, keep: Duration.Duration) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql`delete from ${sql(namesOf(options).table)}
      where sent_at < now() - make_interval(secs => ${Duration.toMillis(keep) / 1000})`)

/** publishes a row's event with the context of the call that wrote it, the row's id as its message id */
const publishRow = (event: Event.Any, value: unknown, row: Row): Effect.Effect<void, Event.EventError, Broker> =>
  Effect.provideService(
    Event.publish(event, value, { messageId: row.id }),
    CallContext.CallContext,
    CallContext.fromHeaders({ [CallContext.headerNames.context]: row.context })
  )

const formatIssue = SchemaIssue.makeFormatterDefault()

const invalid = (event: Event.Any, message: string) =>
  new Event.EventError({ reason: "InvalidPayload", source: event.source, type: event.type, message })

interface Codec {
  readonly encode: (value: unknown) => Exit.Exit<unknown, Schema.SchemaError>
  readonly decode: (json: unknown) => Effect.Effect<unknown, Schema.SchemaError>
}

const codecs = new WeakMap<Event.Any, Codec>()

/** the event's JSON codec, as `Event.publish` encodes it */
const codecOf = (event: Event.Any): Codec => {
  let codec = codecs.get(event)
  if (codec === undefined) {
    const json = Schema.toCodecJson(event.schema) as unknown as Schema.Codec<unknown, unknown>
    codec = { encode: Schema.encodeUnknownExit(json), decode: Schema.decodeUnknownEffect(json) }
    codecs.set(event, codec)
  }
  return codec
}
