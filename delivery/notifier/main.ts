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
import { createConfiguredSql } from '../../common/db.js';
import { CircuitBreaker } from '../../common/breaker.js';
import { presenceFromConfig, type PresenceRegistry } from '../../common/presence.js';
import { createNotifier, type OnlineCheck } from './notifier.js';
import { createPushMetrics } from './metrics.js';
import { runStreamConsumerProcess } from '../stream-consumer-process.js';

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

export async function runNotifier(config: Config): Promise<{ stop(): Promise<void> }> {
  if (!config.kafkaBrokers) throw new ConfigError('the notifier needs KAFKA_BROKERS');
  if (!config.databaseUrl) throw new ConfigError('the notifier needs DATABASE_URL');
  const vapid = config.push.vapid;
  if (!vapid) throw new ConfigError('the notifier needs REALCHAT_VAPID_PUBLIC_KEY and REALCHAT_VAPID_PRIVATE_KEY');
  const log = createLogger({ level: config.logLevel, nodeId: config.nodeId, role: 'notifier' });
  const metrics = createMetrics({ nodeId: config.nodeId });
  const pushMetrics = createPushMetrics(metrics.registry);
  const sql = createConfiguredSql(config.timeouts, {
    url: config.databaseUrl,
    maxConnections: 4,
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
  notifier.start();
  // A new group reads what the topic retains; messages older than a day are not notified (store.ts).
  return runStreamConsumerProcess({
    config,
    log,
    metrics,
    sql,
    role: 'notifier',
    groupId: config.push.groupId,
    ingest: (records) => notifier.ingest(records),
    background: true,
    partitionsConsumedConcurrently: config.limits.deliveryConcurrency,
    async close() {
      await notifier.stop();
      await presence?.close();
    },
  });
}

if (import.meta.url === `file://${process.argv[1]}`) runMain('notifier', runNotifier);
