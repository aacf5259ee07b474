/**
 * The `mesh` command, on effect's CLI module: run services, call them and emit events from a shell,
 * describe the running cluster, show the effective configuration.
 *
 * ```sh
 * mesh run examples/calculator/service.ts            # every service Layer the module exports
 * mesh run ./services.ts:OrdersLive                  # one named Layer export
 * mesh run ./edge.ts --port 8080                     # and their HTTP routes, the RPC and WebSocket gateways
 * mesh call calculator.add '{"a":1,"b":2}'           # prints 3
 * mesh emit orders.order_placed '{"id":"o-1"}'
 * mesh describe calculator
 * mesh dlq orders                                    # why mesh.rpc.orders.dead's letters died; --replay, --purge
 * mesh show-config --config mesh.yaml
 * mesh keygen                                        # a key pair for a service's sealed methods
 * mesh shell                                         # a REPL: calculator.add {a: 1, b: 2}, emit, tail, describe
 * ```
 *
 * Configuration comes from the environment and an optional YAML or JSON file (`--config`, or
 * `MESH_CONFIG`), see `MeshConfig`. With `AMQP_URL` set, everything runs on RabbitMQ; without it
 * `mesh run` uses the embedded broker, which only the services of that one process share, so `call`,
 * `emit`, `describe` and `dlq` refuse to run without it. `mesh run` is `Mesh.layerConfig`: with a port
 * (`--port`, or `HTTP_PORT`) it serves HTTP, and it refuses to start services that declare HTTP routes
 * without one; `/metrics`, `/healthz` and `/readyz` are on that port and, with `--metrics-port` (or
 * `METRICS_PORT`), on one of their own; `OTEL_EXPORTER_OTLP_ENDPOINT` exports traces, metrics and logs. Failures print one line on stderr and exit non-zero: 1 when the mesh answered with an
 * error, 2 for bad input or configuration.
 *
 * @since 0.1.0
 */
import * as NodeServices from "@effect/platform-node/NodeServices"
import { Cause, Clock, Config, ConfigProvider, Console, Duration, Effect, Exit, Layer, Option, Redacted, Schedule, Schema, Stream } from "effect"
import type { Runtime } from "effect"
import { Argument, CliError, CliOutput, Command, Flag } from "effect/cli"
import { homedir } from "node:os"
import { isAbsolute, join, resolve } from "node:path"
import { pathToFileURL } from "node:url"
import * as AmqpBroker from "./AmqpBroker.ts"
import { Broker, BrokerError } from "./Broker.ts"
import * as CallContext from "./CallContext.ts"
import * as DeadLetters from "./DeadLetters.ts"
import * as Discovery from "./Discovery.ts"
import * as Event from "./Event.ts"
import * as MemoryBroker from "./MemoryBroker.ts"
import type * as Mesh from "./Mesh.ts"
import * as MeshConfig from "./MeshConfig.ts"
import * as Sealed from "./Sealed.ts"
import * as Service from "./Service.ts"
import * as ServiceClient from "./ServiceClient.ts"
import { oneLine, renderCallError, renderDescriptions } from "./internal/render.ts"
import * as Permissions from "./internal/permissions.ts"
import * as Shell from "./internal/shell.ts"
import * as Tls from "./internal/tls.ts"

// ---- models ----

/**
 * Why a command failed, as one line for the user, with the process's exit code.
 *
 * @since 0.1.0
 */
export class CliFailure extends Schema.TaggedError<CliFailure>()("CliFailure", {
  message: Schema.String,
  exitCode: Schema.Number
}) {}

/**
 * The version `mesh --version` prints.
 *
 * @since 0.1.0
 */
export const version = "0.1.0"

// ---- commands ----

const root = Command.make("mesh").pipe(
  Command.withSharedFlags({
    config: Flag.String("config").pipe(
      Flag.withDescription("a YAML or JSON config file (default: $MESH_CONFIG); values may use ${VAR:default}"),
      Flag.optional
    )
  }),
  Command.withDescription("Run effect-mesh services, call them, emit events, describe the cluster")
)

