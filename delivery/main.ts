/** The delivery worker process (distributed mode). */
import { ConfigError, type Config } from '../common/config.js';
import { runMain } from '../common/process-main.js';
import { createLogger } from '../common/log.js';
import { createMetrics } from '../common/metrics.js';
import { probe, readiness, startOpsServer, type DependencyCheck, type Readiness } from '../common/ops-server.js';
import { startDeliveryWorker } from './worker.js';
import { createConfiguredSql } from '../common/db.js';
import { presenceFromConfig } from '../common/presence.js';
import { MembershipCache, createMembershipSource } from '../common/membership.js';
import { tracingFromConfig } from '../common/tracing.js';

export async function runDelivery(config: Config): Promise<{ stop(): Promise<void> }> {
  if (!config.kafkaBrokers) throw new ConfigError('the delivery worker needs KAFKA_BROKERS');
  const log = createLogger({ level: config.logLevel, nodeId: config.nodeId, role: 'delivery' });
  const metrics = createMetrics({ nodeId: config.nodeId });
  const tracing = tracingFromConfig(config, 'delivery');
  // Routing by presence needs the member lists (PostgreSQL) and the registry (Redis).
  const sql =
    config.redis && config.databaseUrl
      ? createConfiguredSql(config.timeouts, {
          url: config.databaseUrl,
          maxConnections: 4,
          applicationName: `realchat-delivery-${config.nodeId}`,
        })
      : null;
  if (config.redis && !sql) throw new ConfigError('routing by presence (REDIS_URL / REDIS_SENTINELS) needs DATABASE_URL for member lists');
  const presence = presenceFromConfig(config);
  let worker: Awaited<ReturnType<typeof startDeliveryWorker>> | null = null;
  const probeMs = Math.min(1000, config.timeouts.dbQueryMs);
  // Ready = it can route: its group member consumes, and the stores routing reads answer. (Without
  // Redis it still delivers, by broadcast, but slower for every node: an operator should know.)
  const ready = async (): Promise<Readiness> => {
    const checks: Record<string, DependencyCheck> = {};
    const status = worker?.consumerStatus();
    checks.kafka = status ? { ok: status.running, detail: status.detail } : { ok: false, detail: 'starting: joining the consumer group' };
    if (presence) checks.redis = await probe('redis ping', config.redis!.commandTimeoutMs, () => presence.redis.ping());
    if (sql) checks.postgres = await probe('postgres ping', probeMs, () => sql`SELECT 1`);
    return readiness(checks);
  };
  // The ops port comes up first, so /readyz says what a slow start is waiting for.
  const ops = await startOpsServer({ port: config.metricsPort, host: '127.0.0.1', registry: metrics.registry, healthy: () => true, ready });
  try {
    if (presence && !(await presence.ready(config.redis!.commandTimeoutMs * 4)))
      log.warn('presence registry not reachable yet: broadcasting until it answers');
    const membership = sql
      ? new MembershipCache(createMembershipSource(sql, config.timeouts.dbQueryMs), config.limits.membershipCacheEntries)
      : null;
    worker = await startDeliveryWorker({ config, log, metrics, presence, membership, tracing });
  } catch (err) {
    await ops.close();
    await presence?.close();
    await sql?.end({ timeout: 1 }).catch(() => {});
    throw err;
  }
  const running = worker;
  log.info({ metrics_port: ops.port, topic: config.kafka.eventsTopic, group: config.kafka.deliveryGroupId }, 'delivery started');
  return {
    async stop() {
      await running.stop();
      await ops.close();
      await presence?.close();
      await sql?.end({ timeout: 5 });
      await tracing.shutdown().catch(() => {});
    },
  };
}

if (import.meta.url === `file://${process.argv[1]}`) runMain('delivery', runDelivery);
