/**
 * effect-mesh: microservices on Effect 4 and RabbitMQ.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as Amqp from "./Amqp.ts"
/** @since 0.1.0 */
export * as AmqpBroker from "./AmqpBroker.ts"
/** @since 0.1.0 */
export * as Broker from "./Broker.ts"
/** @since 0.1.0 */
export * as BrokerRpcClient from "./BrokerRpcClient.ts"
/** @since 0.1.0 */
export * as BrokerRpcServer from "./BrokerRpcServer.ts"
/** @since 0.1.0 */
export * as CallContext from "./CallContext.ts"
/** @since 0.1.0 */
export * as Command from "./Command.ts"
/** @since 0.1.0 */
export * as DeadLetters from "./DeadLetters.ts"
/** @since 0.1.0 */
export * as Discovery from "./Discovery.ts"
/** @since 0.1.0 */
export * as Event from "./Event.ts"
/** @since 0.1.0 */
export * as Health from "./Health.ts"
/** @since 0.1.0 */
export * as HttpEntrypoint from "./HttpEntrypoint.ts"
/** @since 0.1.0 */
export * as HttpGateway from "./HttpGateway.ts"
/** @since 0.1.0 */
export * as Hub from "./Hub.ts"
/** @since 0.1.0 */
export * as MemoryBroker from "./MemoryBroker.ts"
/** @since 0.1.0 */
export * as Mesh from "./Mesh.ts"
/** @since 0.1.0 */
export * as MeshConfig from "./MeshConfig.ts"
/** @since 0.1.0 */
export * as MeshTest from "./MeshTest.ts"
/** @since 0.1.0 */
export * as Nameko from "./Nameko.ts"
/** @since 0.1.0 */
export * as Outbox from "./Outbox.ts"
/** @since 0.1.0 */
export * as Sealed from "./Sealed.ts"
/** @since 0.1.0 */
export * as Service from "./Service.ts"
/** @since 0.1.0 */
export * as ServiceClient from "./ServiceClient.ts"
/** @since 0.1.0 */
export * as ServiceContract from "./ServiceContract.ts"
/** @since 0.1.0 */
export * as ServiceError from "./ServiceError.ts"
/** @since 0.1.0 */
export * as Sql from "./Sql.ts"
/** @since 0.1.0 */
export * as Sse from "./Sse.ts"
/** @since 0.1.0 */
export * as Timer from "./Timer.ts"
/** @since 0.1.0 */
export * as WebSocketGateway from "./WebSocketGateway.ts"
/** @since 0.1.0 */
export * as WireFormat from "./WireFormat.ts"
/** @since 0.1.0 */
export * as Worker from "./Worker.ts"
