/**
 * One run of an entrypoint that no caller started (a timer's tick, a worker's life): the run's own
 * scope, a fresh `CallContext` rooted at `<service>.<kind>:<name>` (so the calls it makes are traced
 * like a request's), its correlation id on every log line and, when asked, a root span of that name.
 * Its result comes back as an Exit: a failed run never fails the loop that runs it.
 *
 * @internal
 */
import { Effect } from "effect"
import type { Exit, Scope } from "effect"
import * as CallContext from "../CallContext.ts"
import type * as Service from "../Service.ts"

export const rootRun = <A, E, R>(
  instance: Service.Instance,
  kind: "timer" | "worker",
  name: string,
  effect: Effect.Effect<A, E, R>,
  options: { readonly span: boolean }
): Effect.Effect<Exit.Exit<A, E>, never, Exclude<R, Scope.Scope>> =>
  Effect.suspend(() => {
    const entry = `${instance.service}.${kind}:${name}`
    const context = CallContext.root(entry)
    const correlationId = context.correlationId
    const run = effect.pipe(Effect.scoped, Effect.provideService(CallContext.CallContext, context))
    const traced = options.span
      ? Effect.withSpan(run, entry, {
        root: true,
        attributes: {
          "mesh.service": instance.service,
          "mesh.instance": instance.instanceId,
          [`mesh.${kind}`]: name,
          "mesh.correlation_id": correlationId
        }
      })
      : run
    return traced.pipe(Effect.exit, Effect.annotateLogs({ correlationId }))
  })
