/**
 * `mesh shell`: a REPL with the running cluster at hand, on node's `readline` (wrapped here, once).
 *
 * A line is a call (`calculator.add {a: 1, b: 2} --timeout 500ms`), or one of the commands `help`
 * lists. Payloads are JSON or object literals read by `literal.ts`, never run as code. Streams print
 * each element as it arrives; `tail` prints events as they are published, in the background; errors
 * print one line and the session goes on. Ctrl-C interrupts the running command, Ctrl-D (or `exit`)
 * ends the session. Tab completes commands, services and methods (from discovery) and event types.
 * The lines typed are kept in a history file across sessions.
 */
import { Cause, Clock, Deferred, Duration, Effect, Exit, Fiber, FiberSet, Option, Queue, Result, Schema, Stream } from "effect"
import { mkdirSync, readFileSync, writeFileSync } from "node:fs"
import { dirname } from "node:path"
import * as readline from "node:readline"
import type { Broker, Delivery } from "../Broker.ts"
import { Broker as BrokerTag } from "../Broker.ts"
import * as CallContext from "../CallContext.ts"
import * as Discovery from "../Discovery.ts"
import * as Event from "../Event.ts"
import * as ServiceClient from "../ServiceClient.ts"
import * as literal from "./literal.ts"
import { renderCallError, renderDescriptions, renderError } from "./render.ts"
import * as topology from "./topology.ts"
import * as wire from "./wire.ts"

/**
 * Where the shell reads and writes, and what its calls start with.
 *
 * @since 0.1.0
 */
export interface Options {
  readonly input: NodeJS.ReadableStream
  readonly output: NodeJS.WritableStream
  /** a terminal: line editing, a prompt, Tab completion, Ctrl-C (else lines are read as they come) */
  readonly terminal: boolean
  /** the history file (none: no history is read or kept) */
  readonly historyFile: string | undefined
  /** how many lines the history keeps (default 1000) */
  readonly historySize?: number | undefined
  /** the calls' timeout until `timeout` changes it */
  readonly timeout: Duration.Duration
  readonly user: string | undefined
  readonly context: Readonly<Record<string, string>>
  /** a line printed first (where the shell is connected) */
  readonly banner?: string | undefined
}

/**
 * Runs the shell until its input ends or `exit`.
 *
 * @since 0.1.0
 */
export const run = (options: Options): Effect.Effect<void, never, Broker | ServiceClient.Transport> =>
  Effect.scoped(Effect.gen(function*() {
    const runFork = yield* FiberSet.makeRuntime<Broker | ServiceClient.Transport>()
    const session = new Session(options, (effect) => runFork(effect))
    const lines = yield* Queue.make<string, Cause.Done>()
    const history = loadHistory(options.historyFile, session.historySize)
    const rl = yield* Effect.acquireRelease(
      Effect.sync(() =>
        readline.createInterface({
          input: options.input,
          output: options.output,
          terminal: options.terminal,
          prompt: "mesh> ",
          history: [...history].reverse(),
          historySize: session.historySize,
          removeHistoryDuplicates: true,
          completer: (line: string): [Array<string>, string] => {
            if (session.stale()) runFork(session.refresh)
            return session.complete(line)
          }
        })
      ),
      (rl) => Effect.sync(() => rl.close())
    )
    session.rl = rl
    rl.on("line", (line) => Queue.offerUnsafe(lines, line))
    rl.on("close", () => Queue.endUnsafe(lines))
    rl.on("SIGINT", () => {
      const running = session.running
      if (running !== undefined) {
        runFork(Fiber.interrupt(running))
        return
      }
      rl.write(null, { ctrl: true, name: "u" })
      session.print("(Ctrl-D or exit to leave)")
    })
    session.history = history
    if (options.banner !== undefined) session.print(options.banner)
    session.print("help lists the commands; Tab completes services, methods and events; Ctrl-D leaves")
    runFork(session.refresh)
    session.prompt()
    while (true) {
      const line = yield* Effect.exit(Queue.take(lines))
      if (Exit.isFailure(line)) break
      session.remember(line.value)
      const fiber = yield* Effect.forkChild(execute(session, line.value))
      session.running = fiber
      const exit = yield* Fiber.await(fiber)
      if (Exit.isFailure(exit)) session.print("interrupted")
      session.running = undefined
      if (Exit.isSuccess(exit) && exit.value === "exit") break
      session.prompt()
    }
    for (const fiber of session.tails.values()) yield* Fiber.interrupt(fiber)
  }))

