/**
 * The sender a broker verified (AMQP `user_id`), carried into a handler's `CallContext` as
 * `verifiedUserId`. It comes from the delivery's properties only, never from the context header a
 * publisher writes: effect/rpc's request headers carry it to the handlers RpcServer runs under a name
 * of its own, and a header of that name arriving from the wire is dropped first.
 *
 * @internal
 */
import type { HeaderValue } from "../Broker.ts"
import type { CallContext } from "../CallContext.ts"

/** the request header (inside the process only) that carries the verified sender to RpcServer's handlers */
export const header = "x-mesh-verified-user-id"

/** a request's headers for RpcServer: the wire's, without any `header` of theirs, and the verified sender */
export const requestHeaders = (
  headers: Readonly<Record<string, HeaderValue>> | undefined,
  userId: string | undefined
): Array<[string, string]> => {
  const entries: Array<[string, string]> = []
  if (headers !== undefined) for (const key in headers) if (key !== header) entries.push([key, String(headers[key])])
  if (userId !== undefined) entries.push([header, userId])
  return entries
}

/** the context with the verified sender, and only that one (none when `userId` is undefined) */
export const verify = (context: CallContext, userId: string | undefined): CallContext =>
  context.verifiedUserId === userId ? context : { ...context, verifiedUserId: userId }
