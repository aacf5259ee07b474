/**
 * The calculator's contract: shared by the service and everyone who calls it.
 */
import { Schema } from "effect"
import { Rpc, RpcGroup } from "effect/rpc"
import { ServiceContract } from "effect-mesh"

export class DivisionByZero extends Schema.TaggedError<DivisionByZero>()("DivisionByZero", {
  dividend: Schema.Number
}) {}

export class CalculatorRpcs extends RpcGroup.make(
  Rpc.make("add", { payload: { a: Schema.Number, b: Schema.Number }, success: Schema.Number }),
  Rpc.make("divide", {
    payload: { a: Schema.Number, b: Schema.Number },
    success: Schema.Number,
    error: DivisionByZero
  }),
  Rpc.make("countdown", { payload: { from: Schema.Int }, success: Schema.Int, stream: true }),
  Rpc.make("multiply", { payload: { a: Schema.Number, b: Schema.Number }, success: Schema.Number }),
  Rpc.make("sleep", { payload: { millis: Schema.Number }, success: Schema.String })
) {}

export const Calculator = ServiceContract.make("calculator", CalculatorRpcs)
