/**
 * Distributed mode: this node's share of deliveries, from the gateway delivery topic. Every node
 * reads the whole topic with a group of its own (broadcast) and keeps what its connections need;
 * connections drop duplicates by sequence and fill gaps from the database.
 */
import type { Config } from '../common/config.js';
import type { Logger } from '../common/log.js';
import type { Metrics } from '../common/metrics.js';
import { createKafka, ensureTopics, runConsumer, type InRecord, type RunningConsumer } from '../common/kafka.js';
import { decodeDeliveryValue, decodeEvent } from '../common/events.js';
import type { GatewayInbox } from './inbox.js';

export async function startDeliveryConsumer(deps: { config: Config; inbox: GatewayInbox; log: Logger; metrics: Metrics }): Promise<RunningConsumer> {
  const { config, inbox, log, metrics } = deps;
  const kafka = createKafka({ brokers: config.kafkaBrokers!, clientId: `realchat-gateway-${config.nodeId}`, log, requestTimeoutMs: config.kafka.requestTimeoutMs });
  await ensureTopics(kafka, [{ topic: config.kafka.deliveriesTopic, partitions: config.kafka.partitions }]);
  const consumer = await runConsumer(kafka, {
    groupId: `realchat-gateway-${config.nodeId}`,
    topic: config.kafka.deliveriesTopic,
    // A (re)started node has no connections yet: anything older is served by resume from the database.
    fromBeginning: false,
    log,
    async handleBatch(records) {
      for (const record of records) await handle(record);
    },
  });

  async function handle(record: InRecord): Promise<void> {
      let delivery;
      try {
        const { recipients, event } = decodeDeliveryValue(record.value ?? '');
        const decoded = decodeEvent(event);
        if (!decoded) return;
        delivery = { recipients, event: decoded, traceId: record.headers.trace_id ?? null };
      } catch (err) {
        metrics.failedDeliveries.inc({ reason: 'undecodable_delivery' });
        log.error({ err, partition: record.partition, offset: record.offset }, 'undecodable delivery record skipped');
        return;
      }
      await inbox.deliver(delivery);
  }
  return consumer;
}