// ---- internal ----

type Requirements = Broker | ServiceClient.Transport

interface Catalog {
  /** service → its methods */
  readonly services: ReadonlyMap<string, ReadonlyArray<string>>
  /** "source.type" of the events instances publish or subscribe to */
  readonly events: ReadonlyArray<string>
}

const commands = ["help", "exit", "services", "describe", "emit", "tail", "untail", "timeout", "user", "context"]

const helpText = [
  "<service>.<method> [payload] [--timeout <duration>] [--user <id>] [--context key=value]...",
  "                               call a method; the payload is JSON or an object literal ({a: 1, b: 'x'})",
  "emit <source>.<type> <payload> publish an event (confirmed by the broker)",
  "tail <source>[.<type>]         print the events of a type (or all of a source) as they are published",
  "untail [<source>[.<type>]]     stop one tail (or all)",
  "describe [<service>] [--wait <duration>]   the live instances, their rpcs and events",
  "services                       the services and methods discovery knows",
  "timeout [<duration>]           show or set the calls' timeout",
  "user [<id> | -]                show, set or clear the calls' user id",
  "context [key=value | key= | clear]...      show or change the calls' context entries",
  "exit                           leave (or Ctrl-D); Ctrl-C interrupts a running call"
].join("\n")

class Session {
  readonly historySize: number
  timeout: Duration.Duration
  user: string | undefined
  readonly context: Record<string, string>
  catalog: Catalog = { services: new Map(), events: [] }
  refreshedAt = Number.NEGATIVE_INFINITY
  running: Fiber.Fiber<"exit" | "continue"> | undefined = undefined
  readonly tails = new Map<string, Fiber.Fiber<void, unknown>>()
  rl: readline.Interface | undefined = undefined
  /** the prompt was shown: output from the background goes above it */
  prompted = false
  history: Array<string> = []
  readonly options: Options
  /** runs an effect in the background, for as long as the session */
  readonly fork: <A, E>(effect: Effect.Effect<A, E, Requirements>) => Fiber.Fiber<A, E>

  constructor(options: Options, fork: <A, E>(effect: Effect.Effect<A, E, Requirements>) => Fiber.Fiber<A, E>) {
    this.options = options
    this.fork = fork
    this.historySize = options.historySize ?? 1000
    this.timeout = options.timeout
    this.user = options.user
    this.context = { ...options.context }
  }

  /** a line of output; in a terminal, above the line being typed when no command runs */
  print(text: string): void {
    const out = this.options.output
    if (this.options.terminal && this.running === undefined && this.prompted && this.rl !== undefined) {
      out.write(`\r\x1b[K${text}\n`)
      this.rl.prompt(true)
      return
    }
    out.write(`${text}\n`)
  }

  prompt(): void {
    if (!this.options.terminal) return
    this.prompted = true
    // what was typed while a command ran stays, with the cursor after it (readline's prompt() would
    // move the cursor to the start, so Tab would complete an empty word)
    this.rl?.prompt(true)
  }

  remember(line: string): void {
    const file = this.options.historyFile
    if (file === undefined || line.trim() === "" || this.history[this.history.length - 1] === line) return
    this.history.push(line)
    if (this.history.length > this.historySize) this.history.splice(0, this.history.length - this.historySize)
    saveHistory(file, this.history)
  }

  stale(): boolean {
    return performance.now() - this.refreshedAt > 5000
  }

  /** asks discovery again; completion uses the answer */
  readonly refresh: Effect.Effect<void, never, Broker> = Effect.suspend(() => {
    this.refreshedAt = performance.now()
    return Discovery.describe({ window: "500 millis" }).pipe(
      Effect.tap((found) => Effect.sync(() => this.learn(found))),
      Effect.ignore
    )
  })

  learn(found: ReadonlyArray<Discovery.Description>): void {
    const services = new Map<string, ReadonlyArray<string>>()
    const events = new Set<string>()
    for (const d of found) {
      services.set(d.service, d.rpcs.map((r) => r.name))
      for (const e of [...d.publishes, ...d.subscribes]) events.add(`${e.source}.${e.type}`)
    }
    this.catalog = { services, events: Array.from(events).sort() }
  }

