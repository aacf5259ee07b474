/**
 * How RPC messages look on the broker. A request is one message: the method in `type`, the request id
 * in `correlationId`, the call context and trace ids in headers, the encoded payload as JSON body.
 * Replies and control messages carry effect/rpc's own encoded envelopes as JSON bodies.
 */
import { Option, Schema } from "effect"
import type { HeaderValue } from "../Broker.ts"
import type { ServiceError } from "../ServiceError.ts"
import { ServiceError as ServiceErrorSchema } from "../ServiceError.ts"

export const contentType = "application/json"

export const header = {
  client: "x-mesh-client",
  instance: "x-mesh-instance",
  traceId: "x-mesh-trace-id",
  spanId: "x-mesh-span-id",
  sampled: "x-mesh-sampled"
} as const

const encoder = new TextEncoder()
const decoder = new TextDecoder()

export const encodeJson = (value: unknown): Uint8Array => encoder.encode(JSON.stringify(value))

/** the one place a body is parsed: `None` for bytes that are not JSON */
export const decodeJson: (body: Uint8Array) => Option.Option<unknown> = Option.liftThrowable(
  (body: Uint8Array): unknown => JSON.parse(decoder.decode(body))
)

/** a control message from a client to the instance(s) running its request */
export interface Control {
  readonly _tag: "Interrupt" | "Ack"
  readonly client: string
  readonly requestId: string
}

export const isControl = (u: unknown): u is Control =>
  typeof u === "object" && u !== null && "_tag" in u && (u._tag === "Interrupt" || u._tag === "Ack") &&
  "client" in u && typeof u.client === "string" && "requestId" in u && typeof u.requestId === "string"

const encodeServiceError = Schema.encodeSync(ServiceErrorSchema)

/** an encoded Exit that fails the call with one of the mesh's own errors */
export const serviceErrorExit = (error: ServiceError) => ({
  _tag: "Failure" as const,
  cause: [{ _tag: "Die" as const, defect: encodeServiceError(error) }]
})

/** the headers a request carries, flattened for the broker */
export const stringHeaders = (headers: Readonly<Record<string, HeaderValue>> | undefined): Record<string, string> => {
  const out: Record<string, string> = {}
  if (headers === undefined) return out
  for (const key in headers) out[key] = String(headers[key])
  return out
}
