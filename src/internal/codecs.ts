/**
 * An rpc's schemas as the JSON codecs of effect/rpc's wire format, made once per rpc and shared by the
 * unary paths of the client (BrokerRpcClient) and of the instance (BrokerRpcServer).
 *
 * The wire format its requests are written in (the rpc's `WireFormat.Format` annotation, JSON without
 * one) and whether it is sealed (`Sealed.Sealed`) are resolved here too, once per rpc: a caller pays
 * nothing per call to know them.
 *
 * An Exit that succeeded, the common case, is encoded and decoded with the success schema alone:
 * `{ _tag: "Success", value }` is what the Exit schema makes of it too, without a pass through the
 * Exit's union of causes.
 *
 * @internal
 */
import { Context, Effect, Exit, Option, Schema, SchemaIssue } from "effect"
import type { SchemaAST } from "effect"
import { Rpc, RpcSchema } from "effect/rpc"
import { InvalidPayload } from "../ServiceError.ts"
import * as Sealed from "../Sealed.ts"
import * as WireFormat from "../WireFormat.ts"
import * as Formats from "./formats.ts"

type Parse = (u: unknown) => Exit.Exit<unknown, Schema.SchemaError>

/** @internal */
export interface Codecs {
  /** the format the rpc's requests are written in */
  readonly format: Formats.BodyFormat
  /** its payload and answers cross the broker sealed (Sealed.ts) */
  readonly sealed: boolean
  readonly encodePayload: Parse
  /** a payload of its type to its encoded form; throws (Schema's own error) where its encoding fails */
  readonly encodePayloadSync: (u: unknown) => unknown
  readonly decodePayload: Parse
  /** an Exit to its encoded form */
  readonly encodeExit: (exit: Exit.Exit<unknown, unknown>) => Exit.Exit<unknown, Schema.SchemaError>
  /** an encoded Exit back to an Exit */
  readonly decodeExit: (u: unknown) => Exit.Exit<Exit.Exit<unknown, unknown>, Schema.SchemaError>
}

const cache = new WeakMap<Rpc.AnyWithProps, Codecs>()

const json = (schema: Schema.Top): Schema.Codec<unknown, unknown> =>
  Schema.toCodecJson(schema) as unknown as Schema.Codec<unknown, unknown>

const isSuccess = (u: unknown): u is { readonly _tag: "Success"; readonly value: unknown } =>
  typeof u === "object" && u !== null && (u as { readonly _tag?: unknown })._tag === "Success" && "value" in u

/** @internal */
export const codecsOf = (rpc: Rpc.AnyWithProps): Codecs => {
  let codecs = cache.get(rpc)
  if (codecs !== undefined) return codecs
  const options: SchemaAST.ParseOptions = Context.get(rpc.annotations, Rpc.ParseOptions)
  const format = Formats.of(Context.get(rpc.annotations, WireFormat.Format))
  const sealed = Context.get(rpc.annotations, Sealed.Sealed)
  const exit = json(Rpc.exitSchema(rpc as Rpc.Any))
  const encodeFullExit = Schema.encodeUnknownExit(exit, options)
  const decodeFullExit = Schema.decodeUnknownExit(exit, options) as (
    u: unknown
  ) => Exit.Exit<Exit.Exit<unknown, unknown>, Schema.SchemaError>
  const payload = json(rpc.payloadSchema)
  const encodePayload = Schema.encodeUnknownExit(payload, options)
  const decodePayload = Schema.decodeUnknownExit(payload, options)
  const encodePayloadSync = Schema.encodeUnknownSync(payload, options)
  if (RpcSchema.isStreamSchema(rpc.successSchema)) {
    // a stream's Exit carries no value: nothing to take a shorter way for
    codecs = { format, sealed, encodePayload, encodePayloadSync, decodePayload, encodeExit: encodeFullExit, decodeExit: decodeFullExit }
    cache.set(rpc, codecs)
    return codecs
  }
  const success = json(rpc.successSchema)
  const encodeSuccess = Schema.encodeUnknownExit(success, options)
  const decodeSuccess = Schema.decodeUnknownExit(success, options)
  codecs = {
    format,
    sealed,
    encodePayload,
    encodePayloadSync,
    decodePayload,
    encodeExit: (value) => {
      if (Exit.isFailure(value)) return encodeFullExit(value)
      const encoded = encodeSuccess(value.value)
      // a value its schema cannot encode: the Exit schema says why, as effect/rpc would
      return Exit.isSuccess(encoded) ? Exit.succeed({ _tag: "Success", value: encoded.value }) : encodeFullExit(value)
    },
    decodeExit: (u) => {
      if (!isSuccess(u)) return decodeFullExit(u)
      const decoded = decodeSuccess(u.value)
      return Exit.isSuccess(decoded) ? Exit.succeed(Exit.succeed(decoded.value)) : decodeFullExit(u)
    }
  }
  cache.set(rpc, codecs)
  return codecs
}

const formatIssue = SchemaIssue.makeFormatterDefault()

/**
 * A payload the rpc's schema refused to make (`makeOption` said none): the caller's `InvalidPayload`,
 * saying why. Every client path makes the payload first (effect/rpc's client would throw).
 *
 * @internal
 */
export const refusedPayload = (service: string, rpc: Rpc.AnyWithProps, payload: unknown): Effect.Effect<never, InvalidPayload> =>
  Effect.matchEffect(rpc.payloadSchema.makeEffect(payload), {
    onFailure: (issue) => Effect.fail(new InvalidPayload({ service, method: rpc._tag, issue: formatIssue(issue) })),
    onSuccess: () => Effect.fail(new InvalidPayload({ service, method: rpc._tag, issue: "its schema could not make it" }))
  })

/**
 * A call through effect/rpc's client, its payload made by its schema first, as a unary call's is: one
 * the schema refuses is the caller's typed `InvalidPayload` (effect/rpc's client would throw it), as
 * the method's result (`refused`: an effect, or a stream of it).
 *
 * @internal
 */
export const madeFirst = <O, A>(
  service: string,
  rpc: Rpc.AnyWithProps,
  call: (payload: unknown, options: O) => A,
  refused: (failure: Effect.Effect<never, InvalidPayload>) => A
) =>
(payload: unknown, options: O): A =>
  Option.isSome(rpc.payloadSchema.makeOption(payload)) ? call(payload, options) : refused(refusedPayload(service, rpc, payload))