  complete(line: string): [Array<string>, string] {
    const word = /\S*$/.exec(line)?.[0] ?? ""
    const before = line.slice(0, line.length - word.length).trim()
    const { events, services } = this.catalog
    const calls = Array.from(services, ([service, methods]) => methods.map((m) => `${service}.${m}`)).flat()
    let candidates: Array<string>
    if (before === "") {
      candidates = word.includes(".") ? calls : [...commands, ...Array.from(services.keys(), (s) => `${s}.`)]
    } else if (before === "emit" || before === "tail" || before === "untail") {
      candidates = before === "untail" ? Array.from(this.tails.keys()) : [...events]
    } else if (before === "describe") {
      candidates = Array.from(services.keys())
    } else candidates = []
    const hits = candidates.filter((c) => c.startsWith(word)).sort()
    return [hits, word]
  }
}

/** runs one line; "exit" ends the session. Failures are printed, never raised */
const execute = (session: Session, line: string): Effect.Effect<"exit" | "continue", never, Requirements> =>
  Effect.suspend((): Effect.Effect<"exit" | "continue", unknown, Requirements> => {
    const text = line.trim()
    if (text === "" || text.startsWith("#")) return Effect.succeed("continue")
    const head = /^\S+/.exec(text)?.[0] ?? ""
    const rest = text.slice(head.length).trim()
    const done = <E, R>(effect: Effect.Effect<unknown, E, R>) => Effect.as(effect, "continue" as const)
    switch (head) {
      case "exit":
      case "quit":
      case ".exit":
        return Effect.succeed("exit")
      case "help":
      case "?":
      case ".help":
        return done(Effect.sync(() => session.print(helpText)))
      case "services":
        return done(services(session))
      case "describe":
        return done(describe(session, rest))
      case "emit":
        return done(emit(session, rest))
      case "tail":
        return done(tail(session, rest))
      case "untail":
        return done(untail(session, rest))
      case "timeout":
        return done(setTimeout(session, rest))
      case "user":
        return done(Effect.sync(() => {
          if (rest === "-") session.user = undefined
          else if (rest !== "") session.user = rest
          session.print(`user: ${session.user ?? "(none)"}`)
        }))
      case "context":
        return done(setContext(session, rest))
    }
    if (/^[^.\s]+\.[^.\s]+$/.test(head)) return done(call(session, head, rest))
    return Effect.fail(`unknown command "${head}": try help, or <service>.<method> {payload}`)
  }).pipe(
    Effect.catchCause((cause) => {
      if (Cause.hasInterruptsOnly(cause)) return Effect.failCause(cause)
      const error = Cause.squash(cause)
      session.print(`error: ${typeof error === "string" ? error : renderError(error)}`)
      return Effect.succeed("continue" as const)
    }),
    Effect.orDie
  )

// ---- commands ----

/** the words of a command line; "double" or 'single' quotes keep spaces */
const words = (text: string): Array<string> =>
  Array.from(text.matchAll(/"([^"]*)"|'([^']*)'|(\S+)/g), (m) => m[1] ?? m[2] ?? m[3])

const parseDuration = (text: string): Effect.Effect<Duration.Duration, string> => {
  // "500ms", "5s", "2m" besides effect's "500 millis", "5 seconds"
  const short = /^(\d+(?:\.\d+)?)\s*(ms|s|m)$/.exec(text)
  const input = short === null
    ? text
    : `${short[1]} ${short[2] === "ms" ? "millis" : short[2] === "s" ? "seconds" : "minutes"}`
  return Option.match(Duration.fromInput(input as Duration.Input), {
    onNone: () => Effect.fail(`"${text}" is not a duration (try 5s, 500ms or "5 seconds")`),
    onSome: Effect.succeed
  })
}

interface CallFlags {
  readonly timeout: Duration.Duration | undefined
  readonly user: string | undefined
  readonly context: Record<string, string>
}

/** --timeout, --user and --context after a call's payload */
const parseFlags = (text: string): Effect.Effect<CallFlags, string> =>
  Effect.gen(function*() {
    const given = words(text)
    let timeout: Duration.Duration | undefined
    let user: string | undefined
    const context: Record<string, string> = {}
    for (let i = 0; i < given.length; i++) {
      const [flag, inline] = given[i].split(/=(.*)/s, 2)
      const value = inline ?? given[++i]
      if (value === undefined) return yield* Effect.fail(`${flag} needs a value`)
      if (flag === "--timeout") timeout = yield* parseDuration(value)
      else if (flag === "--user") user = value
      else if (flag === "--context") {
        const eq = value.indexOf("=")
        if (eq <= 0) return yield* Effect.fail(`--context takes key=value, got "${value}"`)
        context[value.slice(0, eq)] = value.slice(eq + 1)
      } else return yield* Effect.fail(`unknown option "${given[i - (inline === undefined ? 1 : 0)]}" (--timeout, --user, --context)`)
    }
    return { timeout, user, context }
  })

