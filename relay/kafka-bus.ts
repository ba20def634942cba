import type { EventBus } from '../common/bus.js';
import { EVENT_HEADERS, type EventRecord } from '../common/events.js';
import type { KafkaProducer } from '../common/kafka/index.js';

/** The relay's side of the Kafka event topic: same key, value and headers as the Debezium outbox router. */
export function createKafkaEventBus(producer: KafkaProducer, topic: string): EventBus {
  return {
    publish(records: EventRecord[]) {
      return producer.send(
        topic,
        records.map((r) => ({
          key: r.key,
          value: r.value,
          headers: {
            [EVENT_HEADERS.type]: r.type,
            [EVENT_HEADERS.eventId]: r.eventId,
            ...(r.traceId ? { [EVENT_HEADERS.traceId]: r.traceId } : {}),
          },
        })),
      );
    },
    subscribe() {
      throw new Error('consume the Kafka topic with a consumer group (delivery/worker.ts)');
    },
    close: () => producer.close(),
  };
}
