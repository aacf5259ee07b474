/**
 * The largest message a service's request or command, an event subscription, a raw AMQP consumer or
 * a Nameko-wire service takes: its own `maxMessageSize` option, else the configuration's
 * `MESH_MAX_MESSAGE_SIZE` (`512 KiB`, `4 MiB`, or bytes), else 1 MiB (as the HTTP edge's body). A
 * larger message is refused before it is decoded.
 *
 * @internal
 */
import { ByteSize, Config, Effect } from "effect"
import * as wire from "./wire.ts"

/** the configuration key, for every entrypoint of the process that sets no size itself */
export const configKey = "MESH_MAX_MESSAGE_SIZE"

/** a size with its unit (`512 KiB`), or a number of bytes */
export const byteSizeConfig = (key: string): Config.Config<ByteSize.ByteSize> =>
  Config.ByteSize(key).pipe(Config.orElse(() => Config.Int(key).pipe(Config.map(ByteSize.bytes))))

/**
 * The size an entrypoint takes: its own, else the configuration's, else the default. Configuration
 * that cannot be read is a defect: the entrypoint must not start with a limit nobody chose.
 */
export const resolve = (own: number | undefined): Effect.Effect<number> =>
  own !== undefined ? Effect.succeed(own) : Effect.gen(function*() {
    const size = yield* Config.option(byteSizeConfig(configKey))
    if (size._tag === "None") return wire.defaultMaxMessageSize
    const bytes = ByteSize.toNumberUnsafe(size.value)
    if (!(bytes > 0)) return yield* Effect.fail(new Error(`must be more than 0 bytes, not ${bytes}`))
    return bytes
  }).pipe(
    Effect.mapError((error) => new Error(`the largest message (${configKey}): ${error.message}`)),
    Effect.orDie
  )