/** a payload and what follows it; no payload (or only flags) is undefined */
const payloadAndRest = (text: string): Effect.Effect<{ readonly payload: unknown; readonly rest: string }, string> => {
  if (text === "" || text.startsWith("--")) return Effect.succeed({ payload: undefined, rest: text })
  const parsed = literal.parsePrefix(text)
  if (Result.isFailure(parsed)) return Effect.fail(`the payload is not JSON or an object literal: ${parsed.failure}`)
  return Effect.succeed({ payload: parsed.success.value, rest: text.slice(parsed.success.end) })
}

const call = (session: Session, target: string, text: string) =>
  Effect.gen(function*() {
    const [service, method] = target.split(".")
    const { payload, rest } = yield* payloadAndRest(text)
    const flags = yield* parseFlags(rest)
    const timeout = flags.timeout ?? session.timeout
    const user = flags.user ?? session.user
    yield* ServiceClient.callUntyped(service, method, payload ?? null, { timeout }).pipe(
      Stream.runForEach((value) => Effect.sync(() => session.print(JSON.stringify(value)))),
      Effect.mapError((error) => renderCallError(error, payload !== undefined)),
      CallContext.withEntries({ ...session.context, ...flags.context }),
      (effect) => user === undefined ? effect : CallContext.withUserId(effect, user)
    )
  })

const splitEvent = (text: string): Effect.Effect<readonly [string, string | undefined], string> => {
  const match = /^([A-Za-z0-9_-]+)(?:\.(.+))?$/.exec(text)
  return match === null
    ? Effect.fail(`expected <source>.<type>, got "${text}"`)
    : Effect.succeed([match[1], match[2] === "*" || match[2] === "#" ? undefined : match[2]] as const)
}

const emit = (session: Session, text: string) =>
  Effect.gen(function*() {
    const target = /^\S*/.exec(text)?.[0] ?? ""
    const [source, type] = yield* splitEvent(target)
    if (type === undefined) return yield* Effect.fail(`expected <source>.<type>, got "${target}"`)
    const { payload, rest } = yield* payloadAndRest(text.slice(target.length).trim())
    if (payload === undefined) return yield* Effect.fail(`emit ${target} needs a payload`)
    if (rest.trim() !== "") return yield* Effect.fail(`unexpected "${rest.trim()}" after the payload`)
    const event = yield* Effect.try({
      try: () => Event.make(source, type, Schema.Unknown),
      catch: (error) => error instanceof Error ? error.message : String(error)
    })
    yield* Event.publish(event, payload).pipe(
      CallContext.withEntries(session.context),
      (effect) => session.user === undefined ? effect : CallContext.withUserId(effect, session.user)
    )
    session.print(`emitted ${source}.${type}`)
  })

/** a private queue bound to the source's exchange: sees every event published from now on */
const tail = (session: Session, text: string) =>
  Effect.gen(function*() {
    const [source, type] = yield* splitEvent(text)
    const key = `${source}.${type ?? "*"}`
    if (session.tails.has(key)) return yield* Effect.fail(`already tailing ${key}`)
    const broker = yield* BrokerTag
    const ready = yield* Deferred.make<void, unknown>()
    const follow = Effect.scoped(Effect.gen(function*() {
      const exchange = topology.eventExchange(source)
      yield* broker.declareExchange(exchange, "topic", { durable: true })
      const queue = yield* broker.declareQueue("", { exclusive: true, autoDelete: true })
      yield* broker.bindQueue(queue, exchange, type ?? "#")
      const consumer = yield* broker.consume(queue, { prefetch: 100, tag: `mesh shell: tail ${key}` })
      yield* Deferred.succeed(ready, undefined)
      yield* Stream.runForEach(consumer.deliveries, (delivery) =>
        Effect.andThen(Effect.sync(() => session.print(renderEvent(source, delivery))), delivery.ack))
    })).pipe(
      Effect.onExit((exit) =>
        Effect.suspend(() => {
          if (session.tails.get(key) === fiber) session.tails.delete(key)
          if (Exit.isSuccess(exit) || Cause.hasInterruptsOnly(exit.cause)) return Deferred.interrupt(ready)
          const error = Cause.squash(exit.cause)
          if (Deferred.isDoneUnsafe(ready)) session.print(`tail ${key} stopped: ${renderError(error)}`)
          return Deferred.fail(ready, error)
        })
      )
    )
    const fiber: Fiber.Fiber<void, unknown> = session.fork(follow)
    session.tails.set(key, fiber)
    yield* Deferred.await(ready)
    session.print(`tailing ${key} (untail ${key} stops it)`)
  })