const runCommand = Command.make(
  "run",
  {
    modules: Argument.String("module").pipe(
      Argument.withDescription("a module exporting service Layers, or module:Export for one Layer export"),
      Argument.variadic({ min: 1 })
    ),
    port: Flag.Int("port").pipe(
      Flag.withDescription("serve HTTP on this port (default: $HTTP_PORT; 0 picks a free one): the services' routes, the gateways"),
      Flag.optional
    ),
    metricsPort: Flag.Int("metrics-port").pipe(
      Flag.withDescription("serve /metrics, /healthz and /readyz on this port (default: $METRICS_PORT)"),
      Flag.optional
    )
  },
  Effect.fnUntraced(function*({ modules, port, metricsPort }) {
    const file = yield* loadConfig
    return yield* serve(modules, {
      file,
      port: Option.getOrUndefined(port),
      metricsPort: Option.getOrUndefined(metricsPort)
    }).pipe(withConfig(file))
  })
).pipe(
  Command.withDescription("Start the service Layers a module exports; SIGTERM / SIGINT drain and stop them"),
  Command.withExamples([
    { command: "mesh run examples/calculator/service.ts", description: "every service the module exports" },
    { command: "mesh run ./services.ts:OrdersLive", description: "one Layer export" },
    { command: "mesh run ./edge.ts --port 8080", description: "with HTTP: routes, /rpc/<service>/<method>, /ws" }
  ])
)

const callCommand = Command.make(
  "call",
  {
    target: Argument.String("service.method").pipe(Argument.withDescription("the service and method to call")),
    payload: Argument.String("json").pipe(
      Argument.withDescription("the payload as JSON (default: null, for methods without payload)"),
      Argument.optional
    ),
    timeout: Flag.String("timeout").pipe(
      Flag.withDescription("how long to wait for the answer (default: 30 seconds), e.g. \"5 seconds\", \"500 millis\""),
      Flag.withDefault("30 seconds")
    ),
    context: Flag.KeyValuePair("context").pipe(
      Flag.withDescription("a call context entry, key=value (repeatable)"),
      Flag.optional
    ),
    user: Flag.String("user").pipe(Flag.withDescription("the call context's user id"), Flag.optional)
  },
  Effect.fnUntraced(function*({ context, payload, target, timeout, user }) {
    const file = yield* loadConfig
    const [service, method] = yield* splitTarget(target, "service.method")
    const body = yield* Option.match(payload, { onNone: () => Effect.succeed(null), onSome: parseJson })
    const duration = yield* parseDuration(timeout)
    const entries = Option.getOrElse(context, () => ({}))
    const call = ServiceClient.callUntyped(service, method, body, { timeout: duration }).pipe(
      Stream.runForEach((value) => Console.log(JSON.stringify(value))),
      Effect.mapError((error) => new CliFailure({ message: renderCallError(error, Option.isSome(payload)), exitCode: 1 })),
      CallContext.withEntries(entries),
      (effect) => Option.isSome(user) ? CallContext.withUserId(effect, user.value) : effect
    )
    return yield* onRabbitMQ("call", layerCommandClient, file)(call)
  })
).pipe(
  Command.withDescription("Call a method and print its result (each element of a stream on its own line)"),
  Command.withExamples([
    { command: "mesh call calculator.add '{\"a\":1,\"b\":2}'", description: "prints 3" },
    { command: "mesh call calculator.countdown '{\"from\":3}'", description: "prints 3, 2, 1, 0 on four lines" }
  ])
)

const emitCommand = Command.make(
  "emit",
  {
    target: Argument.String("source.event").pipe(Argument.withDescription("the emitting service and the event type")),
    payload: Argument.String("json").pipe(Argument.withDescription("the event's payload as JSON"))
  },
  Effect.fnUntraced(function*({ payload, target }) {
    const file = yield* loadConfig
    const [source, type] = yield* splitTarget(target, "source.event")
    const body = yield* parseJson(payload)
    const event = yield* Effect.try({
      try: () => Event.make(source, type, Schema.Unknown),
      catch: (error) => new CliFailure({ message: messageOf(error), exitCode: 2 })
    })
    return yield* onRabbitMQ("emit", layerCommandBroker, file)(Event.publish(event, body).pipe(
      Effect.mapError((error) => new CliFailure({ message: oneLine(error.message), exitCode: 1 })),
      Effect.andThen(Console.log(`emitted ${source}.${type}`))
    ))
  })
).pipe(
  Command.withDescription("Publish an event (confirmed by the broker)"),
  Command.withExamples([{ command: "mesh emit orders.order_placed '{\"id\":\"o-1\"}'", description: "" }])
)

const describeCommand = Command.make(
  "describe",
  {
    service: Argument.String("service").pipe(Argument.withDescription("only this service"), Argument.optional),
    json: Flag.Boolean("json").pipe(Flag.withDescription("print the descriptions as JSON, on one line"), Flag.withDefault(false)),
    wait: Flag.String("wait").pipe(
      Flag.withDescription("how long to collect answers, e.g. \"2 seconds\""),
      Flag.withDefault("1 second")
    )
  },
  Effect.fnUntraced(function*({ json, service, wait }) {
    const file = yield* loadConfig
    const window = yield* parseDuration(wait)
    const name = Option.getOrUndefined(service)
    const describe = Effect.gen(function*() {
      const found = yield* Discovery.describe({ service: name, window })
      if (found.length === 0 && name !== undefined) {
        return yield* new CliFailure({
          message: `no instance of "${name}" answered within ${Duration.format(window)}`,
          exitCode: 1
        })
      }
      if (json) return yield* Console.log(JSON.stringify(found))
      if (found.length === 0) return yield* Console.log(`no instances answered within ${Duration.format(window)}`)
      const now = yield* Clock.currentTimeMillis
      yield* Console.log(renderDescriptions(found, now))
    })
    return yield* onRabbitMQ("describe", layerCommandBroker, file)(describe)
  })
).pipe(Command.withDescription("List the live instances, their rpcs (JSON Schemas) and events"))

