/**
 * The server span of a unary call, made as `Effect.withSpan` makes one but before its fiber starts, so
 * that the span goes into the fiber's context with the rest of the request's services. `withSpan`
 * inside the fiber would change the fiber's context twice on the way in (the parent span and the stack
 * frame) and twice on the way out, and each change rebuilds the fiber's cache of references: on the
 * hot path that was most of a span's cost.
 *
 * What `withSpan` reads from the fiber (the tracer, the clock, the env's annotations and links, the
 * trace levels) is read once, from the context the instance's fibers start with.
 *
 * @internal
 */
import { Clock, Context, LogLevel, Option, References, Tracer } from "effect"
import type { Exit } from "effect"
import { constUndefined } from "effect/Function"
import type { HeaderValue } from "../Broker.ts"
import * as wire from "./wire.ts"

/** @internal */
export interface SpanOptions {
  readonly kind: Tracer.SpanKind
  /** the caller's span; none: the fiber's own parent, or none with `root` */
  readonly parent?: Tracer.AnySpan | undefined
  readonly root?: boolean | undefined
  readonly attributes?: Readonly<Record<string, unknown>> | undefined
}

/** @internal */
export interface ServerSpans {
  /** `undefined` when tracing is off: then the fiber takes `Effect.withSpan`, which knows what to do */
  readonly start: (name: string, options: SpanOptions) => Tracer.Span | undefined
  readonly end: (span: Tracer.Span, exit: Exit.Exit<unknown, unknown>) => void
  /** the context of a fiber running within `span` */
  readonly provide: <R>(context: Context.Context<R>, span: Tracer.Span) => Context.Context<R>
}

/** @internal a message handler's span: a consumer's, the child of the span its `traceparent` header names */
export const consumer = (
  headers: Readonly<Record<string, HeaderValue>> | undefined,
  attributes: Readonly<Record<string, unknown>>
): SpanOptions => {
  const parent = wire.parseTraceparent(wire.stringHeader(headers, wire.header.traceparent))
  return { kind: "consumer", parent: parent === undefined ? undefined : Tracer.externalSpan(parent), attributes }
}

/** @internal the options of `Effect.withSpan` that make the span `start` makes */
export const withSpanOptions = (options: SpanOptions) => ({
  kind: options.kind,
  parent: options.parent,
  root: options.root,
  attributes: options.attributes,
  captureStackTrace: false
})

/** @internal */
export const make = (base: Context.Context<never>): ServerSpans => {
  const enabled = Context.get(base, References.TracerEnabled)
  const tracer = Context.get(base, Tracer.Tracer)
  const clock = Context.get(base, Clock.Clock)
  const timing = Context.get(base, References.TracerTimingEnabled)
  const envAnnotations = Context.get(base, References.TracerSpanAnnotations)
  const envLinks = Context.get(base, References.TracerSpanLinks)
  const envParent = Context.getOption(base, Tracer.ParentSpan)
  const frame = Context.get(base, References.CurrentStackFrame)
  const sampledByLevel = !LogLevel.isGreaterThan(
    Context.get(base, Tracer.MinimumTraceLevel),
    Context.get(base, Tracer.CurrentTraceLevel)
  )
  const now = () => timing ? clock.currentTimeNanosUnsafe() : BigInt(0)
  return {
    start: (name, options) => {
      if (!enabled) return undefined
      const parent = options.parent
      const parentOption = parent !== undefined ? Option.some(parent) : options.root === true ? Option.none() : envParent
      const span = tracer.span({
        name,
        parent: parentOption,
        annotations: Context.empty(),
        links: envLinks.length === 0 ? [] : envLinks.slice(),
        startTime: now(),
        kind: options.kind,
        root: options.root === true,
        sampled: Option.isSome(parentOption) && parentOption.value.sampled === false ? false : sampledByLevel
      })
      for (const key in envAnnotations) span.attribute(key, envAnnotations[key])
      const attributes = options.attributes
      if (attributes !== undefined) for (const key in attributes) span.attribute(key, attributes[key])
      return span
    },
    end: (span, exit) => {
      if (span.status._tag !== "Ended") span.end(now(), exit)
    },
    provide: (context, span) =>
      Context.add(
        Context.add(context, Tracer.ParentSpan, span),
        References.CurrentStackFrame,
        { name: span.name, stack: constUndefined, parent: frame }
      )
  }
}
