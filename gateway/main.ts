/**
 * Process entry of a gateway node in the distributed stack: commits to PostgreSQL and consumes its
 * deliveries from Kafka (relay and delivery workers are other processes). A single process with
 * everything in it is `npm start` (standalone/main.ts).
 */
import { ConfigError } from '../common/config.js';
import { createConfiguredSql, isUnavailableError } from '../common/db.js';
import { createLogger } from '../common/log.js';
import { createMetrics } from '../common/metrics.js';
import { runMain } from '../common/process-main.js';
import { retry } from '../common/retry.js';
import { migrate } from '../sql/migrate.js';
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
  // Started while PostgreSQL restarts (a supervisor's restart overlapping a database restart), it
  // waits for the database, about a minute at most, instead of exiting at once and leaving the
  // pace of its next attempt to the supervisor (docs/chaos.md, finding 18).
  const applied = await retry(() => migrate(sql), {
    retries: 40,
    baseMs: 250,
    capMs: 2000,
    isRetriable: isUnavailableError,
    // A timer that holds the process: nothing else does yet, and retry()'s own sleep is unref'd.
    sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
    onRetry: (err, attempt, delayMs) =>
      log.warn({ err, attempt, delay_ms: delayMs }, 'PostgreSQL not reachable yet: waiting to apply migrations'),
  });
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
