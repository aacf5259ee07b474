/**
 * OpenTelemetry's trace samplers, from `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`, over the
 * current tracer: which new spans are sampled (exported). A child follows its parent as effect's own
 * spans always do (a parent that is not sampled has no sampled children); the sampler decides for spans
 * without a parent (`always_on`, `always_off`, `traceidratio` with the ratio in the argument), and with
 * the `parentbased_*` samplers (the default, `parentbased_always_on`) a span whose parent came over the
 * wire follows the caller's sampled flag (its `traceparent`). The decision of a root span is taken at
 * random with the ratio's probability.
 *
 * @internal
 */
import { Config, Effect, Layer, Option, Tracer } from "effect"

/** the samplers the OpenTelemetry specification names for `OTEL_TRACES_SAMPLER` */
export const samplers = [
  "always_on",
  "always_off",
  "traceidratio",
  "parentbased_always_on",
  "parentbased_always_off",
  "parentbased_traceidratio"
] as const

export type Sampler = typeof samplers[number]

/** the probability that a root span is sampled */
const rootRatio = (sampler: Sampler, ratio: number): number =>
  sampler.endsWith("always_on") ? 1 : sampler.endsWith("always_off") ? 0 : ratio

/** the current tracer, its root spans sampled as `sampler` says (installed when it samples less than all) */
export const layer: Layer.Layer<never, Config.ConfigError> = Layer.unwrap(Effect.gen(function*() {
  const sampler = yield* Config.Literals(samplers, "OTEL_TRACES_SAMPLER").pipe(Config.withDefault("parentbased_always_on"))
  const ratio = yield* Config.Number("OTEL_TRACES_SAMPLER_ARG").pipe(Config.withDefault(1))
  const probability = Math.min(1, Math.max(0, rootRatio(sampler, ratio)))
  const parentBased = sampler.startsWith("parentbased_")
  if (probability === 1 && parentBased) return Layer.empty
  return Layer.effect(
    Tracer.Tracer,
    Effect.map(Effect.tracer, (tracer): Tracer.Tracer => ({
      ...tracer,
      span(options) {
        const parent = Option.getOrUndefined(options.parent)
        // effect's own spans follow their parent already; a remote parent follows the caller's flag
        // when parent-based, and is a root otherwise
        const decides = parent === undefined || (parent._tag === "ExternalSpan" && !parentBased)
        const sampled = decides ? options.sampled && Math.random() < probability : options.sampled
        return tracer.span({ ...options, sampled })
      }
    }))
  )
}))
