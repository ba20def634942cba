/**
 * The composition root of `npm start`: one process that runs the whole pipeline. Without
 * DATABASE_URL it starts embedded PostgreSQL (PGlite) and a JWT secret kept in the data dir; without
 * KAFKA_BROKERS it runs the relay and delivery in-process; with KAFKA_BROKERS it is one gateway node
 * of the distributed stack. The only module that wires gateway/, relay/ and delivery/ together.
 */
import { join } from 'node:path';
import type { Config } from '../common/config.js';
import { createLogger, type Logger } from '../common/log.js';
import { createMetrics, type Metrics } from '../common/metrics.js';
import { createConfiguredSql, type Sql } from '../common/db.js';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../common/embedded-postgres.js';
import { migrate } from '../sql/migrate.js';
import { startGatewayNode } from '../gateway/node.js';
import { clusterPipeline } from '../gateway/cluster.js';
import { inProcessPipeline } from './in-process-pipeline.js';
import { loadOrCreateJwtSecret, loadOrCreateVapidKeys } from './secrets.js';
import { generateVapidKeys } from '../delivery/notifier/push-sender.js';
import { tracingFromConfig, type Tracing } from '../common/tracing.js';
import { startEmbeddedMaintenance } from './embedded-maintenance.js';

export interface RealChat {
  port: number;
  /** REALCHAT_INTERNAL_PORT's bound port (metrics, health), or null. */
  internalPort: number | null;
  nodeId: string;
  log: Logger;
  sql: Sql;
  metrics: Metrics;
  /** The HS256 secret in use (null when tokens are only verified with a public key or JWKS). */
  jwtSecret: string | null;
  /** Resolves when every event committed so far has been handed to connections (in-process mode). */
  settled(): Promise<void>;
  /** Graceful: drain clients, stop consuming, close the database. */
  close(): Promise<void>;
}

/** Rounds of embedded maintenance between two vacuums of the whole database (10 minutes at the default 30 s). */
const EMBEDDED_FULL_VACUUM_EVERY = 20;

export interface StartOptions {
  /** In-memory PGlite instead of dataDir (tests). */
  ephemeralEmbedded?: boolean;
  logger?: Logger;
  /** Tracing to use (tests: an in-memory exporter); absent: from config. The caller shuts it down. */
  tracing?: Tracing;
}

export async function startRealChat(config: Config, opts: StartOptions = {}): Promise<RealChat> {
  const log = opts.logger ?? createLogger({ level: config.logLevel, nodeId: config.nodeId, role: 'gateway' });
  const metrics = createMetrics({ nodeId: config.nodeId });
  const tracing = opts.tracing ?? tracingFromConfig(config, config.kafkaBrokers ? 'gateway' : 'standalone');

  let embedded: EmbeddedPostgres | null = null;
  let databaseUrl = config.databaseUrl;
  let jwtSecret = config.jwt.secret;
  let vapid = config.push.vapid;
  if (config.mode === 'embedded') {
    embedded = await startEmbeddedPostgres(opts.ephemeralEmbedded ? null : join(config.dataDir, 'pglite'));
    databaseUrl = embedded.url;
    if (!jwtSecret && !config.jwt.publicKeyPem && !config.jwt.jwks) {
      const s = await loadOrCreateJwtSecret(config.dataDir);
      jwtSecret = s.secret;
      log.info({ path: s.path, created: s.created }, 'using the embedded JWT secret');
    }
    // Web Push works out of the box here too: a VAPID pair kept beside the JWT secret (tests: in memory).
    if (!vapid) {
      if (opts.ephemeralEmbedded) vapid = generateVapidKeys();
      else {
        const v = await loadOrCreateVapidKeys(config.dataDir, generateVapidKeys);
        vapid = v.keys;
        log.info({ path: v.path, created: v.created }, 'using the embedded VAPID keys (web push)');
      }
    }
  }
  if (!databaseUrl) throw new Error('unreachable: no database URL');

  // PGlite behind pglite-socket is single-connection.
  const poolSize = embedded ? 1 : config.limits.dbPoolSize;
  const sql = createConfiguredSql(config.timeouts, {
    url: databaseUrl,
    maxConnections: poolSize,
    applicationName: `realchat-${config.nodeId}`,
  });
  const applied = await migrate(sql);
  if (applied.length) log.info({ migrations: applied }, 'applied migrations');

  const maintenance =
    embedded && config.timeouts.embeddedMaintenanceMs > 0
      ? startEmbeddedMaintenance({
          sql,
          log,
          intervalMs: config.timeouts.embeddedMaintenanceMs,
          fullEvery: EMBEDDED_FULL_VACUUM_EVERY,
          // A full vacuum's length grows with the tables, and nothing waits on it but the next round.
          timeoutMs: Math.max(60_000, config.timeouts.dbQueryMs),
        })
      : null;

  const node = await startGatewayNode({
    config,
    sql,
    poolSize,
    log,
    metrics,
    jwtSecret,
    pipeline: config.kafkaBrokers
      ? clusterPipeline({ config, log, metrics })
      : inProcessPipeline({ config, sql, log, metrics, tracing, vapid }),
    vapidPublicKey: vapid?.publicKey ?? null,
    tracing,
  });

  let closing: Promise<void> | null = null;
  return {
    port: node.port,
    internalPort: node.internalPort,
    nodeId: config.nodeId,
    log,
    sql,
    metrics,
    jwtSecret,
    settled: () => node.settled(),
    close() {
      closing ??= (async () => {
        await node.close();
        await maintenance?.stop();
        await sql.end({ timeout: 5 });
        if (embedded) await embedded.close();
        if (!opts.tracing) await tracing.shutdown().catch(() => {});
      })();
      return closing;
    },
  };
}
