/**
 * The process around a consumer of the public event stream with a group of its own (the notifier,
 * the webhook dispatcher): ops server with readiness (Kafka membership, PostgreSQL), the topic,
 * the group member, and an orderly stop. The component decides what a batch means; its offsets are
 * marked only once `ingest` resolved (common/kafka/consumer.ts), so a crash re-reads at most the
 * unmarked records and the component must take them again idempotently.
 */
import type { Config } from '../common/config.js';
import type { Sql } from '../common/db.js';
import type { EventRecord } from '../common/events.js';
import type { Logger } from '../common/log.js';
import type { Metrics } from '../common/metrics.js';
import { createKafkaClient, kafkaConnection, ensureTopics, runConsumer, type RunningConsumer } from '../common/kafka/index.js';
import { probe, readiness, startOpsServer, type DependencyCheck } from '../common/ops-server.js';
import { toEventRecord } from './event-record.js';

export async function runStreamConsumerProcess(opts: {
  config: Config;
  log: Logger;
  metrics: Metrics;
  sql: Sql;
  /** Names the Kafka client and the start-up log line. */
  role: string;
  groupId: string;
  /** The topic it reads (default: this region's event topic). */
  topic?: string;
  /** Stores what a batch means; resolves once it is durable. */
  ingest(records: EventRecord[]): Promise<unknown>;
  partitionsConsumedConcurrently?: number;
  /**
   * Nobody waits on this consumer in real time (the notifier, the webhook dispatcher): it fetches
   * with `backgroundFetchMinBytes` / `backgroundFetchMaxWaitMs`, large fetches rather than one per
   * few records. Otherwise (the mirror, whose delay is the replication lag) the real-time settings.
   */
  background?: boolean;
  /** Releases the component (its loops, its connections); called on stop and on a failed start. */
  close(): Promise<void>;
}): Promise<{ stop(): Promise<void> }> {
  const { config, log, sql } = opts;
  const topic = opts.topic ?? config.kafka.eventsTopic;
  let consumer: RunningConsumer | null = null;
  const ready = async () => {
    const checks: Record<string, DependencyCheck> = {};
    const status = consumer?.status;
    checks.kafka = status ? { ok: status.running, detail: status.detail } : { ok: false, detail: 'starting: joining the consumer group' };
    checks.postgres = await probe('postgres ping', Math.min(1000, config.timeouts.dbQueryMs), () => sql`SELECT 1`);
    return readiness(checks);
  };
  const ops = await startOpsServer({
    port: config.metricsPort,
    host: '127.0.0.1',
    registry: opts.metrics.registry,
    healthy: () => true,
    ready,
  });
  try {
    const kafka = createKafkaClient({
      brokers: config.kafkaBrokers!,
      clientId: `realchat-${opts.role}-${config.nodeId}`,
      log,
      ...kafkaConnection(config),
    });
    await ensureTopics(kafka, [{ topic, partitions: config.kafka.partitions }]);
    consumer = await runConsumer(kafka, {
      groupId: opts.groupId,
      topic,
      // A new group starts from what the topic still holds (each component says what it skips).
      fromBeginning: true,
      log,
      handleBatch: (records) => opts.ingest(records.map(toEventRecord)).then(() => {}),
      ...(opts.partitionsConsumedConcurrently ? { partitionsConsumedConcurrently: opts.partitionsConsumedConcurrently } : {}),
      fetch: opts.background
        ? { minBytes: config.kafka.backgroundFetchMinBytes, maxWaitMs: config.kafka.backgroundFetchMaxWaitMs }
        : { minBytes: config.kafka.fetchMinBytes, maxWaitMs: config.kafka.fetchMaxWaitMs },
      commitIntervalMs: config.kafka.commitIntervalMs,
    });
  } catch (err) {
    await opts.close();
    await ops.close();
    await sql.end({ timeout: 1 }).catch(() => {});
    throw err;
  }
  const running = consumer;
  log.info({ metrics_port: ops.port, topic, group: opts.groupId }, `${opts.role} started`);
  return {
    async stop() {
      await running.stop();
      await opts.close();
      await ops.close();
      await sql.end({ timeout: 5 });
    },
  };
}
