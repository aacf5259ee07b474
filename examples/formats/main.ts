/**
 * Wire formats: `node examples/formats/main.ts` (set AMQP_URL to run it on RabbitMQ).
 *
 * The calculator's contract says JSON; a second caller of the same service writes MessagePack (its
 * contract says so), and the service answers each in the format it asked in: a service and its callers
 * never need to agree. A caller's format is its contract's: make one with `format` for the callers
 * that should write MessagePack, or give the shared contract a `format` to change them all.
 */
import { Effect, Layer, Logger, Stream } from "effect"
import { AmqpBroker, MemoryBroker, ServiceClient, ServiceContract, WireFormat } from "effect-mesh"
import { Calculator, CalculatorRpcs } from "../calculator/contract.ts"
import { CalculatorLive } from "../calculator/service.ts"

/** the calculator as a caller that writes MessagePack sees it */
const PackedCalculator = ServiceContract.make(Calculator.name, CalculatorRpcs, { format: WireFormat.msgPack })

const say = (line: string) => Effect.sync(() => console.log(line))

const program = Effect.gen(function*() {
  for (const contract of [Calculator, PackedCalculator]) {
    const format = contract === Calculator ? WireFormat.json : WireFormat.msgPack
    const calc = yield* ServiceClient.make(contract)
    const sum = yield* calc.add({ a: 1, b: 2 })
    const error = yield* Effect.flip(calc.divide({ a: 1, b: 0 }))
    const countdown = yield* Stream.runCollect(calc.countdown({ from: 3 }))
    yield* say(`${format.contentType}: add 1 + 2 → ${sum}, divide by 0 → ${error._tag}, countdown → ${Array.from(countdown).join(" ")}`)
  }
})

const url = process.env["AMQP_URL"]
const MeshLive = CalculatorLive.pipe(
  Layer.provideMerge(ServiceClient.layer),
  // on the embedded broker, calls through the queue, as on RabbitMQ: with values passed directly no
  // format would be needed (a caller of another contract makes bytes all the same)
  Layer.provideMerge(url === undefined ? MemoryBroker.layerWith({ directCalls: false }) : AmqpBroker.layer({ url }))
)

program.pipe(
  Effect.provide(MeshLive),
  Effect.provide(Logger.layer([Logger.consolePretty()])),
  Effect.runPromise
)
