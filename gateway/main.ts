/**
 * Process entry of a gateway node in the distributed stack: commits to PostgreSQL and consumes its
 * deliveries from Kafka (relay and delivery workers are other processes). A single process with
 * everything in it is `npm start` (standalone/main.ts).
 */
import { ConfigError } from '../common/config.js';
import { createConfiguredSql } from '../common/db.js';
import { createLogger } from '../common/log.js';
import { createMetrics } from '../common/metrics.js';
import { runMain } from '../common/process-main.js';
import { migrateWhenReachable } from '../sql/migrate.js';
import { clusterPipeline } from './cluster.js';
import { startGatewayNode } from './node.js';
import { tracingFromConfig } from '../common/tracing.js';

runMain('gateway', async (config) => {
  if (!config.databaseUrl || !config.kafkaBrokers) {
    throw new ConfigError(
      'a gateway node needs DATABASE_URL and KAFKA_BROKERS; for one process with everything in it, run `npm start` (node dist/standalone/main.js)',
    );
  }
  const log = createLogger({ level: config.logLevel, nodeId: config.nodeId, role: 'gateway' });
  const metrics = createMetrics({ nodeId: config.nodeId });
  const tracing = tracingFromConfig(config, 'gateway');
  const sql = createConfiguredSql(config.timeouts, {
    url: config.databaseUrl,
    maxConnections: config.limits.dbPoolSize,
    applicationName: `realchat-${config.nodeId}`,
  });
  const applied = await migrateWhenReachable(sql, log);
  if (applied.length) log.info({ migrations: applied }, 'applied migrations');
  const node = await startGatewayNode({
    config,
    sql,
    poolSize: config.limits.dbPoolSize,
    log,
    metrics,
    jwtSecret: config.jwt.secret,
    pipeline: clusterPipeline({ config, log, metrics }),
    tracing,
  });
  return {
    async stop() {
      log.info('draining');
      await node.close();
      await sql.end({ timeout: 5 });
      await tracing.shutdown().catch(() => {});
    },
  };
});