const dlqCommand = Command.make(
  "dlq",
  {
    queue: Argument.String("queue").pipe(
      Argument.withDescription("a dead-letter queue (<subscription>.dead), or a service for mesh.rpc.<service>.dead")
    ),
    replay: Flag.Boolean("replay").pipe(
      Flag.withDescription("publish each back to the queue it died in, then remove it"),
      Flag.withDefault(false)
    ),
    purge: Flag.Boolean("purge").pipe(Flag.withDescription("remove them"), Flag.withDefault(false)),
    limit: Flag.Int("limit").pipe(Flag.withDescription("only the oldest n (default: all)"), Flag.optional),
    json: Flag.Boolean("json").pipe(Flag.withDescription("list them as JSON, on one line"), Flag.withDefault(false)),
    wait: Flag.String("wait").pipe(
      Flag.withDescription("stop reading once none arrived for this long, e.g. \"2 seconds\""),
      Flag.withDefault("1 second")
    )
  },
  Effect.fnUntraced(function*({ json, limit, purge, queue, replay, wait }) {
    const file = yield* loadConfig
    if (replay && purge) {
      return yield* new CliFailure({ message: "choose one of --replay and --purge", exitCode: 2 })
    }
    const name = DeadLetters.queueOf(queue)
    const options = { limit: Option.getOrUndefined(limit), wait: yield* parseDuration(wait) }
    const work = replay
      ? replayLetters(name, options)
      : purge
      ? Effect.flatMap(DeadLetters.purge(name, options), (n) => Console.log(`purged ${plural(n, "dead letter")} from ${name}`))
      : Effect.flatMap(DeadLetters.list(name, options), (letters) =>
        Console.log(json ? JSON.stringify(letters.map(letterJson)) : renderLetters(name, letters)))
    return yield* onRabbitMQ("dlq", layerCommandBroker, file)(Effect.catchIf(
      work,
      (error) => error._tag === "BrokerError" && error.reason === "NotFound",
      () => Effect.fail(new CliFailure({ message: `no queue ${name}`, exitCode: 1 }))
    ))
  })
).pipe(
  Command.withDescription("List a dead-letter queue (why, when and where each died), or replay or purge it"),
  Command.withExamples([
    { command: "mesh dlq orders", description: "the dead rpc requests and commands of orders" },
    { command: "mesh dlq mesh.events.orders.order_placed.pool.billing.dead --replay", description: "back to billing" },
    { command: "mesh dlq orders --purge --limit 100", description: "remove the oldest 100" }
  ])
)

const showConfigCommand = Command.make(
  "show-config",
  {},
  Effect.fnUntraced(function*() {
    const file = yield* loadConfig
    const show = Effect.gen(function*() {
      const settings = yield* MeshConfig.show(file)
      const location = yield* MeshConfig.brokerLocation
      const width = Math.max(...settings.map((s) => s.key.length))
      const lines = [
        `config file: ${file === undefined ? "none (environment only; use --config or MESH_CONFIG)" : file.path}`,
        `broker: ${location}`,
        ...settings.map((s) => `${s.key.padEnd(width)} = ${s.value}  (${s.source})`)
      ]
      yield* Console.log(lines.join("\n"))
    })
    return yield* show.pipe(mapSetupErrors, withConfig(file))
  })
).pipe(Command.withDescription("Print the effective configuration, secrets redacted"))

const keygenCommand = Command.make(
  "keygen",
  {},
  () =>
    Effect.flatMap(Sealed.generateKeyPair, (pair) =>
      Console.log([
        `${Sealed.configKeys.privateKey}=${Redacted.value(pair.privateKey)}`,
        `# the public key, for callers given it (Sealed.layerPublicKeys); discovery announces it too: ${pair.publicKey}`
      ].join("\n")))
).pipe(
  Command.withDescription("Make an X25519 key pair for a service's sealed methods: its private key as config, its public key"),
  Command.withExamples([{ command: "mesh keygen >> .env", description: "the key for the service's environment" }])
)

