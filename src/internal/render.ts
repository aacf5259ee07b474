/**
 * How the `mesh` command and its shell print what the mesh says: a failed call as one line, and the
 * descriptions of running instances as an indented outline with TypeScript-like types.
 */
import { Duration } from "effect"
import type * as Discovery from "../Discovery.ts"
import { isServiceError } from "../ServiceError.ts"

/** a text on one line: its lines trimmed and joined with spaces */
export const oneLine = (text: string): string => text.split("\n").map((line) => line.trim()).filter((l) => l !== "").join(" ")

/** a failed call as one line: the mesh's errors by message, a contract's error as its tag and fields */
export const renderError = (error: unknown): string => {
  if (isServiceError(error)) return `${error._tag}: ${oneLine(error.message)}`
  if (typeof error === "object" && error !== null && "_tag" in error && typeof error._tag === "string") {
    const { _tag, ...fields } = error as { readonly _tag: string }
    return Object.keys(fields).length === 0 ? _tag : `${_tag} ${JSON.stringify(fields)}`
  }
  return error instanceof Error ? oneLine(error.message) : JSON.stringify(error)
}

/** a failed call as one line; one made without a payload to a method that takes one says so */
export const renderCallError = (error: unknown, payloadGiven: boolean): string =>
  !payloadGiven && isServiceError(error) && error._tag === "InvalidPayload"
    ? `InvalidPayload: no payload was given, and ${error.service}.${error.method} takes one (${oneLine(error.issue)})`
    : renderError(error)

/** the instances `Discovery.describe` found, by service, with the newest instance's rpcs and events */
export const renderDescriptions = (found: ReadonlyArray<Discovery.Description>, now: number): string => {
  const byService = new Map<string, Array<Discovery.Description>>()
  for (const d of found) byService.set(d.service, [...(byService.get(d.service) ?? []), d])
  const out: Array<string> = []
  for (const [service, instances] of byService) {
    out.push(`${service} (${instances.length} instance${instances.length === 1 ? "" : "s"})`)
    for (const i of instances) {
      const up = Duration.format(Duration.seconds(Math.max(0, Math.round((now - i.since) / 1000))))
      out.push(`  instance ${i.instanceId}  host ${i.host}  pid ${i.pid}  broker ${i.broker}  since ${new Date(i.since).toISOString()} (up ${up})`)
    }
    // the newest instance speaks for the contract (during a rolling deploy, the one being rolled out)
    const latest = instances[instances.length - 1]
    if (latest.rpcs.length > 0) out.push("  rpcs")
    for (const rpc of latest.rpcs) {
      const errors = typeOf(rpc.error)
      out.push(
        `    ${rpc.name}(${payloadOf(rpc.payload)}): ${rpc.stream ? "stream of " : ""}${typeOf(rpc.success)}` +
          (errors === "never" ? "" : `  fails with ${errors}`)
      )
    }
    if (latest.publishes.length > 0) out.push("  publishes")
    for (const e of latest.publishes) {
      out.push(`    ${e.source}.${e.type}${e.payload === undefined ? "" : ` ${typeOf(e.payload)}`}`)
    }
    if (latest.subscribes.length > 0) out.push("  subscribes")
    for (const e of latest.subscribes) out.push(`    ${e.source}.${e.type} (${e.delivery ?? "pool"})`)
    const others = latest.entrypoints.filter((name) => !name.startsWith("event "))
    if (others.length > 0) out.push(`  entrypoints\n${others.map((name) => `    ${name}`).join("\n")}`)
  }
  out.push("(mesh describe --json prints the full JSON Schemas)")
  return out.join("\n")
}

type Json = Discovery.JsonSchema

const payloadOf = (schema: Json): string => {
  if (schema["type"] === "null") return ""
  const rendered = typeOf(schema)
  return rendered.startsWith("{ ") && rendered.endsWith(" }") ? rendered.slice(2, -2) : rendered
}

/** a JSON Schema as a short TypeScript-like type, for reading (the JSON output is the reference) */
const typeOf = (schema: Json, defs: Json = (schema["$defs"] as Json | undefined) ?? {}, depth = 0): string => {
  if (depth > 6) return "…"
  const next = (s: unknown) => typeOf(s as Json, defs, depth + 1)
  const ref = schema["$ref"]
  if (typeof ref === "string") {
    const name = ref.replace(/^#\/\$defs\//, "")
    const target = defs[name]
    return target === undefined ? name.replace(/Encoded$/, "") : next(target)
  }
  if ("not" in schema && Object.keys(schema).length === 1) return "never"
  const anyOf = (schema["anyOf"] ?? schema["oneOf"]) as ReadonlyArray<Json> | undefined
  if (anyOf !== undefined) {
    // Schema.Number's JSON form also allows "Infinity", "-Infinity" and "NaN" as strings
    const plain = anyOf.filter((s) =>
      !(s["type"] === "string" && Array.isArray(s["enum"]) && s["enum"].every((v) => ["Infinity", "-Infinity", "NaN"].includes(v)))
    )
    const members = Array.from(new Set(plain.map(next))).filter((t) => t !== "never")
    return members.length === 0 ? "never" : members.join(" | ")
  }
  if (Array.isArray(schema["enum"])) return schema["enum"].map((v) => JSON.stringify(v)).join(" | ")
  if ("const" in schema) return JSON.stringify(schema["const"])
  switch (schema["type"]) {
    case "object": {
      const properties = (schema["properties"] ?? {}) as Record<string, Json>
      const required = new Set((schema["required"] ?? []) as ReadonlyArray<string>)
      const fields = Object.entries(properties).map(([key, value]) => `${key}${required.has(key) ? "" : "?"}: ${next(value)}`)
      if (fields.length === 0) {
        const additional = schema["additionalProperties"]
        return typeof additional === "object" && additional !== null ? `Record<string, ${next(additional)}>` : "{}"
      }
      return `{ ${fields.join(", ")} }`
    }
    case "array": {
      const prefix = schema["prefixItems"] as ReadonlyArray<Json> | undefined
      if (prefix !== undefined) return `[${prefix.map(next).join(", ")}]`
      return `Array<${schema["items"] === undefined ? "unknown" : next(schema["items"])}>`
    }
    case undefined:
      return "unknown"
    default:
      return Array.isArray(schema["type"]) ? schema["type"].join(" | ") : String(schema["type"])
  }
}
