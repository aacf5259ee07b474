/**
 * Reads a JSON value, or a JavaScript-like object literal (JSON5's syntax for data: unquoted keys,
 * single-quoted strings, trailing commas, comments, hex numbers), from the start of a
 * text, and says where it ended, so a command line may go on after it (`{ a: 1 } --timeout 1s`).
 *
 * A parser of its own rather than `eval` or `node:vm`: a payload typed into `mesh shell` is data, and
 * `vm` is no security boundary (`this.constructor.constructor("return process")()` escapes a context
 * with no globals), so nothing typed is ever run as code.
 *
 * @since 0.1.0
 */
import { Result } from "effect"

/**
 * A value read from a text: the value, and the index just after it (and the spaces after it).
 *
 * @since 0.1.0
 */
export interface Parsed {
  readonly value: unknown
  readonly end: number
}

/**
 * Reads one value at `start`; fails with a message naming the column where it went wrong.
 *
 * @since 0.1.0
 */
export const parsePrefix = (text: string, start = 0): Result.Result<Parsed, string> => {
  const reader = new Reader(text, start)
  const value = reader.value(0)
  if (reader.error !== undefined) return Result.fail(reader.error)
  reader.skip()
  return Result.succeed({ value, end: reader.at })
}

/**
 * Reads a text that is exactly one value.
 *
 * @since 0.1.0
 */
export const parse = (text: string): Result.Result<unknown, string> =>
  Result.flatMap(parsePrefix(text), ({ end, value }) =>
    end === text.length ? Result.succeed(value) : Result.fail(`unexpected ${describe(text, end)} after the value`))

// ---- internal ----

const maxDepth = 200
const identifierStart = /[A-Za-z_$]/
const identifierPart = /[A-Za-z0-9_$]/
const numberPattern = /^[+-]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)/
const escapes: Readonly<Record<string, string>> = { b: "\b", f: "\f", n: "\n", r: "\r", t: "\t", v: "\v", "0": "\0" }

const describe = (text: string, at: number): string =>
  at >= text.length ? "end of input" : `${JSON.stringify(text[at])} at column ${at + 1}`

/** a recursive descent over the text; the first error stops it and is kept in `error` */
class Reader {
  error: string | undefined = undefined
  readonly text: string
  at: number
  constructor(text: string, at: number) {
    this.text = text
    this.at = at
  }

  fail(message: string): undefined {
    this.error ??= message
    return undefined
  }

  /** spaces and comments */
  skip(): void {
    const text = this.text
    while (this.at < text.length) {
      const c = text[this.at]
      if (c === " " || c === "\t" || c === "\n" || c === "\r") this.at++
      else if (text.startsWith("//", this.at)) {
        const end = text.indexOf("\n", this.at)
        this.at = end === -1 ? text.length : end + 1
      } else if (text.startsWith("/*", this.at)) {
        const end = text.indexOf("*/", this.at + 2)
        this.at = end === -1 ? text.length : end + 2
      } else return
    }
  }

  value(depth: number): unknown {
    if (depth > maxDepth) return this.fail(`nested deeper than ${maxDepth} levels`)
    this.skip()
    const c = this.text[this.at]
    if (c === "{") return this.object(depth)
    if (c === "[") return this.array(depth)
    if (c === "\"" || c === "'") return this.string()
    const number = numberPattern.exec(this.text.slice(this.at))
    if (number !== null) {
      this.at += number[0].length
      const raw = number[0]
      const sign = raw.startsWith("-") ? -1 : 1
      const unsigned = raw.replace(/^[+-]/, "")
      return /^0[xX]/.test(unsigned) ? sign * Number.parseInt(unsigned.slice(2), 16) : sign * Number(unsigned)
    }
    const word = this.identifier()
    if (word === "true") return true
    if (word === "false") return false
    if (word === "null") return null
    if (word !== undefined) {
      this.at -= word.length
      return this.fail(`unexpected ${word} at column ${this.at + 1}: quote strings ("${word}")`)
    }
    return this.fail(`expected a value, got ${describe(this.text, this.at)}`)
  }

  identifier(): string | undefined {
    const start = this.at
    if (!identifierStart.test(this.text[this.at] ?? "")) return undefined
    while (this.at < this.text.length && identifierPart.test(this.text[this.at])) this.at++
    return this.text.slice(start, this.at)
  }

  string(): string | undefined {
    const quote = this.text[this.at]
    const start = this.at
    this.at++
    let out = ""
    while (this.at < this.text.length) {
      const c = this.text[this.at++]
      if (c === quote) return out
      if (c === "\n") break
      if (c !== "\\") {
        out += c
        continue
      }
      const e = this.text[this.at++] ?? ""
      if (e === "u") {
        const hex = this.text.slice(this.at, this.at + 4)
        if (!/^[0-9a-fA-F]{4}$/.test(hex)) return this.fail(`bad \\u escape at column ${this.at - 1}`)
        out += String.fromCharCode(Number.parseInt(hex, 16))
        this.at += 4
      } else if (e === "\n") {
        // a line continuation
      } else out += escapes[e] ?? e
    }
    return this.fail(`unterminated string starting at column ${start + 1}`)
  }

  object(depth: number): Record<string, unknown> | undefined {
    this.at++
    const out: Record<string, unknown> = {}
    while (this.error === undefined) {
      this.skip()
      if (this.text[this.at] === "}") {
        this.at++
        return out
      }
      const c = this.text[this.at]
      const key = c === "\"" || c === "'" ? this.string() : this.identifier() ?? this.numericKey()
      if (key === undefined) return this.fail(`expected a key or "}", got ${describe(this.text, this.at)}`)
      this.skip()
      if (this.text[this.at] !== ":") return this.fail(`expected ":" after key ${JSON.stringify(key)}, got ${describe(this.text, this.at)}`)
      this.at++
      const value = this.value(depth + 1)
      if (this.error !== undefined) return undefined
      // own data property even for "__proto__": a payload never sets an object's prototype
      Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true })
      this.skip()
      if (this.text[this.at] === ",") this.at++
      else if (this.text[this.at] !== "}") return this.fail(`expected "," or "}", got ${describe(this.text, this.at)}`)
    }
    return undefined
  }

  numericKey(): string | undefined {
    const match = /^\d+/.exec(this.text.slice(this.at))
    if (match === null) return undefined
    this.at += match[0].length
    return match[0]
  }

  array(depth: number): Array<unknown> | undefined {
    this.at++
    const out: Array<unknown> = []
    while (this.error === undefined) {
      this.skip()
      if (this.text[this.at] === "]") {
        this.at++
        return out
      }
      const value = this.value(depth + 1)
      if (this.error !== undefined) return undefined
      out.push(value)
      this.skip()
      if (this.text[this.at] === ",") this.at++
      else if (this.text[this.at] !== "]") return this.fail(`expected "," or "]", got ${describe(this.text, this.at)}`)
    }
    return undefined
  }
}
