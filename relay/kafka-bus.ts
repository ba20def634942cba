import type { EventBus } from '../common/bus.js';
import { EVENT_HEADERS, type EventRecord } from '../common/events.js';
import type { KafkaProducer } from '../common/kafka/index.js';
import { parseTraceparent } from '../common/trace-id.js';

/**
 * The relay's side of the Kafka event topic: same key, value and headers as the Debezium outbox
 * router, plus `traceparent` (docs/events.md): `trace_id` is the W3C trace id for logs, the
 * traceparent the context to continue.
 */
export function createKafkaEventBus(producer: KafkaProducer, topic: string): EventBus {
  return {
    publish(records: EventRecord[]) {
      return producer.send(
        topic,
        records.map((r) => {
          const parent = parseTraceparent(r.traceId);
          return {
            key: r.key,
            value: r.value,
            headers: {
              [EVENT_HEADERS.type]: r.type,
              [EVENT_HEADERS.eventId]: r.eventId,
              ...(r.traceId ? { [EVENT_HEADERS.traceId]: parent ? parent.traceId : r.traceId } : {}),
              ...(parent ? { [EVENT_HEADERS.traceparent]: r.traceId! } : {}),
              ...(r.originRegion ? { [EVENT_HEADERS.region]: r.originRegion } : {}),
            },
          };
        }),
      );
    },
    subscribe() {
      throw new Error('consume the Kafka topic with a consumer group (delivery/worker.ts)');
    },
    close: () => producer.close(),
  };
}
