/** The delivery worker process (distributed mode). */
import { ConfigError, type Config } from '../common/config.js';
import { runMain } from '../common/process-main.js';
import { createLogger } from '../common/log.js';
import { createMetrics } from '../common/metrics.js';
import { startOpsServer } from '../common/ops-server.js';
import { startDeliveryWorker } from './worker.js';
import { createSql } from '../common/db.js';
import { presenceFromConfig } from '../common/presence.js';
import { MembershipCache, createMembershipSource } from '../common/membership.js';

export async function runDelivery(config: Config): Promise<{ stop(): Promise<void> }> {
  if (!config.kafkaBrokers) throw new ConfigError('the delivery worker needs KAFKA_BROKERS');
  const log = createLogger({ level: config.logLevel, nodeId: config.nodeId, role: 'delivery' });
  const metrics = createMetrics({ nodeId: config.nodeId });
  // Routing by presence needs the member lists (PostgreSQL) and the registry (Redis).
  const sql =
    config.redis && config.databaseUrl
      ? createSql({
          url: config.databaseUrl,
          maxConnections: 4,
          connectTimeoutS: config.timeouts.dbConnectS,
          queryTimeoutMs: config.timeouts.dbQueryMs,
          applicationName: `realchat-delivery-${config.nodeId}`,
        })
      : null;
  if (config.redis && !sql) throw new ConfigError('routing by presence (REDIS_URL / REDIS_SENTINELS) needs DATABASE_URL for member lists');
  const presence = presenceFromConfig(config);
  if (presence && !(await presence.ready(config.redis!.commandTimeoutMs * 4)))
    log.warn('presence registry not reachable yet: broadcasting until it answers');
  const membership = sql
    ? new MembershipCache(createMembershipSource(sql, config.timeouts.dbQueryMs), config.limits.membershipCacheEntries)
    : null;
  const worker = await startDeliveryWorker({ config, log, metrics, presence, membership });
  const ops = await startOpsServer({ port: config.metricsPort, host: '127.0.0.1', registry: metrics.registry, healthy: () => true });
  log.info({ metrics_port: ops.port, topic: config.kafka.eventsTopic, group: config.kafka.deliveryGroupId }, 'delivery started');
  return {
    async stop() {
      await worker.stop();
      await ops.close();
      await presence?.close();
      await sql?.end({ timeout: 5 });
    },
  };
}

if (import.meta.url === `file://${process.argv[1]}`) runMain('delivery', runDelivery);
