/**
 * Least privilege: `mesh permissions <module>` prints the RabbitMQ permissions a module's services
 * need; a broker user given exactly those runs the service (calls, a subscription, its own events),
 * and cannot consume another service's queue nor publish to another service's event exchange.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Schedule, Schema } from "effect"
import { Rpc, RpcGroup } from "effect/rpc"
import { execFile } from "node:child_process"
import { fileURLToPath } from "node:url"
import { AmqpBroker, Broker, Event, Service, ServiceClient, ServiceContract } from "effect-mesh"
import { amqpUrl } from "./fixtures/amqpUrl.ts"
import { spawnProgram } from "./fixtures/processes.ts"
import { Ledger, LedgerLive, Placed } from "./fixtures/programs/ledger.ts"

const bin = fileURLToPath(new URL("../src/bin.ts", import.meta.url))
const script = fileURLToPath(new URL("../scripts/rabbitmq.sh", import.meta.url))

/** rabbitmqctl against the tests' node */
const ctl = (...args: ReadonlyArray<string>) =>
  Effect.callback<string, Error>((resume) => {
    const port = new URL(amqpUrl()).port
    execFile("bash", [script, "ctl", ...args], { env: { ...process.env, MESH_RABBITMQ_PORT: port }, timeout: 60_000 }, (error, stdout, stderr) => {
      if (error) resume(Effect.fail(new Error(`rabbitmq.sh ctl ${args[0]}: ${error.message}\n${stderr}`)))
      else resume(Effect.succeed(stdout.trim()))
    })
  })

/** another service, run as guest: its queue and its event exchange are what the ledger's user must not touch */
class VaultRpcs extends RpcGroup.make(Rpc.make("open", { success: Schema.String })) {}
const Vault = ServiceContract.make("perm-vault", VaultRpcs)
const VaultLive = Service.make(Vault, { handlers: { open: () => Effect.succeed("opened") } })

const Permissions = Schema.Struct({ configure: Schema.String, write: Schema.String, read: Schema.String })

describe("mesh permissions", () => {
  it.live("a user with exactly the printed permissions runs the service, and nothing of another service's", () =>
    Effect.scoped(Effect.gen(function*() {
      const printed = yield* spawnProgram(bin, {}, ["permissions", "test/fixtures/programs/ledger.ts", "--json"])
      const { code } = yield* printed.exited
      assert.strictEqual(code, 0, printed.output().join("\n"))
      const permissions = Schema.decodeUnknownSync(Schema.fromJsonString(Permissions))(printed.output().join(""))
      assert.include(permissions.read, "mesh\\.rpc\\.perm-ledger")
      assert.notInclude(permissions.read, "perm-vault")

      const user = `perm-ledger-${crypto.randomUUID().slice(0, 6)}`
      const password = crypto.randomUUID()
      yield* ctl("add_user", user, password)
      yield* Effect.addFinalizer(() => Effect.ignore(ctl("delete_user", user)))
      yield* ctl("set_permissions", "-p", "/", user, permissions.configure, permissions.write, permissions.read)
      const guestUrl = new URL(amqpUrl())
      const userUrl = `amqp://${user}:${password}@${guestUrl.host}`

      // the other service, as guest, and its event exchange
      const guest = Layer.fresh(AmqpBroker.layer({ url: amqpUrl() }))
      const guestMesh = Layer.mergeAll(VaultLive).pipe(Layer.provideMerge(ServiceClient.layer), Layer.provideMerge(guest), Layer.fresh)
      const guestContext = yield* Layer.build(guestMesh)
      yield* Effect.flatMap(Broker.Broker, (b) => b.declareExchange("mesh.events.perm-vault", "topic", { durable: true })).pipe(
        Effect.provide(guestContext)
      )

      // the ledger, as its own user
      const ledgerMesh = LedgerLive.pipe(
        Layer.provideMerge(ServiceClient.layer),
        Layer.provideMerge(Layer.fresh(AmqpBroker.layer({ url: userUrl }))),
        Layer.fresh
      )
      const ledgerContext = yield* Layer.build(ledgerMesh)

      // it works: called by guest, it publishes its own event; it takes the orders' events
      const ledger = yield* ServiceClient.make(Ledger).pipe(Effect.provide(guestContext))
      assert.strictEqual(yield* ledger.add({ n: 2 }), 2)
      yield* Event.publish(Placed, { n: 5 }).pipe(Effect.provide(guestContext))
      const total = yield* ledger.total().pipe(
        Effect.repeat({ until: (t) => t === 7, schedule: Schedule.spaced("50 millis") }),
        Effect.timeout("10 seconds")
      )
      assert.strictEqual(total, 7)
      // its user calls the other service like any client
      const vault = yield* ServiceClient.make(Vault).pipe(Effect.provide(ledgerContext))
      assert.strictEqual(yield* vault.open(), "opened")

      // it cannot read the other service's requests, nor publish its events
      const broker = yield* Effect.provide(Broker.Broker, ledgerContext)
      const consume = yield* Effect.flip(Effect.scoped(broker.consume("mesh.rpc.perm-vault", { prefetch: 1 })))
      assert.strictEqual(consume.reason, "AccessRefused", consume.message)
      const publish = yield* Effect.flip(
        broker.publish("mesh.events.perm-vault", "opened", new TextEncoder().encode("{}"), { confirm: true })
      )
      assert.strictEqual(publish.reason, "AccessRefused", publish.message)
    })), 120_000)
})
