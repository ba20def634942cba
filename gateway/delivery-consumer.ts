/**
 * Distributed mode: the records addressed to this node. With a presence registry, delivery workers
 * write to this node's own topic; without one (or while Redis is failing) to the broadcast topic that
 * every node reads with a group of its own. Connections drop duplicates by sequence and fill gaps
 * from the database, so reading both is safe.
 */
import type { Logger } from '../common/log.js';
import type { Metrics } from '../common/metrics.js';
import { runConsumer, type InRecord, type KafkaClient, type RunningConsumer } from '../common/kafka/index.js';
import { decodeEvent, EVENT_HEADERS } from '../common/events.js';
import { decodeNodeRecord, type DecodedNodeRecord, type EphemeralDelivery } from '../common/node-records.js';
import type { Delivery } from '../common/delivery.js';

export interface DeliveryHandlers {
  event(d: Delivery): Promise<void>;
  /** The deliveries of one record, before they are handed to event() one by one (DeliverySink.prepare). */
  prepare?(ds: readonly Delivery[]): Promise<void>;
  ephemeral(d: EphemeralDelivery): void;
}

export async function startDeliveryConsumer(deps: {
  kafka: KafkaClient;
  nodeId: string;
  fetch: { minBytes: number; maxWaitMs: number };
  commitIntervalMs?: number;
  topics: string[];
  handlers: DeliveryHandlers;
  log: Logger;
  metrics: Metrics;
}): Promise<RunningConsumer> {
  const { handlers, log, metrics } = deps;

  function undecodable(err: unknown, record: InRecord, what: string): void {
    metrics.failedDeliveries.inc({ reason: 'undecodable_delivery' });
    log.error({ err, topic: record.topic, partition: record.partition, offset: record.offset }, `undecodable ${what} skipped`);
  }

  async function handle(record: InRecord): Promise<void> {
    let decoded: DecodedNodeRecord;
    try {
      decoded = decodeNodeRecord(
        record.value ?? '',
        record.headers[EVENT_HEADERS.traceparent] ?? record.headers[EVENT_HEADERS.traceId] ?? null,
      );
    } catch (err) {
      undecodable(err, record, 'delivery record');
      return;
    }
    if (decoded.kind === 'ephemeral') {
      if (decoded.delivery.origin !== deps.nodeId) handlers.ephemeral(decoded.delivery);
      return;
    }
    if (decoded.writtenAtMs !== null) metrics.pipelineSeconds.observe({ stage: 'node_hop' }, (Date.now() - decoded.writtenAtMs) / 1000);
    const deliveries: Delivery[] = [];
    for (const d of decoded.deliveries) {
      let event: ReturnType<typeof decodeEvent>;
      try {
        event = decodeEvent(d.event);
      } catch (err) {
        undecodable(err, record, 'event in a delivery record');
        continue;
      }
      if (!event) continue;
      metrics.pipelineSeconds.observe({ stage: 'received' }, (Date.now() - Date.parse(event.occurred_at)) / 1000);
      deliveries.push({ recipients: d.recipients, event, traceId: d.traceId });
    }
    // The broadcast topic's deliveries name no recipients: their member lists are read together.
    if (handlers.prepare && deliveries.length > 0) await handlers.prepare(deliveries);
    for (const d of deliveries) await handlers.event(d);
  }

  return runConsumer(deps.kafka, {
    groupId: `realchat-gateway-${deps.nodeId}`,
    topic: deps.topics,
    // A (re)started node has no connections yet: anything older is served by resume from the database.
    fromBeginning: false,
    join: { timeoutMs: 90_000, required: true },
    // The node's own group, one member. A consumer that crashes while its group coordinator's
    // broker is down cannot leave the group, and its restart waits out the old member's session
    // before it gets its partitions back (the bounded chaos run: 15.3 s to recover from a
    // controller kill, 10 s of it this wait). The broker's minimum session, 6 s, shortens it; a
    // false expiry only makes the single member rejoin.
    sessionTimeoutMs: 6000,
    fetch: deps.fetch,
    ...(deps.commitIntervalMs !== undefined ? { commitIntervalMs: deps.commitIntervalMs } : {}),
    log,
    async handleBatch(records) {
      for (const r of records) await handle(r);
    },
  });
}
