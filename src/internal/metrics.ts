/**
 * The mesh's metrics, with effect's `Metric`: what every instance and client counts and times, named
 * and labelled after OpenTelemetry's RPC and messaging conventions where they have a name for it
 * (durations in seconds). Exported as every effect metric is: `PrometheusMetrics` (the HTTP edge's
 * `/metrics`), `OtlpMetrics`.
 *
 * - `rpc.server.call.duration`, `rpc.client.call.duration` (histograms): `rpc.system`, `rpc.service`,
 *   `rpc.method` and `outcome` (`success`, the error's tag, `defect` or `interrupted`);
 * - `rpc.server.active_calls`: requests an instance is running;
 * - `messaging.process.duration` (histogram), `messaging.client.sent.messages` (events, and commands with
 *   `messaging.operation.name` `command`),
 *   `mesh.event.retries`, `mesh.event.dead_letters`: per `messaging.destination.name` (and service);
 * - `mesh.run.duration` (histogram) of timers' ticks and workers' lives, by `mesh.run` and `outcome`;
 *   `mesh.worker.restarts`;
 * - `mesh.broker.reconnects` (RabbitMQ connections recovered), `mesh.redeliveries` (deliveries the broker
 *   marks redelivered: a consumer, its channel or its connection was lost before it settled them), per
 *   queue.
 *
 * A run's series are made once per outcome and kept: updating one is a map lookup and a sync update.
 *
 * @internal
 */
import { Cause, Effect, Exit, Metric } from "effect"
import type { Context } from "effect"
import type { FromServerEncoded } from "effect/rpc/RpcMessage"
import type { LocalBody } from "../Broker.ts"

const seconds = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

const serverDuration = Metric.histogram("rpc.server.call.duration", {
  description: "the time an instance took to run a request or command, in seconds",
  boundaries: seconds
})
const clientDuration = Metric.histogram("rpc.client.call.duration", {
  description: "the time a call took, from the caller's side, in seconds",
  boundaries: seconds
})
const activeCalls = Metric.gauge("rpc.server.active_calls", {
  description: "requests and commands an instance is running"
})
const processDuration = Metric.histogram("messaging.process.duration", {
  description: "the time an event handler took, in seconds",
  boundaries: seconds
})
const sent = Metric.counter("messaging.client.sent.messages", {
  description: "events published and commands sent (confirmed by the broker)",
  incremental: true
})
const retries = Metric.counter("mesh.event.retries", { description: "event deliveries scheduled for a retry", incremental: true })
const deadLetters = Metric.counter("mesh.event.dead_letters", {
  description: "events dead-lettered: failed past their retries, or invalid",
  incremental: true
})
const runDuration = Metric.histogram("mesh.run.duration", {
  description: "the time a timer's tick or a worker's life took, in seconds",
  boundaries: seconds
})

const workerRestarts = Metric.counter("mesh.worker.restarts", {
  description: "workers started again after their effect ended",
  incremental: true
})
const brokerReconnects = Metric.counter("mesh.broker.reconnects", {
  description: "connections to the broker lost and recovered (topology, consumers and reply queues restored)",
  incremental: true
})
const redeliveries = Metric.counter("mesh.redeliveries", {
  description: "deliveries the broker marked redelivered (a consumer, channel or connection was lost before they were settled)",
  incremental: true
})

/** how a run ended: `success`, its error's tag (or `error`), `defect` or `interrupted` */
export const outcomeOf = (exit: Exit.Exit<unknown, unknown>): string => {
  if (Exit.isSuccess(exit)) return "success"
  for (const reason of exit.cause.reasons) {
    if (Cause.isFailReason(reason)) {
      const error = reason.error
      const tag = typeof error === "object" && error !== null && "_tag" in error ? error._tag : undefined
      return typeof tag === "string" ? tag : "error"
    }
    if (Cause.isDieReason(reason)) return "defect"
  }
  return "interrupted"
}

/** what a run reports: that it began, and how and how fast it ended */
export interface RunMetrics {
  readonly begin: (context: Context.Context<never>) => void
  readonly end: (exit: Exit.Exit<unknown, unknown>, seconds: number, context: Context.Context<never>) => void
}

/** a histogram's series by outcome, made on first use */
const byOutcome = (histogram: Metric.Histogram<number>, attributes: Record<string, string>) => {
  const series = new Map<string, Metric.Metric<number, unknown>>()
  return (outcome: string): Metric.Metric<number, unknown> => {
    let metric = series.get(outcome)
    if (metric === undefined) {
      metric = Metric.withAttributes(histogram, { ...attributes, outcome })
      series.set(outcome, metric)
    }
    return metric
  }
}

const rpcAttributes = (service: string, method: string) => ({
  "rpc.system": "effect_mesh",
  "rpc.service": service,
  "rpc.method": method
})

/**
 * An instance's runs of one method: their duration by outcome, and how many are in progress. That count
 * is the instance's own, read by the registry when metrics are read (a gauge with a `get`), rather than
 * an update of the registry as each run begins and ends; `remove` takes it away with the instance.
 */