const permissionsCommand = Command.make(
  "permissions",
  {
    modules: Argument.String("module").pipe(
      Argument.withDescription("a module exporting service Layers, or module:Export for one Layer export"),
      Argument.variadic({ min: 1 })
    ),
    user: Flag.String("user").pipe(Flag.withDescription("the RabbitMQ user, for the rabbitmqctl line"), Flag.withDefault("<user>")),
    vhost: Flag.String("vhost").pipe(Flag.withDescription("the virtual host, for the rabbitmqctl line"), Flag.withDefault("/")),
    json: Flag.Boolean("json").pipe(Flag.withDescription("print them as JSON, on one line"), Flag.withDefault(false))
  },
  Effect.fnUntraced(function*({ modules, user, vhost, json }) {
    const loaded = (yield* Effect.forEach(modules, load)).flat()
    const permissions = yield* Permissions.of(
      loaded.map((l) => l.layer),
      loaded.flatMap((l) => l.service === undefined ? [] : [l.service])
    ).pipe(
      Effect.mapError((error) => new CliFailure({ message: `the services could not start: ${messageOf(error)}`, exitCode: 1 }))
    )
    if (json) return yield* Console.log(JSON.stringify(permissions))
    const quote = (s: string) => `'${s.replace(/'/g, "'\\''")}'`
    yield* Console.log([
      `# what ${permissions.services.join(", ")} need on RabbitMQ (configure, write, read)`,
      `configure: ${permissions.configure}`,
      `write:     ${permissions.write}`,
      `read:      ${permissions.read}`,
      `rabbitmqctl set_permissions -p ${quote(vhost)} ${quote(user)} ${quote(permissions.configure)} ${
        quote(permissions.write)
      } ${quote(permissions.read)}`
    ].join("\n"))
  })
).pipe(
  Command.withDescription("Print the RabbitMQ permissions a module's services (and their clients) need, least privilege"),
  Command.withExamples([
    { command: "mesh permissions examples/calculator/service.ts --user calculator", description: "as rabbitmqctl takes them" }
  ])
)

const shellCommand = Command.make(
  "shell",
  {
    timeout: Flag.String("timeout").pipe(
      Flag.withDescription("the calls' timeout (default: 30 seconds) until the shell's timeout command changes it"),
      Flag.withDefault("30 seconds")
    ),
    context: Flag.KeyValuePair("context").pipe(
      Flag.withDescription("a call context entry for every call, key=value (repeatable)"),
      Flag.optional
    ),
    user: Flag.String("user").pipe(Flag.withDescription("the call context's user id for every call"), Flag.optional),
    history: Flag.String("history").pipe(
      Flag.withDescription("the history file (default: $MESH_SHELL_HISTORY, else ~/.mesh_history; \"\" keeps none)"),
      Flag.optional
    )
  },
  Effect.fnUntraced(function*({ context, history, timeout, user }) {
    const file = yield* loadConfig
    const duration = yield* parseDuration(timeout)
    const shell = Effect.gen(function*() {
      const fromConfig = yield* Config.option(Config.String("MESH_SHELL_HISTORY"))
      const path = Option.getOrElse(Option.orElse(history, () => fromConfig), () => join(homedir(), ".mesh_history"))
      const location = yield* MeshConfig.brokerLocation
      yield* Shell.run({
        input: process.stdin,
        output: process.stdout,
        terminal: process.stdin.isTTY === true && process.stdout.isTTY === true,
        historyFile: path === "" ? undefined : path,
        timeout: duration,
        user: Option.getOrUndefined(user),
        context: Option.getOrElse(context, () => ({})),
        banner: `mesh shell on ${location}`
      })
    })
    return yield* onRabbitMQ("shell", layerCommandClient, file)(shell)
  })
).pipe(
  Command.withDescription("An interactive shell on the running cluster: calls, events, tails, describe (help inside lists it all)"),
  Command.withExamples([
    { command: "mesh shell", description: "then: calculator.add {a: 1, b: 2}" },
    { command: "mesh shell --user ada --context tenant=acme --timeout \"5 seconds\"", description: "for every call" }
  ])
)

/**
 * The `mesh` command and its subcommands.
 *
 * @since 0.1.0
 */
export const command = root.pipe(
  Command.withSubcommands([
    runCommand,
    callCommand,
    emitCommand,
    describeCommand,
    dlqCommand,
    showConfigCommand,
    keygenCommand,
    permissionsCommand,
    shellCommand
  ])
)

/**
 * Runs `mesh` with the process's arguments: failures are printed as one line on stderr and carry
 * their exit code (see `teardown`).
 *
 * @since 0.1.0
 */
