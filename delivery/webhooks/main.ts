/**
 * The webhook dispatcher process (distributed mode, `npm run webhooks`): a consumer group of its
 * own (REALCHAT_WEBHOOK_GROUP) on the public event topic. A batch's offsets are marked only once its
 * delivery rows are committed, so a crash re-reads it and the (webhook, event) key drops what was
 * already queued. Several may run: they share the delivery table (sender.ts).
 */
import { ConfigError, type Config } from '../../common/config.js';
import { runMain } from '../../common/process-main.js';
import { createLogger } from '../../common/log.js';
import { createMetrics } from '../../common/metrics.js';
import { createSql } from '../../common/db.js';
import { probe, readiness, startOpsServer, type DependencyCheck, type Readiness } from '../../common/ops-server.js';
import { EVENT_HEADERS, type EventRecord } from '../../common/events.js';
import { createKafkaClient, ensureTopics, runConsumer, type InRecord, type RunningConsumer } from '../../common/kafka/index.js';
import { startWebhookDispatcher } from './dispatcher.js';

function toEventRecord(r: InRecord): EventRecord {
  return {
    key: r.key ?? '',
    value: r.value ?? '',
    type: r.headers[EVENT_HEADERS.type] ?? '',
    eventId: r.headers[EVENT_HEADERS.eventId] ?? r.headers.id ?? '',
    traceId: r.headers[EVENT_HEADERS.traceparent] ?? r.headers[EVENT_HEADERS.traceId] ?? null,
  };
}

export async function runWebhooks(config: Config): Promise<{ stop(): Promise<void> }> {
  if (!config.kafkaBrokers) throw new ConfigError('the webhook dispatcher needs KAFKA_BROKERS (the embedded default runs it in-process)');
  if (!config.databaseUrl) throw new ConfigError('the webhook dispatcher needs DATABASE_URL (its delivery table)');
  const log = createLogger({ level: config.logLevel, nodeId: config.nodeId, role: 'webhooks' });
  const metrics = createMetrics({ nodeId: config.nodeId });
  const sql = createSql({
    url: config.databaseUrl,
    maxConnections: 4,
    connectTimeoutS: config.timeouts.dbConnectS,
    queryTimeoutMs: config.timeouts.dbQueryMs,
    applicationName: `realchat-webhooks-${config.nodeId}`,
  });
  let consumer: RunningConsumer | null = null;
  const ready = async (): Promise<Readiness> => {
    const checks: Record<string, DependencyCheck> = {};
    const status = consumer?.status;
    checks.kafka = status ? { ok: status.running, detail: status.detail } : { ok: false, detail: 'starting: joining the consumer group' };
    checks.postgres = await probe('postgres ping', Math.min(1000, config.timeouts.dbQueryMs), () => sql`SELECT 1`);
    return readiness(checks);
  };
  const ops = await startOpsServer({ port: config.metricsPort, host: '127.0.0.1', registry: metrics.registry, healthy: () => true, ready });
  const dispatcher = startWebhookDispatcher({ config, sql, log, registry: metrics.registry });
  try {
    const kafka = createKafkaClient({
      brokers: config.kafkaBrokers,
      clientId: `realchat-webhooks-${config.nodeId}`,
      log,
      requestTimeoutMs: config.kafka.requestTimeoutMs,
    });
    await ensureTopics(kafka, [{ topic: config.kafka.eventsTopic, partitions: config.kafka.partitions }]);
    consumer = await runConsumer(kafka, {
      groupId: config.webhooks.groupId,
      topic: config.kafka.eventsTopic,
      // A new group starts from what the topic still holds: webhooks registered before the
      // dispatcher first ran get those events too (the (webhook, event) key drops repeats).
      fromBeginning: true,
      log,
      handleBatch: (records) => dispatcher.ingest(records.map(toEventRecord)),
      fetch: { minBytes: config.kafka.fetchMinBytes, maxWaitMs: config.kafka.fetchMaxWaitMs },
    });
  } catch (err) {
    await dispatcher.stop();
    await ops.close();
    await sql.end({ timeout: 1 }).catch(() => {});
    throw err;
  }
  const running = consumer;
  log.info({ metrics_port: ops.port, topic: config.kafka.eventsTopic, group: config.webhooks.groupId }, 'webhook dispatcher started');
  return {
    async stop() {
      await running.stop();
      await dispatcher.stop();
      await ops.close();
      await sql.end({ timeout: 5 });
    },
  };
}

if (import.meta.url === `file://${process.argv[1]}`) runMain('webhooks', runWebhooks);
