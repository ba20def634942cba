/**
 * The notifier process (distributed mode, `npm run notifier`): a member of its own consumer group
 * on the event topic (REALCHAT_NOTIFIER_GROUP), so it reads every event independently of delivery.
 * A batch's notifications are stored before its offsets are marked (common/kafka/consumer.ts), so a
 * notifier killed at any point re-reads at most the unmarked records, and storing them again
 * changes nothing. Presence comes from the Redis registry (common/presence.ts); without one every
 * member counts as online (notified only after the unread delay).
 */
import { ConfigError, type Config } from '../../common/config.js';
import { runMain } from '../../common/process-main.js';
import { createLogger } from '../../common/log.js';
import { createMetrics } from '../../common/metrics.js';
import { createSql } from '../../common/db.js';
import { CircuitBreaker } from '../../common/breaker.js';
import { presenceFromConfig, type PresenceRegistry } from '../../common/presence.js';
import { EVENT_HEADERS, type EventRecord } from '../../common/events.js';
import { createKafkaClient, ensureTopics, runConsumer, type InRecord, type RunningConsumer } from '../../common/kafka/index.js';
import { probe, readiness, startOpsServer, type DependencyCheck } from '../../common/ops-server.js';
import { createNotifier, type OnlineCheck } from './notifier.js';
import { createPushMetrics } from './metrics.js';

/** Online users by the presence registry, behind a breaker: while it is open, presence is unknown. */
export function registryOnlineCheck(presence: PresenceRegistry | null, breaker: CircuitBreaker): OnlineCheck {
  return async (userIds) => {
    if (!presence || !breaker.allow()) return null;
    try {
      const located = await presence.locate(userIds);
      breaker.success();
      const online = new Set<string>();
      for (const users of located.values()) for (const u of users) online.add(u);
      return online;
    } catch {
      breaker.failure();
      return null;
    }
  };
}

function toEventRecord(r: InRecord): EventRecord {
  return {
    key: r.key ?? '',
    value: r.value ?? '',
    type: r.headers[EVENT_HEADERS.type] ?? '',
    eventId: r.headers[EVENT_HEADERS.eventId] ?? '',
    traceId: r.headers[EVENT_HEADERS.traceparent] ?? r.headers[EVENT_HEADERS.traceId] ?? null,
  };
}

export async function runNotifier(config: Config): Promise<{ stop(): Promise<void> }> {
  if (!config.kafkaBrokers) throw new ConfigError('the notifier needs KAFKA_BROKERS');
  if (!config.databaseUrl) throw new ConfigError('the notifier needs DATABASE_URL');
  const vapid = config.push.vapid;
  if (!vapid) throw new ConfigError('the notifier needs REALCHAT_VAPID_PUBLIC_KEY and REALCHAT_VAPID_PRIVATE_KEY');
  const log = createLogger({ level: config.logLevel, nodeId: config.nodeId, role: 'notifier' });
  const metrics = createMetrics({ nodeId: config.nodeId });
  const pushMetrics = createPushMetrics(metrics.registry);
  const sql = createSql({
    url: config.databaseUrl,
    maxConnections: 4,
    connectTimeoutS: config.timeouts.dbConnectS,
    queryTimeoutMs: config.timeouts.dbQueryMs,
    applicationName: `realchat-notifier-${config.nodeId}`,
  });
  const presence = presenceFromConfig(config);
  if (!presence) log.warn('no presence registry (REDIS_URL): every member counts as online and is notified after the unread delay only');
  const notifier = createNotifier({
    sql,
    log,
    metrics: pushMetrics,
    config: config.push,
    vapid,
    online: registryOnlineCheck(presence, new CircuitBreaker(config.breakers.redis)),
    queryTimeoutMs: config.timeouts.dbQueryMs,
  });
  let consumer: RunningConsumer | null = null;
  const ready = async () => {
    const checks: Record<string, DependencyCheck> = {};
    const status = consumer?.status;
    checks.kafka = status ? { ok: status.running, detail: status.detail } : { ok: false, detail: 'starting: joining the consumer group' };
    checks.postgres = await probe('postgres ping', Math.min(1000, config.timeouts.dbQueryMs), () => sql`SELECT 1`);
    return readiness(checks);
  };
  const ops = await startOpsServer({ port: config.metricsPort, host: '127.0.0.1', registry: metrics.registry, healthy: () => true, ready });
  const kafka = createKafkaClient({
    brokers: config.kafkaBrokers,
    clientId: `realchat-notifier-${config.nodeId}`,
    log,
    requestTimeoutMs: config.kafka.requestTimeoutMs,
  });
  try {
    await ensureTopics(kafka, [{ topic: config.kafka.eventsTopic, partitions: config.kafka.partitions }]);
    notifier.start();
    consumer = await runConsumer(kafka, {
      groupId: config.push.groupId,
      topic: config.kafka.eventsTopic,
      // A new group reads what the topic retains; messages older than a day are not notified (store.ts).
      fromBeginning: true,
      log,
      handleBatch: (records) => notifier.ingest(records.map(toEventRecord)),
      partitionsConsumedConcurrently: config.limits.deliveryConcurrency,
      fetch: { minBytes: config.kafka.fetchMinBytes, maxWaitMs: config.kafka.fetchMaxWaitMs },
    });
  } catch (err) {
    await notifier.stop();
    await ops.close();
    await presence?.close();
    await sql.end({ timeout: 1 }).catch(() => {});
    throw err;
  }
  const running = consumer;
  log.info({ metrics_port: ops.port, topic: config.kafka.eventsTopic, group: config.push.groupId }, 'notifier started');
  return {
    async stop() {
      await running.stop();
      await notifier.stop();
      await ops.close();
      await presence?.close();
      await sql.end({ timeout: 5 });
    },
  };
}

if (import.meta.url === `file://${process.argv[1]}`) runMain('notifier', runNotifier);