export const main: Effect.Effect<void, unknown> = Command.run(command, { version }).pipe(
  Effect.catchCause((cause) => report(cause)),
  // a wrong invocation is one line on stderr (see `report`), not the help and an error block
  Effect.provideService(CliOutput.Presenter, {
    present: (event) => event._tag === "InvalidInvocation" ? Effect.void : CliOutput.defaultPresenter.present(event)
  }),
  Effect.provide(NodeServices.layer)
)

/**
 * The exit code of `main`'s result: 0 on success and after `mesh run` stopped gracefully on a signal,
 * the failure's code otherwise, 130 when interrupted.
 *
 * @since 0.1.0
 */
export const teardown: Runtime.Teardown = (exit, onExit) => {
  if (Exit.isSuccess(exit)) return onExit(0)
  if (Cause.hasInterruptsOnly(exit.cause)) return onExit(state.stoppedGracefully ? 0 : 130)
  const error = Cause.squash(exit.cause)
  return onExit(error instanceof CliFailure ? error.exitCode : 1)
}

// ---- internal ----

const state = { stoppedGracefully: false }

const messageOf = (error: unknown): string => oneLine(error instanceof Error ? error.message : String(error))

/** the config file named by --config or MESH_CONFIG, loaded */
const loadConfig = Effect.gen(function*() {
  const flags = yield* root
  const fromEnv = yield* Config.option(Config.String("MESH_CONFIG")).pipe(Effect.orElseSucceed(Option.none))
  const path = Option.orElse(flags.config, () => fromEnv)
  if (Option.isNone(path)) return undefined
  return yield* MeshConfig.loadFile(path.value).pipe(
    Effect.mapError((error) => new CliFailure({ message: `config file ${error.path}: ${error.message}`, exitCode: 2 }))
  )
})

const withConfig = (file: MeshConfig.File | undefined) => <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.provideService(effect, ConfigProvider.ConfigProvider, MeshConfig.provider(file))

/** broker, config and layer-building failures, as one line */
const mapSetupErrors = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, CliFailure, R> =>
  Effect.mapError(effect, (error): CliFailure => {
    if (error instanceof CliFailure) return error
    const tag = typeof error === "object" && error !== null && "_tag" in error ? String(error._tag) : ""
    if (tag === "BrokerError") return new CliFailure({ message: `broker: ${messageOf(error)}`, exitCode: 1 })
    return new CliFailure({ message: `${tag === "" ? "" : `${tag}: `}${messageOf(error)}`, exitCode: 2 })
  })

/**
 * RabbitMQ for a command that runs once (`call`, `emit`, `describe`, `dlq`, `shell`): three quick
 * attempts to connect rather than the services' 30 seconds of retries, so an unreachable broker is
 * said at once, as bad configuration (exit code 2)
 */
const layerCommandBroker: Layer.Layer<Broker, BrokerError | CliFailure | Config.ConfigError> = Layer.unwrap(
  // without AMQP_URL, the embedded broker: `requireBroker` refuses the command once it runs
  Effect.map(MeshConfig.amqpUrl, (url) => Option.isNone(url) ? MemoryBroker.layer : Layer.effect(Broker, connectOnce(url.value)))
)

const connectOnce = Effect.fnUntraced(function*(url: Redacted.Redacted<string>) {
  const connectTimeout = yield* Config.Duration("AMQP_CONNECT_TIMEOUT").pipe(Config.withDefault(Duration.seconds(5)))
  const connectionName = yield* Config.String("AMQP_CONNECTION_NAME").pipe(Config.withDefault("effect-mesh cli"))
  const socketOptions = yield* Tls.socketOptions(yield* Tls.config, Redacted.value(url)).pipe(
    Effect.mapError((error) => unreachable(Redacted.value(url), error))
  )
  return yield* AmqpBroker.make({
    url,
    connectTimeout,
    connectionName,
    socketOptions,
    initialConnect: Schedule.max([Schedule.exponential("200 millis"), Schedule.recurs(2)])
  }).pipe(Effect.mapError((error) => unreachable(Redacted.value(url), error)))
})

/** what `call` and `shell` call services with */
const layerCommandClient = ServiceClient.layer.pipe(Layer.provideMerge(layerCommandBroker))

const unreachable = (url: string, error: BrokerError): CliFailure =>
  new CliFailure({
    message: `cannot reach RabbitMQ at ${MeshConfig.redactUrl(url)}: ` +
      `${oneLine(error.message).replace(/^could not connect to \S+: (connect: )?/, "")} ` +
      (error.reason === "Tls" ? `(check AMQP_TLS_*, or amqp.tls in --config)` : `(check AMQP_URL, or amqp.url in --config)`),
    exitCode: 2
  })

/** the embedded broker lives inside one process: a shell command on it would reach nobody */
/**
 * A command that runs once on RabbitMQ: refused without it, given the layer it needs, its failures one
 * line, read with the config file's settings
 */
