/**
 * The calculator service: one value, one Layer.
 */
import { Effect, Schedule, Stream } from "effect"
import { CallContext, Service } from "effect-mesh"
import { Calculator, DivisionByZero } from "./contract.ts"

export const CalculatorLive = Service.make(Calculator, {
  handlers: {
    add: ({ a, b }) => Effect.succeed(a + b),
    divide: ({ a, b }) => b === 0 ? Effect.fail(new DivisionByZero({ dividend: a })) : Effect.succeed(a / b),
    countdown: ({ from }) =>
      Stream.iterate(from, (n) => n - 1).pipe(
        Stream.takeWhile((n) => n >= 0),
        Stream.schedule(Schedule.spaced("1 millis"))
      ),
    multiply: ({ a, b }) =>
      Effect.gen(function*() {
        const context = yield* CallContext.CallContext
        // what the caller sent along (mesh call --user ada --context tenant=acme) shows in the log
        yield* Effect.logInfo("calculator.multiply", {
          correlationId: context.correlationId,
          callIdStack: context.callIdStack,
          userId: context.userId,
          // who sent the call, as the broker verified it (the user id above is only what the caller claims)
          verifiedUserId: context.verifiedUserId,
          entries: context.entries
        })
        return a * b
      }),
    sleep: ({ millis }) => Effect.sleep(millis).pipe(Effect.as(`slept ${millis} ms`))
  },
  // who may call what: a caller the broker did not verify may not hold an instance for more than 5 s
  // (it gets ServiceError.Forbidden, and the handler does not run)
  authorize: ({ context, method, payload }) =>
    Effect.succeed(
      method !== "sleep" || context.verifiedUserId !== undefined || (payload as { readonly millis: number }).millis <= 5_000
    )
})