export const rpcServer = (
  service: string,
  method: string,
  context: Context.Context<never>
): RunMetrics & { readonly remove: () => void } => {
  const attributes = rpcAttributes(service, method)
  const duration = byOutcome(serverDuration, attributes)
  let active = 0
  const registration = Metric.registerUnsafe(Metric.withAttributes(activeCalls, attributes), context, {
    get: () => ({ value: active }),
    update: () => undefined,
    modify: () => undefined
  })
  return {
    begin: () => {
      active++
    },
    end: (exit, seconds, context) => {
      active--
      duration(outcomeOf(exit)).updateUnsafe(seconds, context)
    },
    remove: () => registration.remove()
  }
}

/** an instance's rpc metrics, each method's made when first used; `remove` takes them with the instance */
export const rpcServers = (service: string, context: Context.Context<never>) => {
  const byMethod = new Map<string, ReturnType<typeof rpcServer>>()
  return {
    of: (method: string): RunMetrics => {
      let metrics = byMethod.get(method)
      if (metrics === undefined) {
        metrics = rpcServer(service, method, context)
        byMethod.set(method, metrics)
      }
      return metrics
    },
    remove: (): void => {
      for (const metrics of byMethod.values()) metrics.remove()
    }
  }
}

/** a call that ended without an answer: stopped, or past its deadline */
export const interrupted: Exit.Exit<unknown, unknown> = Exit.interrupt()
export const pastDeadline: Exit.Exit<unknown, unknown> = Exit.fail({ _tag: "CallTimeout" })

/** how a call ended, from its answer: a success, or its failure's first reason (as `outcomeOf` reads it) */
export const outcomeOfAnswer = (answer: FromServerEncoded | LocalBody): Exit.Exit<unknown, unknown> => {
  if (answer._tag === "LocalBody") return Exit.void
  if (answer._tag !== "Exit") return interrupted
  const exit = answer.exit
  if (exit._tag === "Success") return Exit.void
  for (const reason of exit.cause) {
    if (reason._tag === "Fail") return Exit.fail(reason.error)
    if (reason._tag === "Die") return Exit.die(reason.defect)
  }
  return interrupted
}

/** a caller's calls of one method: duration (since `startedAt`, `performance.now()`) by outcome */
export const rpcClient = (service: string, method: string) => {
  const duration = byOutcome(clientDuration, rpcAttributes(service, method))
  return (exit: Exit.Exit<unknown, unknown>, startedAt: number, context: Context.Context<never>): Effect.Effect<void> => {
    duration(outcomeOf(exit)).updateUnsafe((performance.now() - startedAt) / 1000, context)
    return Effect.void
  }
}

const eventAttributes = (destination: string, service?: string) =>
  service === undefined
    ? { "messaging.system": "rabbitmq", "messaging.destination.name": destination }
    : { "messaging.system": "rabbitmq", "messaging.destination.name": destination, "mesh.service": service }

/** a subscription's handler runs: duration by outcome */
export const eventProcess = (service: string, destination: string): RunMetrics => {
  const duration = byOutcome(processDuration, eventAttributes(destination, service))
  return {
    begin: () => undefined,
    end: (exit, seconds, context) => duration(outcomeOf(exit)).updateUnsafe(seconds, context)
  }
}

/** a subscription's retries and dead letters */
export interface EventSettling {
  readonly retry: Metric.Metric<number, unknown>
  readonly deadLetter: Metric.Metric<number, unknown>
}

/** a subscription's retries and dead letters */
export const eventSettling = (service: string, destination: string): EventSettling => {
  const attributes = eventAttributes(destination, service)
  return {
    retry: Metric.withAttributes(retries, attributes),
    deadLetter: Metric.withAttributes(deadLetters, attributes)
  }
}

/** the commands sent to one method of a service (a command's destination is `<service>.<method>`) */
export const commandSent = (service: string, method: string): Metric.Metric<number, unknown> =>
  Metric.withAttributes(sent, { ...eventAttributes(`${service}.${method}`), "messaging.operation.name": "command" })

/** the events of one destination its publishers sent */
export const eventSent = (destination: string): Metric.Metric<number, unknown> =>
  Metric.withAttributes(sent, eventAttributes(destination))

/** a timer's ticks or a worker's lives: duration by outcome */
export const loopRuns = (service: string, run: string): RunMetrics => {
  const duration = byOutcome(runDuration, { "mesh.service": service, "mesh.run": run })
  return {
    begin: () => undefined,
    end: (exit, seconds, context) => duration(outcomeOf(exit)).updateUnsafe(seconds, context)
  }
}

/** a worker's restarts */
export const workerRestarted = (service: string, run: string): Metric.Metric<number, unknown> =>
  Metric.withAttributes(workerRestarts, { "mesh.service": service, "mesh.run": run })

/** RabbitMQ connections recovered */
export const reconnects: Metric.Metric<number, unknown> = Metric.withAttributes(brokerReconnects, {
  "messaging.system": "rabbitmq"
})

/** counts a consumer's redelivered deliveries, in the metrics of `context` (its consumer's) */
export const redelivery = (system: string, queue: string, context: Context.Context<never>): () => void => {
  const metric = Metric.withAttributes(redeliveries, { "messaging.system": system, "messaging.destination.name": queue })
  return () => metric.updateUnsafe(1, context)
}