const onRabbitMQ = <ROut, EL>(what: string, layer: Layer.Layer<ROut, EL>, file: MeshConfig.File | undefined) =>
<A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, CliFailure, Exclude<R, ROut>> =>
  requireBroker(what).pipe(
    Effect.andThen(effect),
    Effect.provide(layer),
    mapSetupErrors,
    withConfig(file)
  )

const requireBroker = (what: string): Effect.Effect<void, CliFailure | Config.ConfigError> =>
  Effect.flatMap(MeshConfig.amqpUrl, (url) =>
    Option.isSome(url) ? Effect.void : Effect.fail(
      new CliFailure({
        message: `${what} needs RabbitMQ: set AMQP_URL (or amqp.url in --config). Without it \`mesh run\` ` +
          `uses the embedded broker, which only the services in that one process can reach`,
        exitCode: 2
      })
    ))

const splitTarget = (target: string, shape: string): Effect.Effect<readonly [string, string], CliFailure> => {
  const dot = target.indexOf(".")
  return dot <= 0 || dot === target.length - 1
    ? Effect.fail(new CliFailure({ message: `expected ${shape}, got "${target}"`, exitCode: 2 }))
    : Effect.succeed([target.slice(0, dot), target.slice(dot + 1)] as const)
}

const parseJson = (text: string): Effect.Effect<unknown, CliFailure> =>
  Effect.try({
    try: (): unknown => JSON.parse(text),
    catch: (error) => new CliFailure({ message: `the payload is not valid JSON: ${messageOf(error)}`, exitCode: 2 })
  })

const parseDuration = (text: string): Effect.Effect<Duration.Duration, CliFailure> =>
  Option.match(Duration.fromInput(text as Duration.Input), {
    onNone: () =>
      Effect.fail(new CliFailure({ message: `"${text}" is not a duration (try "5 seconds" or "500 millis")`, exitCode: 2 })),
    onSome: Effect.succeed
  })

/** prints what `Command.run` did not (it renders its own parse errors), as one line */
const report = (cause: Cause.Cause<unknown>): Effect.Effect<never, unknown> => {
  if (Cause.hasInterruptsOnly(cause)) return Effect.failCause(cause)
  const error = Cause.squash(cause)
  if (error instanceof CliFailure) return Effect.andThen(Console.error(`mesh: ${error.message}`), Effect.fail(error))
  if (CliError.isCliError(error)) {
    if (error._tag !== "ShowHelp" || error.errors.length === 0) {
      return Effect.fail(new CliFailure({ message: messageOf(error), exitCode: 2 }))
    }
    const failure = new CliFailure({
      message: `${usageError(error.errors[0])} (mesh ${error.commandPath.slice(1).concat("--help").join(" ")})`,
      exitCode: 2
    })
    return Effect.andThen(Console.error(`mesh: ${failure.message}`), Effect.fail(failure))
  }
  return Effect.andThen(
    Console.error(`mesh: unexpected failure: ${Cause.pretty(cause)}`),
    Effect.fail(new CliFailure({ message: messageOf(error), exitCode: 1 }))
  )
}

/** a parse error of the command line, as a short phrase */
const usageError = (error: CliError.NonShowHelpErrors): string => {
  const suggest = (names: ReadonlyArray<string>) => names.length === 0 ? "" : `; did you mean ${names.join(" or ")}?`
  switch (error._tag) {
    case "UnknownSubcommand":
      return `unknown command "${error.subcommand}"${suggest(error.suggestions)}`
    case "UnrecognizedOption":
      return `unknown flag ${error.option}${suggest(error.suggestions)}`
    case "MissingArgument":
      return `missing <${error.argument}>`
    case "MissingOption":
      return `missing --${error.option}`
    case "InvalidValue": {
      const what = error.kind === "flag" ? `--${error.option}` : `<${error.option}>`
      if (error.value === "") return `${what} needs a value`
      if (/key=value/.test(error.expected)) return `${what} takes key=value, got "${error.value}"`
      return `invalid ${what}: "${error.value}" (${oneLine(error.expected.replace(/^Expected:?\s*/, "expected "))})`
    }
    default:
      return messageOf(error)
  }
}

// ---- mesh run ----

interface Loaded {
  readonly module: string
  readonly exportName: string
  readonly layer: Layer.Layer<never, unknown, Mesh.Provided>
  readonly service: string | undefined
}

const exportPattern = /^(.+):([A-Za-z_$][A-Za-z0-9_$]*)$/

