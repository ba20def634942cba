/**
 * Composition root of the single-process pipeline: gateway + in-process relay + in-process delivery,
 * on embedded PGlite or a real Postgres. Only wiring here; every part is built from its factory.
 */
import { join } from 'node:path';
import type { Config } from '../common/config.js';
import { createLogger, type Logger } from '../common/log.js';
import { createMetrics } from '../common/metrics.js';
import { createSql, withTimeout, type Sql } from '../common/db.js';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../common/embedded-postgres.js';
import { createInMemoryBus } from '../common/bus.js';
import { migrate } from '../sql/migrate.js';
import { createOutboxRelay } from '../relay/outbox-relay.js';
import { MembershipCache } from '../delivery/membership-cache.js';
import { createDeliveryRouter } from '../delivery/router.js';
import { createAuthenticator } from './auth.js';
import { createChatStore } from './chat-store.js';
import { ConnectionRegistry } from './registry.js';
import { createLocalInbox } from './inbox.js';
import { RateLimiter } from './rate-limit.js';
import { loadOrCreateJwtSecret } from './secrets.js';
import { startGatewayServer } from './server.js';

export interface RealChat {
  port: number;
  nodeId: string;
  log: Logger;
  sql: Sql;
  jwtSecret: string;
  /** Resolves when every committed event so far has been handed to connections (tests). */
  settled(): Promise<void>;
  /** Graceful: drain clients, stop the relay, close the database. */
  close(): Promise<void>;
}

export interface StartOptions {
  /** In-memory PGlite instead of dataDir (tests). */
  ephemeralEmbedded?: boolean;
  logger?: Logger;
}

export async function startRealChat(config: Config, opts: StartOptions = {}): Promise<RealChat> {
  const log = opts.logger ?? createLogger({ level: config.logLevel, nodeId: config.nodeId, role: 'gateway' });
  const metrics = createMetrics({ nodeId: config.nodeId });

  let embedded: EmbeddedPostgres | null = null;
  let databaseUrl = config.databaseUrl;
  let jwtSecret = config.jwtSecret;
  if (config.mode === 'embedded') {
    embedded = await startEmbeddedPostgres(opts.ephemeralEmbedded ? null : join(config.dataDir, 'pglite'));
    databaseUrl = embedded.url;
    if (!jwtSecret) {
      const s = await loadOrCreateJwtSecret(config.dataDir);
      jwtSecret = s.secret;
      log.info({ path: s.path, created: s.created }, 'using the embedded JWT secret');
    }
  }
  if (!databaseUrl || !jwtSecret) throw new Error('unreachable: config validated DATABASE_URL and REALCHAT_JWT_SECRET');

  const sql = createSql({
    url: databaseUrl,
    maxConnections: embedded ? 1 : 10,
    connectTimeoutS: config.timeouts.dbConnectS,
    queryTimeoutMs: config.timeouts.dbQueryMs,
    applicationName: `realchat-${config.nodeId}`,
  });
  const applied = await migrate(sql);
  if (applied.length) log.info({ migrations: applied }, 'applied migrations');

  const store = createChatStore({ sql, queryTimeoutMs: config.timeouts.dbQueryMs, maxRoomMembers: config.limits.maxRoomMembers });
  const auth = createAuthenticator(jwtSecret);
  const registry = new ConnectionRegistry();
  const membership = new MembershipCache(store, config.limits.membershipCacheEntries);
  const bus = createInMemoryBus();
  const router = createDeliveryRouter({
    membership,
    inbox: createLocalInbox(registry),
    log,
    async onUndecodable(record, reason) {
      metrics.failedDeliveries.inc({ reason: 'undecodable_event' });
      log.error({ event_id: record.eventId, type: record.type, trace_id: record.traceId, reason }, 'undecodable event skipped');
    },
  });
  bus.subscribe((records) => router.handle(records));
  const relay = createOutboxRelay({ sql, bus, log, metrics, batchSize: 500, pollMs: config.timeouts.relayPollMs, queryTimeoutMs: config.timeouts.dbQueryMs });
  relay.start();

  const server = await startGatewayServer(
    {
      config,
      store,
      auth,
      registry,
      membership,
      log,
      metrics,
      sendLimiter: new RateLimiter(config.limits.sendsPerSecond, config.limits.sendBurst),
      onEventCommitted: () => relay.wake(),
      ready: async () => {
        try {
          await withTimeout(store.ping(), 1000, 'readiness ping');
          return true;
        } catch {
          return false;
        }
      },
    },
    config.host,
    config.port,
  );
  log.info({ host: config.host, port: server.port, mode: config.mode, dev_auth: config.devAuth }, 'realchat listening');

  let closing: Promise<void> | null = null;
  return {
    port: server.port,
    nodeId: config.nodeId,
    log,
    sql,
    jwtSecret,
    settled: () => relay.idle(),
    close() {
      closing ??= (async () => {
        server.drain({ retryAfterMs: 2000 });
        await relay.stop();
        await bus.close();
        server.close();
        await sql.end({ timeout: 5 });
        if (embedded) await embedded.close();
      })();
      return closing;
    },
  };
}
