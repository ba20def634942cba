/**
 * Distributed mode: the records addressed to this node. With a presence registry, delivery workers
 * write to this node's own topic; without one (or while Redis is failing) to the broadcast topic that
 * every node reads with a group of its own. Connections drop duplicates by sequence and fill gaps
 * from the database, so reading both is safe.
 */
import type { Logger } from '../common/log.js';
import type { Metrics } from '../common/metrics.js';
import { runConsumer, type InRecord, type KafkaClient, type RunningConsumer } from '../common/kafka/index.js';
import { decodeDeliveryValue, decodeEvent, type ChatEvent, type DecodedDelivery, type EphemeralDelivery } from '../common/events.js';
import type { Delivery } from '../common/delivery.js';

export interface DeliveryHandlers {
  event(d: Delivery): Promise<void>;
  ephemeral(d: EphemeralDelivery): void;
}

export async function startDeliveryConsumer(deps: {
  kafka: KafkaClient;
  nodeId: string;
  topics: string[];
  handlers: DeliveryHandlers;
  log: Logger;
  metrics: Metrics;
}): Promise<RunningConsumer> {
  const { handlers, log, metrics } = deps;

  async function handle(record: InRecord): Promise<void> {
    let decoded: DecodedDelivery;
    try {
      decoded = decodeDeliveryValue(record.value ?? '');
    } catch (err) {
      metrics.failedDeliveries.inc({ reason: 'undecodable_delivery' });
      log.error({ err, topic: record.topic, partition: record.partition, offset: record.offset }, 'undecodable delivery record skipped');
      return;
    }
    if (decoded.kind === 'ephemeral') {
      if (decoded.delivery.origin !== deps.nodeId) handlers.ephemeral(decoded.delivery);
      return;
    }
    let event: ChatEvent | null;
    try {
      event = decodeEvent(decoded.event);
    } catch (err) {
      metrics.failedDeliveries.inc({ reason: 'undecodable_delivery' });
      log.error({ err, topic: record.topic, offset: record.offset }, 'undecodable event in delivery record skipped');
      return;
    }
    if (event) await handlers.event({ recipients: decoded.recipients, event, traceId: record.headers.trace_id ?? null });
  }

  return runConsumer(deps.kafka, {
    groupId: `realchat-gateway-${deps.nodeId}`,
    topic: deps.topics,
    // A (re)started node has no connections yet: anything older is served by resume from the database.
    fromBeginning: false,
    join: { timeoutMs: 90_000, required: true },
    log,
    async handleBatch(records) {
      for (const r of records) await handle(r);
    },
  });
}