/** imports a module and picks its service Layers (or the one named) */
const load = (spec: string): Effect.Effect<ReadonlyArray<Loaded>, CliFailure> =>
  Effect.gen(function*() {
    const match = exportPattern.exec(spec)
    const path = match === null ? spec : match[1]
    const exportName = match === null ? undefined : match[2]
    const isFile = path.startsWith(".") || isAbsolute(path) || /\.[cm]?[jt]s$/.test(path)
    const url = isFile ? pathToFileURL(resolve(path)).href : path
    const module = yield* Effect.tryPromise({
      try: () => import(url) as Promise<Record<string, unknown>>,
      // node names the importer, which is this module, not the user's
      catch: (error) =>
        new CliFailure({
          message: `could not load ${path}: ${messageOf(error).replace(/ imported from \S*[/\\]Cli\.[jt]s$/, "")}`,
          exitCode: 2
        })
    })
    const loaded = (name: string, value: unknown): Loaded => ({
      module: path,
      exportName: name,
      layer: value as Layer.Layer<never, unknown, Mesh.Provided>,
      service: Option.getOrUndefined(Option.map(Service.contractOf(value), (c) => c.name))
    })
    if (exportName !== undefined) {
      const value = module[exportName]
      if (!Layer.isLayer(value)) {
        return yield* new CliFailure({ message: `${path} has no Layer export named ${exportName}`, exitCode: 2 })
      }
      return [loaded(exportName, value)]
    }
    const seen = new Set<unknown>()
    const services = Object.entries(module).filter(([, value]) => {
      if (!Service.isService(value) || seen.has(value)) return false
      seen.add(value)
      return true
    })
    if (services.length === 0) {
      return yield* new CliFailure({
        message: `${path} exports no service Layer made by Service.make; name a Layer export: ${path}:MyLayer`,
        exitCode: 2
      })
    }
    return services.map(([name, value]) => loaded(name, value))
  })

/** one quick connection to the configured RabbitMQ: why it cannot be reached, or undefined */
const probeBroker: Effect.Effect<CliFailure | undefined> = Effect.scoped(Layer.build(layerCommandBroker)).pipe(
  Effect.as(undefined),
  Effect.catch((error) => Effect.succeed(error instanceof CliFailure ? error : undefined))
)

/**
 * Under npm (`npx mesh run`, `npm run`), the process a script kills (`kill $!`) is npm's, and npm's
 * shell dies without passing the signal on: the services would go on under PID 1. When the parent goes
 * away, mesh run stops as on SIGTERM (it sends itself one). Only under npm: `nohup mesh run &` is
 * meant to outlive its shell.
 */
const stopWithParent = Effect.suspend(() => {
  if (process.env["npm_command"] === undefined) return Effect.void
  const parent = process.ppid
  return Effect.sleep("500 millis").pipe(
    Effect.andThen(Effect.sync(() => process.ppid !== parent)),
    Effect.repeat({ until: (orphaned) => orphaned }),
    Effect.andThen(Effect.logInfo(`mesh: the parent process (pid ${parent}, under npm) exited: stopping as on SIGTERM`)),
    Effect.andThen(Effect.sync(() => process.kill(process.pid, "SIGTERM"))),
    Effect.forkScoped
  )
})

/** a second SIGINT / SIGTERM while draining stops the process at once */
const forceOnSecondSignal = Effect.acquireRelease(
  Effect.sync(() => {
    let signals = 0
    const onSignal = (signal: NodeJS.Signals) => {
      signals++
      if (signals < 2) return
      process.stderr.write(`mesh: second ${signal}: exiting without waiting for running requests\n`)
      process.exit(130)
    }
    process.on("SIGINT", onSignal)
    process.on("SIGTERM", onSignal)
    return onSignal
  }),
  (onSignal) =>
    Effect.sync(() => {
      process.off("SIGINT", onSignal)
      process.off("SIGTERM", onSignal)
    })
)

