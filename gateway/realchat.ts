/**
 * Composition root of a gateway node. Without KAFKA_BROKERS it also runs the relay and delivery
 * in-process over an in-memory bus (embedded default / single node); with it, it only commits and
 * consumes the gateway delivery topic. Only wiring here; every part is built from its factory.
 */
import { join } from 'node:path';
import { ConfigError, isLoopbackHost, type Config } from '../common/config.js';
import { createLogger, type Logger } from '../common/log.js';
import { createMetrics, type Metrics } from '../common/metrics.js';
import { createSql, withTimeout, type Sql } from '../common/db.js';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../common/embedded-postgres.js';
import { createInMemoryBus } from '../common/bus.js';
import { BacklogMonitor } from '../common/outbox-stats.js';
import { AppError } from '../common/errors.js';
import { Semaphore } from '../common/semaphore.js';
import { migrate } from '../sql/migrate.js';
import { createOutboxRelay } from '../relay/outbox-relay.js';
import { MembershipCache } from '../delivery/membership-cache.js';
import { createMembershipSource } from '../delivery/membership-source.js';
import { createDeliveryRouter } from '../delivery/router.js';
import { createAuthenticator } from './auth.js';
import { createChatStore } from './chat-store.js';
import { ConnectionRegistry } from './registry.js';
import { createGatewayInbox, type GatewayInbox } from './inbox.js';
import { RateLimiter } from './rate-limit.js';
import { loadOrCreateJwtSecret } from './secrets.js';
import { startGatewayServer } from './server.js';
import { startClusterLink, type ClusterLink } from './cluster.js';

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

export interface StartOptions {
  /** In-memory PGlite instead of dataDir (tests). */
  ephemeralEmbedded?: boolean;
  logger?: Logger;
}

interface Pipeline {
  onEventCommitted(): void;
  settled(): Promise<void>;
  stop(): Promise<void>;
}

/** Relay + delivery in this process: outbox -> in-memory bus -> router -> this node's inbox. */
function startInProcessPipeline(config: Config, sql: Sql, inbox: GatewayInbox, log: Logger, metrics: Metrics): Pipeline {
  const bus = createInMemoryBus();
  const router = createDeliveryRouter({
    sink: { deliver: (d) => inbox.deliver(d) },
    log,
    metrics,
    dedupEntries: 100_000,
    async onUndecodable(record, reason) {
      metrics.deadLettered.inc({ reason: 'undecodable' });
      log.error({ event_id: record.eventId, type: record.type, trace_id: record.traceId, reason }, 'undecodable event skipped (no dead-letter topic in-process)');
    },
  });
  bus.subscribe((records) => router.handle(records));
  const relay = createOutboxRelay({ sql, bus, log, metrics, batchSize: 500, pollMs: config.timeouts.relayPollMs, queryTimeoutMs: config.timeouts.dbQueryMs });
  relay.start();
  return {
    onEventCommitted: () => relay.wake(),
    settled: () => relay.idle(),
    async stop() {
      await relay.stop();
      await bus.close();
    },
  };
}

