/**
 * The only module of the application that imports kafkajs (unmaintained upstream; `npm run lint`
 * enforces it). The rest of common/kafka/ builds on these names; everything outside sees only
 * common/kafka/index.ts, so the client can be swapped without touching the roles.
 */
import kafkajs from 'kafkajs';

export type { Admin, Consumer, IHeaders, Kafka, KafkaMessage, Producer } from 'kafkajs';
export const { Kafka: KafkaJs, KafkaJSError, Partitioners, logLevel } = kafkajs;
