/**
 * Test kit: services on a private embedded broker, and typed clients for them.
 *
 * - `layer(services)` runs services on a fresh `MemoryBroker` and provides what clients need, so a
 *   test can `yield* ServiceClient.make(Contract)` and call them through the real protocols.
 * - `client(contract, options)` runs one contract's handlers (what Nameko's `worker_factory` and
 *   `entrypoint_hook` give) and returns its client; the handlers' dependencies stay in the effect's
 *   requirements, so a test supplies fakes with `Effect.provide(FakeLayer)`.
 *
 * @since 0.1.0
 */
import { Effect, Layer } from "effect"
import type { Scope } from "effect"
import type { Rpc, RpcGroup } from "effect/rpc"
import type { Broker, BrokerError } from "./Broker.ts"
import * as MemoryBroker from "./MemoryBroker.ts"
import * as Service from "./Service.ts"
import * as ServiceClient from "./ServiceClient.ts"
import type { ServiceContract } from "./ServiceContract.ts"

/**
 * Services on a fresh embedded broker, with the client transport (also given to the services, so
 * their handlers can call each other) and the broker itself provided.
 *
 * @since 0.1.0
 */
export const layer = <E, R>(
  services: Layer.Layer<never, E, R>
): Layer.Layer<ServiceClient.Transport | Broker, E | BrokerError, Exclude<R, Broker | ServiceClient.Transport>> =>
  Layer.fresh(
    services.pipe(
      Layer.provideMerge(ServiceClient.layer),
      Layer.provideMerge(Layer.fresh(MemoryBroker.layer))
    )
  ) as Layer.Layer<ServiceClient.Transport | Broker, E | BrokerError, Exclude<R, Broker | ServiceClient.Transport>>

/**
 * Runs one contract's handlers on a private embedded broker and returns a typed client for them.
 * The handlers' requirements remain to be provided by the test.
 *
 * @since 0.1.0
 */
export const client = <
  const Name extends string,
  Rpcs extends Rpc.Any,
  const Handlers extends RpcGroup.HandlersFrom<Rpcs>,
  EX = never,
  RX = never
>(
  contract: ServiceContract<Name, Rpcs>,
  options: Service.Options<Handlers, EX, RX>
): Effect.Effect<
  ServiceClient.ServiceClient<Rpcs>,
  EX | BrokerError,
  Scope.Scope | Exclude<Service.Requirements<Rpcs, Handlers, RX>, Broker>
> =>
  Effect.gen(function*() {
    const context = yield* Layer.build(layer(Service.make(contract, options)))
    return yield* ServiceClient.make(contract).pipe(Effect.provide(context))
  }) as Effect.Effect<
    ServiceClient.ServiceClient<Rpcs>,
    EX | BrokerError,
    Scope.Scope | Exclude<Service.Requirements<Rpcs, Handlers, RX>, Broker>
  >