export async function startRealChat(config: Config, opts: StartOptions = {}): Promise<RealChat> {
  const log = opts.logger ?? createLogger({ level: config.logLevel, nodeId: config.nodeId, role: 'gateway' });
  const metrics = createMetrics({ nodeId: config.nodeId });

  let embedded: EmbeddedPostgres | null = null;
  let databaseUrl = config.databaseUrl;
  const jwt = config.jwt;
  let jwtSecret = jwt.secret;
  if (config.mode === 'embedded') {
    embedded = await startEmbeddedPostgres(opts.ephemeralEmbedded ? null : join(config.dataDir, 'pglite'));
    databaseUrl = embedded.url;
    if (!jwtSecret && !jwt.publicKeyPem && !jwt.jwks) {
      const s = await loadOrCreateJwtSecret(config.dataDir);
      jwtSecret = s.secret;
      log.info({ path: s.path, created: s.created }, 'using the embedded JWT secret');
    }
  }
  if (!jwtSecret && !jwt.publicKeyPem && !jwt.jwks) {
    throw new ConfigError('a token key is required when DATABASE_URL is set: REALCHAT_JWT_SECRET, REALCHAT_JWT_PUBLIC_KEY or REALCHAT_JWT_JWKS (only the embedded default generates one)');
  }
  if (config.devAuth && !jwtSecret) throw new ConfigError('REALCHAT_DEV_AUTH needs REALCHAT_JWT_SECRET to sign dev tokens');
  if (config.devAuth && !isLoopbackHost(config.host)) {
    log.warn(
      { host: config.host },
      'DEV AUTH IS ON ON A NON-LOOPBACK ADDRESS: anyone who can reach this port can mint a token for any user (POST /v1/dev/token). Never run this way in production.',
    );
  }
  if (!databaseUrl) throw new Error('unreachable: no database URL');

  // PGlite behind pglite-socket is single-connection.
  const poolSize = embedded ? 1 : 10;
  const sql = createSql({
    url: databaseUrl,
    maxConnections: poolSize,
    connectTimeoutS: config.timeouts.dbConnectS,
    queryTimeoutMs: config.timeouts.dbQueryMs,
    applicationName: `realchat-${config.nodeId}`,
  });
  const applied = await migrate(sql);
  if (applied.length) log.info({ migrations: applied }, 'applied migrations');

  const store = createChatStore({
    sql,
    queryTimeoutMs: config.timeouts.dbQueryMs,
    maxRoomMembers: config.limits.maxRoomMembers,
    maxPageBytes: config.limits.maxPageBytes,
    outboxMode: config.outboxMode,
    // A few operations per connection keep the pool busy; the rest wait here, bounded, so the
    // relay's own queries never queue behind an unbounded backlog in the driver.
    gate: new Semaphore(poolSize * 2, config.limits.maxQueuedDbOperations),
  });
  const registry = new ConnectionRegistry();
  const membership = new MembershipCache(createMembershipSource(sql, config.timeouts.dbQueryMs), config.limits.membershipCacheEntries);
  const inbox = createGatewayInbox(registry, membership);
  const backlog = new BacklogMonitor(
    sql,
    { maxRows: config.limits.maxOutboxBacklog, slot: config.outboxMode === 'wal' ? { name: config.slotName, maxLagBytes: config.maxSlotLagBytes } : null },
    1000,
    config.timeouts.dbQueryMs,
    (s) => {
      metrics.outboxBacklog.set(s.backlog);
      metrics.outboxOldestAge.set(s.oldestAgeS);
      if (s.slotLagBytes !== null) metrics.slotLag.set(s.slotLagBytes);
    },
  );
  backlog.start();

  let pipeline: Pipeline;
  let cluster: ClusterLink | null = null;
  if (config.kafkaBrokers) {
    const link = await startClusterLink({ config, inbox, log, metrics });
    cluster = link;
    // The relay is another process, woken by NOTIFY from the outbox trigger.
    pipeline = { onEventCommitted: () => {}, settled: async () => {}, stop: () => link.stop() };
  } else {
    pipeline = startInProcessPipeline(config, sql, inbox, log, metrics);
  }

  const server = await startGatewayServer(
    {
      config,
      store,
      auth: createAuthenticator({
        secret: jwtSecret,
        publicKeyPem: jwt.publicKeyPem,
        jwks: jwt.jwks,
        issuer: jwt.issuer,
        audience: jwt.audience,
        maxTtlS: jwt.maxTtlS,
        clockToleranceS: jwt.clockToleranceS,
      }),
      registry,
      membership,
      log,
      metrics,
      sendLimiter: new RateLimiter(config.limits.sendsPerSecond, config.limits.sendBurst),
      admitSend() {
        if (backlog.overloaded) {
          metrics.sendsRefusedBacklog.inc();
          throw new AppError('unavailable', 'the event stream is behind (outbox backlog or replication slot over its bound); retry with the same idempotency key', { retryAfterS: 1 });
        }
      },
      onEventCommitted: () => pipeline.onEventCommitted(),
      cluster,
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
  log.info({ host: config.host, port: server.port, mode: config.mode, kafka: Boolean(config.kafkaBrokers), dev_auth: config.devAuth }, 'realchat listening');

  let closing: Promise<void> | null = null;
  return {
    port: server.port,
    internalPort: server.internalPort,
    nodeId: config.nodeId,
    log,
    sql,
    metrics,
    jwtSecret,
    settled: () => pipeline.settled(),
    close() {
      closing ??= (async () => {
        server.drain({ retryAfterMs: 2000 });
        // Bounded wait for the close handshakes, so delivery positions are recorded before the database closes.
        const deadline = Date.now() + config.timeouts.drainMs;
        while (registry.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
        backlog.stop();
        await pipeline.stop();
        await server.close();
        await sql.end({ timeout: 5 });
        if (embedded) await embedded.close();
      })();
      return closing;
    },
  };
}