const serve = (
  modules: ReadonlyArray<string>,
  options: { readonly file: MeshConfig.File | undefined; readonly port: number | undefined; readonly metricsPort: number | undefined }
) =>
  Effect.gen(function*() {
    const loaded = (yield* Effect.forEach(modules, load)).flat()
    for (const l of loaded) {
      const what = l.service === undefined ? "a Layer" : `service ${l.service}`
      yield* Effect.logInfo(`mesh: loaded ${what} from ${l.module} (export ${l.exportName})`)
    }
    const location = yield* MeshConfig.brokerLocation.pipe(mapSetupErrors)
    yield* Effect.logInfo(`mesh: broker ${location}`)
    if (location.startsWith("memory")) {
      yield* Effect.logInfo("mesh: only this process can reach the embedded broker; set AMQP_URL to call it from a shell")
    }
    // the services retry a broker that is not up yet for 30 seconds: say so at once, not after them
    const unreachableBroker = location.startsWith("memory") ? undefined : yield* probeBroker
    if (unreachableBroker !== undefined) {
      yield* Effect.logWarning(`mesh: ${unreachableBroker.message}; retrying for 30 seconds`)
    }
    // imported here: the HTTP stack it brings costs every other command ~150 ms of start-up
    const { MeshError, layerConfig } = yield* Effect.promise(() => import("./Mesh.ts"))
    const mesh = layerConfig(loaded.map((l) => l.layer), {
      config: options.file?.path,
      port: options.port,
      metricsPort: options.metricsPort
    })
    const names = loaded.map((l) => l.service ?? l.exportName).join(", ")
    yield* Effect.scoped(Effect.gen(function*() {
      yield* forceOnSecondSignal
      yield* stopWithParent
      yield* Layer.build(mesh).pipe(
        Effect.mapError((error) =>
          unreachableBroker !== undefined && error instanceof BrokerError ? unreachableBroker :
          error instanceof MeshError && error.reason === "NoHttpPort"
            ? new CliFailure({
              message: `${error.routes.join(", ")}: the services serve HTTP and no port is configured: ` +
                `pass --port, or set HTTP_PORT (http.port in --config)`,
              exitCode: 2
            })
            : error
        ),
        mapSetupErrors,
        Effect.catchDefect((defect) => {
          const missing = /^Service not found: (.+)$/.exec(messageOf(defect))
          return Effect.fail(
            missing === null
              ? new CliFailure({ message: `a service failed to start: ${messageOf(defect)}`, exitCode: 1 })
              : new CliFailure({
                message: `a service needs ${missing[1]}, which mesh run does not provide (it provides the broker, ` +
                  `ServiceClient and the HTTP router): export a Layer with it provided and run module:ThatLayer`,
                exitCode: 2
              })
          )
        })
      )
      yield* Effect.logInfo(`mesh: running ${names} (pid ${process.pid}); SIGTERM or Ctrl-C to stop`)
      return yield* Effect.never.pipe(
        Effect.onInterrupt(() =>
          Effect.logInfo("mesh: stopping: running requests finish first (a second signal forces)")
        )
      )
    })).pipe(
      Effect.provideService(Discovery.LogLevel, "Info"),
      Effect.onInterrupt(() =>
        Effect.andThen(
          Effect.sync(() => {
            state.stoppedGracefully = true
          }),
          Effect.logInfo("mesh: stopped")
        )
      )
    )
  })

// ---- mesh dlq ----

const plural = (n: number, noun: string): string => `${n} ${noun}${n === 1 ? "" : "s"}`

const previewLength = 200

const textOf = (body: Uint8Array): string => new TextDecoder().decode(body)

const preview = (body: Uint8Array): string => {
  const text = textOf(body).replace(/\s+/g, " ").trim()
  return text.length > previewLength ? `${text.slice(0, previewLength)}…` : text
}

const timeOf = (millis: number | undefined): string => millis === undefined ? "(time unknown)" : new Date(millis).toISOString()

const renderLetters = (queue: string, letters: ReadonlyArray<DeadLetters.DeadLetter>): string => {
  if (letters.length === 0) return `${queue}: no dead letters`
  const out = [`${queue}: ${plural(letters.length, "dead letter")}, oldest first`]
  letters.forEach((l, i) => {
    const type = l.type === undefined ? "" : `  type ${l.type}`
    out.push(`${i + 1}. ${timeOf(l.diedAt)}  ${l.reason}  from ${l.origin}${type}  routing key ${l.routingKey}`)
    if (l.error !== undefined) out.push(`   error: ${oneLine(l.error)}`)
    out.push(`   body: ${preview(l.body)}`)
  })
  out.push("(--replay publishes them back where they died, --purge removes them, --json prints everything)")
  return out.join("\n")
}

const letterJson = (l: DeadLetters.DeadLetter) => ({
  reason: l.reason,
  error: l.error,
  diedAt: l.diedAt === undefined ? undefined : new Date(l.diedAt).toISOString(),
  origin: l.origin,
  queue: l.queue,
  routingKey: l.routingKey,
  type: l.type,
  messageId: l.messageId,
  body: textOf(l.body),
  headers: l.headers
})

const replayLetters = (queue: string, options: DeadLetters.ReadOptions) =>
  Effect.gen(function*() {
    const { failed, replayed } = yield* DeadLetters.replay(queue, options)
    yield* Console.log(`replayed ${plural(replayed, "dead letter")} from ${queue}`)
    if (failed.length === 0) return
    for (const { letter, message } of failed) {
      yield* Console.error(`mesh: could not replay to ${letter.origin}: ${oneLine(message)}`)
    }
    return yield* new CliFailure({
      message: `could not replay ${plural(failed.length, "dead letter")}; ${failed.length === 1 ? "it stays" : "they stay"} in ${queue}`,
      exitCode: 1
    })
  })
