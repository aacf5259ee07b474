/**
 * Single-instance mode (nuropb's fixed instance id): an instance started with a fixed id holds a lease
 * on the broker (`mesh.lease.<service>.instance.<id>`, see internal/lease.ts) for as long as it runs.
 * A second instance with that id finds the lease held: it fails to start with `InstanceTaken`, naming
 * the holder as discovery describes it, or (`whenTaken: "wait"`) waits and starts when the holder
 * stops or dies. While it holds the lease, the instance leads (`Service.isLeader`).
 *
 * @internal
 */
import { Deferred, Duration, Effect, Option } from "effect"
import type { Scope } from "effect"
import type { Broker } from "../Broker.ts"
import * as Discovery from "../Discovery.ts"
import * as Lease from "./lease.ts"
import * as topology from "./topology.ts"

/** whether an instance leads: flipped by its lease */
export interface Leadership {
  leading: boolean
}

export interface Options {
  readonly service: string
  readonly instanceId: string
  readonly whenTaken: "fail" | "wait"
  readonly lease: Duration.Duration
}

/**
 * Takes the instance's lease, and keeps it while the scope lasts. `Option.none()` once held; the holder
 * as discovery describes it when the lease is taken and the instance is not to wait.
 */
export const acquire = (
  broker: Broker["Service"],
  options: Options,
  leadership: Leadership
): Effect.Effect<Option.Option<string>, never, Scope.Scope | Broker> =>
  Effect.gen(function*() {
    const held = yield* Deferred.make<void>()
    const job = Effect.andThen(
      Effect.sync(() => {
        leadership.leading = true
        Deferred.doneUnsafe(held, Effect.void)
      }),
      Effect.never
    ).pipe(Effect.ensuring(Effect.sync(() => leadership.leading = false)))
    yield* Effect.forkScoped(Lease.run(broker, {
      queue: topology.leaseQueue(options.service, "instance", options.instanceId),
      lease: options.lease,
      instanceId: options.instanceId
    }, job))
    if (options.whenTaken === "wait") {
      const now = yield* Effect.exit(Effect.timeout(Deferred.await(held), Duration.times(options.lease, 3)))
      if (now._tag === "Failure") {
        yield* Effect.logInfo(`${options.service}: instance ${options.instanceId} runs elsewhere; waiting to take over`)
        yield* Deferred.await(held)
      }
      return Option.none()
    }
    // a free lease is taken at once, or after one lease when its last holder died holding it
    const taken = yield* Effect.timeoutOption(Deferred.await(held), Duration.times(options.lease, 3))
    if (Option.isSome(taken)) return Option.none()
    return Option.some(yield* holder(options))
  })

/** the running instance with this id, as it describes itself */
const holder = (options: Options): Effect.Effect<string, never, Broker> =>
  Discovery.describe({ service: options.service, window: "500 millis" }).pipe(
    Effect.map((found) => {
      const info = found.find((d) => d.instanceId === options.instanceId)
      return info === undefined
        ? "an instance that does not answer describe"
        : `host ${info.host}, pid ${info.pid}, broker ${info.broker}, since ${new Date(info.since).toISOString()}`
    }),
    Effect.orElseSucceed(() => "an instance that does not answer describe")
  )
