import type { EventRecord } from './events.js';

/**
 * The seam between the relay and delivery. Contract:
 * - publish() resolves only once every record is durably handed over (Kafka: acks=all);
 *   a rejection means none or some were published, and the caller retries the whole batch.
 * - Records with the same key are delivered to the subscriber in publish order.
 * - Delivery is at-least-once: the subscriber must tolerate duplicates (dedup by sequence).
 * Implementations: in-process (below, embedded mode) and Kafka (later).
 */
export interface EventBus {
  publish(records: EventRecord[]): Promise<void>;
  subscribe(handler: (records: EventRecord[]) => Promise<void>): void;
  close(): Promise<void>;
}

/**
 * In-process bus: publish awaits the subscriber, so the relay's batch size bounds memory and a slow
 * subscriber slows the relay (the outbox absorbs the difference) instead of growing a queue.
 */
export function createInMemoryBus(): EventBus {
  const handlers: Array<(records: EventRecord[]) => Promise<void>> = [];
  let closed = false;
  return {
    async publish(records) {
      if (closed) throw new Error('bus closed');
      for (const h of handlers) await h(records);
    },
    subscribe(handler) {
      handlers.push(handler);
    },
    async close() {
      closed = true;
    },
  };
}
