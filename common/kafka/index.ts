/**
 * Our Kafka adapter: the only way the roles talk to Kafka (kafkajs stays behind it, see kafkajs.ts).
 * Client handles are opaque; failures are KafkaError with a `retriable` flag.
 */
export { KAFKA_DEFAULTS, createKafkaClient, kafkaConnection, type KafkaClient, type KafkaOptions } from './client.js';
export { KafkaError, isRecordRefusal } from './errors.js';
export { consumerLag, createLagProbe, deleteTopics, ensureTopics, type LagProbe, type PartitionLag } from './admin.js';
export { createProducer, splitRequests, type KafkaProducer, type OutRecord } from './producer.js';
export {
  GroupConsumer,
  runConsumer,
  type ConsumerStatus,
  type GroupConsumerOptions,
  type InRecord,
  type RunningConsumer,
} from './consumer.js';
