/**
 * A service's contract: its name on the mesh and its `RpcGroup`. Servers implement it with
 * `Service.make`, callers get a typed client from it with `ServiceClient.make`; both sides import the
 * same value, so payloads, successes, errors and streams are checked at compile time on both ends.
 *
 * A contract also says the wire format its callers write (`format`, JSON by default; WireFormat.ts).
 * A service reads every format it knows, whatever its contract says, and answers in the request's:
 * a caller whose contract says MessagePack calls a service whose contract says JSON, and back.
 *
 * @since 0.1.0
 */
import type { Rpc, RpcGroup } from "effect/rpc"
import * as WireFormat from "./WireFormat.ts"

/**
 * @since 0.1.0
 */
export interface ServiceContract<Name extends string, Rpcs extends Rpc.Any> {
  readonly name: Name
  readonly group: RpcGroup.RpcGroup<Rpcs>
}

/**
 * Any contract, for APIs that accept all of them.
 *
 * @since 0.1.0
 */
export type Any = ServiceContract<string, Rpc.Any>

/**
 * The rpcs of a contract.
 *
 * @since 0.1.0
 */
export type Rpcs<C> = C extends ServiceContract<infer _Name, infer R> ? R : never

/**
 * Options of a contract.
 *
 * @since 0.1.0
 */
export interface Options {
  /** the format its callers write requests in (default `WireFormat.json`) */
  readonly format?: WireFormat.WireFormat | undefined
}

const validName = /^[A-Za-z0-9_-]+$/

/**
 * Names a group of rpcs as a service. The name becomes the routing key: letters, digits, `_`, `-`.
 * A `format` other than JSON is put on every rpc of the group (as the `WireFormat.Format`
 * annotation), where callers find it once per rpc.
 *
 * @since 0.1.0
 */
export const make = <const Name extends string, Rpcs extends Rpc.Any>(
  name: Name,
  group: RpcGroup.RpcGroup<Rpcs>,
  options?: Options
): ServiceContract<Name, Rpcs> => {
  if (!validName.test(name)) {
    throw new globalThis.Error(`invalid service name "${name}": use letters, digits, "_" and "-"`)
  }
  const format = options?.format
  return { name, group: format === undefined || format === WireFormat.json ? group : group.annotateRpcs(WireFormat.Format, format) }
}