const untail = (session: Session, text: string) =>
  Effect.gen(function*() {
    const keys = text === "" ? Array.from(session.tails.keys()) : [text.includes(".") ? text : `${text}.*`]
    if (keys.length === 0) return yield* Effect.fail("no tails are running")
    for (const key of keys) {
      const fiber = session.tails.get(key)
      if (fiber === undefined) return yield* Effect.fail(`not tailing ${key} (tailing: ${Array.from(session.tails.keys()).join(", ") || "nothing"})`)
      session.tails.delete(key)
      yield* Fiber.interrupt(fiber)
      session.print(`stopped tailing ${key}`)
    }
  })

const renderEvent = (source: string, delivery: Delivery): string => {
  const body = wire.decodeJson(delivery.body)
  const payload = Option.match(body, { onNone: () => "(not JSON)", onSome: (value) => JSON.stringify(value) })
  const context = CallContext.fromHeaders(wire.stringHeaders(delivery.properties.headers))
  const about = [
    ...(context.userId === undefined ? [] : [`user ${context.userId}`]),
    ...Object.entries(context.entries).map(([k, v]) => `${k}=${v}`)
  ]
  return `event ${source}.${delivery.routingKey} ${payload}${about.length === 0 ? "" : `  (${about.join(", ")})`}`
}

const services = (session: Session) =>
  Effect.gen(function*() {
    yield* session.refresh
    const found = session.catalog.services
    if (found.size === 0) return session.print("no services answered")
    for (const [service, methods] of found) session.print(`${service}: ${methods.join(", ")}`)
  })

const describe = (session: Session, text: string) =>
  Effect.gen(function*() {
    const given = words(text)
    const at = given.indexOf("--wait")
    const window = at === -1 ? Duration.seconds(1) : yield* parseDuration(given[at + 1] ?? "")
    const service = given.filter((_, i) => i !== at && i !== at + 1)[0]
    const found = yield* Discovery.describe({ service, window })
    if (service === undefined) session.learn(found)
    if (found.length === 0) {
      return session.print(service === undefined
        ? `no instances answered within ${Duration.format(window)}`
        : `no instance of "${service}" answered within ${Duration.format(window)}`)
    }
    session.print(renderDescriptions(found, yield* Clock.currentTimeMillis))
  })

const setTimeout = (session: Session, text: string) =>
  Effect.gen(function*() {
    if (text !== "") session.timeout = yield* parseDuration(text)
    session.print(`timeout: ${Duration.format(session.timeout)}`)
  })

const setContext = (session: Session, text: string) =>
  Effect.gen(function*() {
    for (const word of words(text)) {
      if (word === "clear") {
        for (const key of Object.keys(session.context)) delete session.context[key]
        continue
      }
      const eq = word.indexOf("=")
      if (eq <= 0) return yield* Effect.fail(`context takes key=value (key= removes it), got "${word}"`)
      const key = word.slice(0, eq)
      const value = word.slice(eq + 1)
      if (value === "") delete session.context[key]
      else session.context[key] = value
    }
    const entries = Object.entries(session.context)
    session.print(`context: ${entries.length === 0 ? "(empty)" : entries.map(([k, v]) => `${k}=${v}`).join(" ")}`)
  })

// ---- history (a file of lines, oldest first) ----

const readText = Option.liftThrowable((file: string) => readFileSync(file, "utf8"))

const loadHistory = (file: string | undefined, size: number): Array<string> =>
  file === undefined ? [] : Option.match(readText(file), {
    onNone: () => [],
    onSome: (text) => text.split("\n").filter((l) => l.trim() !== "").slice(-size)
  })

/** a history that cannot be written is no reason to stop the session: it is dropped */
const saveHistory = Option.liftThrowable((file: string, lines: ReadonlyArray<string>): void => {
  mkdirSync(dirname(file), { recursive: true })
  writeFileSync(file, `${lines.join("\n")}\n`, { mode: 0o600 })
})
