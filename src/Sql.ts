/**
 * A database transaction per call: an rpc, a command or an event handled in one transaction of
 * effect's `SqlClient`, committed when the handler succeeds and rolled back when it fails, dies or is
 * interrupted (a drained or cancelled call). farine opens a database connection per handled message;
 * here the call borrows a pooled connection for the length of its transaction.
 *
 * ```ts
 * export const OrdersLive = Service.make(Orders, {
 *   handlers: Sql.handlers(Orders, {
 *     place: ({ id, total }) =>
 *       Effect.gen(function*() {
 *         const sql = yield* SqlClient.SqlClient
 *         yield* sql`insert into orders ${sql.insert({ id, total })}`
 *         yield* Outbox.publish(OrderPlaced, { id, total })
 *       })
 *   }),
 *   entrypoints: [Event.handle(OrderPlaced, {}, Sql.transactional((order) => bill(order)))]
 * }).pipe(Layer.provide(PgClient.layer({ url })))
 * ```
 *
 * A database's own failure (`SqlError`: the connection lost, a failed `COMMIT`, a constraint the body
 * did not catch) is not one of a contract's errors: past the transaction it is a defect, which a caller
 * sees as `RemoteDefect`, an event retries and a command dead-letters. Inside the body it stays typed,
 * so a handler maps the ones it expects (a unique violation) to its contract's errors.
 *
 * @since 0.1.0
 */
import { Effect } from "effect"
import type { Rpc } from "effect/rpc"
import { RpcSchema } from "effect/rpc"
import { SqlClient, SqlError } from "effect/sql"
import type { ServiceContract } from "./ServiceContract.ts"

/**
 * Runs an effect in a transaction of the current `SqlClient` (a savepoint inside another one):
 * committed when it succeeds, rolled back when it fails, dies or is interrupted. A `SqlError` that
 * reaches the end of it, the `COMMIT`'s included, becomes a defect.
 *
 * @since 0.1.0
 */
export const transaction = <A, E, R>(
  self: Effect.Effect<A, E, R>
): Effect.Effect<A, Exclude<E, SqlError.SqlError>, R | SqlClient.SqlClient> =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql.withTransaction(self).pipe(
      Effect.catchIf(SqlError.isSqlError, (error) => Effect.die(error))
    ) as Effect.Effect<A, Exclude<E, SqlError.SqlError>, R>)

/**
 * A handler whose every run is a `transaction`: an rpc handler (`(payload, options)`), an event handler
 * (`(payload, metadata)`) or any function returning an effect.
 *
 * @since 0.1.0
 */
export const transactional = <Args extends ReadonlyArray<unknown>, A, E, R>(
  handler: (...args: Args) => Effect.Effect<A, E, R>
): (...args: Args) => Effect.Effect<A, Exclude<E, SqlError.SqlError>, R | SqlClient.SqlClient> =>
(...args) => transaction(handler(...args))

/**
 * What `handlers` takes for a contract: its handlers, each of which may fail with `SqlError` besides
 * the contract's errors (the transaction turns what is left of it into a defect).
 *
 * @since 0.1.0
 */
export type HandlersFrom<Rpcs extends Rpc.Any> = {
  readonly [Current in Rpcs as Current["_tag"]]: (
    payload: Rpc.Payload<Current>,
    options: Parameters<Rpc.ToHandlerFn<Current>>[1]
  ) =>
    | Rpc.ResultFrom<Current, unknown>
    | Effect.Effect<Rpc.Success<Current>, Rpc.Error<Current> | SqlError.SqlError, unknown>
}

/**
 * The handlers `handlers` returns: each one returning an effect runs it in a `transaction`; the
 * handler of a streaming rpc is left as it is (a transaction does not span a stream).
 *
 * @since 0.1.0
 */
export type Transactional<Handlers> = {
  readonly [K in keyof Handlers]: Handlers[K] extends (...args: infer Args) => Effect.Effect<infer A, infer E, infer R>
    ? (...args: Args) => Effect.Effect<A, Exclude<E, SqlError.SqlError>, R | SqlClient.SqlClient>
    : Handlers[K]
}

/**
 * Makes every handler of a contract that returns an effect `transactional`, for `Service.make`'s
 * `handlers`: each rpc and each command of the service runs in a transaction of its own.
 *
 * @since 0.1.0
 */
export const handlers = <const Name extends string, Rpcs extends Rpc.Any, const Handlers extends HandlersFrom<Rpcs>>(
  contract: ServiceContract<Name, Rpcs>,
  handlers: Handlers
): Transactional<Handlers> => {
  const wrapped: Record<string, unknown> = {}
  for (const [name, handler] of Object.entries(handlers as Record<string, unknown>)) {
    const rpc = contract.group.requests.get(name) as Rpc.AnyWithProps | undefined
    // a streaming rpc's effect (a queue of its chunks) ends before its stream does
    const streams = rpc !== undefined && RpcSchema.isStreamSchema(rpc.successSchema)
    wrapped[name] = typeof handler === "function" && !streams
      ? (...args: ReadonlyArray<unknown>) => {
        const result: unknown = handler(...args)
        return Effect.isEffect(result) ? transaction(result) : result
      }
      : handler
  }
  return wrapped as Transactional<Handlers>
}
