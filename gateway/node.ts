/**
 * A gateway node: the store, the connection registry, the backlog bound and the uWS server, wired
 * over a database the caller opened and an event pipeline the caller chooses (the Kafka cluster
 * link in distributed mode, gateway/cluster.ts; the in-process relay and delivery in standalone
 * mode, standalone/). Only wiring here; every part is built from its factory.
 */
import { ConfigError, isLoopbackHost, type Config } from '../common/config.js';
import type { Logger } from '../common/log.js';
import type { Metrics } from '../common/metrics.js';
import type { Sql } from '../common/db.js';
import { withTimeout } from '../common/timeout.js';
import { CircuitBreaker } from '../common/breaker.js';
import { watchBreaker } from '../common/breaker-watch.js';
import { BacklogMonitor } from '../common/backlog-monitor.js';
import { AppError } from '../common/errors.js';
import { traceIdGenerator } from '../common/trace-id.js';
import { Semaphore } from '../common/semaphore.js';
import { MembershipCache, createMembershipSource } from '../common/membership.js';
import { createAuthenticator } from './auth.js';
import { createAdminDeps } from './admin-routes.js';
import { createChatStore } from './chat-store.js';
import { createRegionForwarder, withRegionForwarding } from './region-forwarder.js';
import { fanOutTyping } from './typing.js';
import { catchUpFailovers, failoversFrom } from './region-catch-up.js';
import { ConnectionRegistry } from './registry.js';
import { createLapseCatchUp } from './lapse-catch-up.js';
import { createGatewayInbox } from './inbox.js';
import { RateLimiter } from './rate-limit.js';
import { startGatewayServer } from './server.js';
import type { PipelineFactory } from './pipeline.js';
import { createLocalPresenceFeed, type PresenceNotice } from './presence-feed.js';
import { presenceFromOtherRegion, withRegionPresence } from './region-presence.js';
import { createPresenceService } from './presence-watch.js';
import type { Tracing } from '../common/tracing.js';
import { createPushStore } from './push-store.js';

export interface GatewayNodeOptions {
  config: Config;
  sql: Sql;
  /** Connections in the pool behind `sql` (bounds the request-path gate). */
  poolSize: number;
  log: Logger;
  metrics: Metrics;
  /** HS256 secret (dev tokens, simple deployments); public keys / JWKS come from config. */
  jwtSecret: string | null;
  pipeline: PipelineFactory;
  /** Spans of sends and deliveries (absent: off). */
  tracing?: Tracing;
  /** The VAPID public key in use (the embedded default generates one); absent: config's; null: web push off. */
  vapidPublicKey?: string | null;
}

export interface GatewayNode {
  port: number;
  /** REALCHAT_INTERNAL_PORT's bound port (metrics, health), or null. */
  internalPort: number | null;
  settled(): Promise<void>;
  /** Graceful: drain clients (bounded), stop the pipeline and the server. The caller closes the database. */
  close(): Promise<void>;
}

export async function startGatewayNode(opts: GatewayNodeOptions): Promise<GatewayNode> {
  const { config, sql, log, metrics, jwtSecret } = opts;
  const jwt = config.jwt;
  if (!jwtSecret && !jwt.publicKeyPem && !jwt.jwks) {
    throw new ConfigError(
      'a token key is required when DATABASE_URL is set: REALCHAT_JWT_SECRET, REALCHAT_JWT_PUBLIC_KEY or REALCHAT_JWT_JWKS (only the embedded default generates one)',
    );
  }
  if (config.devAuth && !jwtSecret) throw new ConfigError('REALCHAT_DEV_AUTH needs REALCHAT_JWT_SECRET to sign dev tokens');
  if (config.devAuth && !isLoopbackHost(config.host)) {
    log.warn(
      { host: config.host },
      'DEV AUTH IS ON ON A NON-LOOPBACK ADDRESS: anyone who can reach this port can mint a token for any user (POST /v1/dev/token). Never run this way in production.',
    );
  }

  const localStore = createChatStore({
    sql,
    region: config.region,
    queryTimeoutMs: config.timeouts.dbQueryMs,
    maxRoomMembers: config.limits.maxRoomMembers,
    largeRoomMembers: config.limits.largeRoomMembers,
    maxPageBytes: config.limits.maxPageBytes,
    outboxMode: config.outboxMode,
    tracing: opts.tracing,
    // A few operations per connection keep the pool busy; the rest wait here, bounded, so the
    // relay's own queries never queue behind an unbounded backlog in the driver.
    gate: new Semaphore(opts.poolSize * 2, config.limits.maxQueuedDbOperations),
    // While it is open every send is refused `unavailable`: its opening is logged and gauged, since
    // the refusal lines alone cannot tell an open breaker from slow statements.
    breaker: new CircuitBreaker(config.breakers.postgres, undefined, watchBreaker('postgres', log, metrics)),
    sendBatch: {
      maxBatch: config.limits.sendBatchMax,
      // PGlite serves one connection: one batch at a time there.
      maxInFlight: Math.min(config.limits.sendBatchWriters, Math.max(1, Math.floor(opts.poolSize / 2))),
      extraWriterAt: config.limits.sendBatchExtraWriterAt,
      maxQueued: config.limits.maxQueuedDbOperations * 4,
    },
  });
  // Sends to conversations homed in another region go there (docs/multi-region.md).
  const forwarder = createRegionForwarder(config.regions);
  const store = withRegionForwarding(localStore, forwarder);
  // Back after a region outage: first learn which conversations a peer took over meanwhile.
  if (config.regions.peers.size > 0 && config.regions.secret !== null)
    await catchUpFailovers({
      sql,
      self: config.region,
      peers: config.regions.peers,
      secret: config.regions.secret,
      timeoutMs: config.regions.forwardTimeoutMs,
      log,
    });
  // Large-room interest goes to the pipeline (presence), which exists only once the registry does.
  let onRoomInterest: (conversationId: string, interested: boolean) => Promise<void> = async () => {};
  const registry = new ConnectionRegistry((c, i) => onRoomInterest(c, i));
  const membership = new MembershipCache(createMembershipSource(sql, config.timeouts.dbQueryMs), config.limits.membershipCacheEntries);
  const inbox = createGatewayInbox(registry, membership, metrics, opts.tracing);
  const backlog = new BacklogMonitor(
    sql,
    {
      maxRows: config.limits.maxOutboxBacklog,
      slot: config.outboxMode === 'wal' ? { name: config.slotName, maxLagBytes: config.maxSlotLagBytes } : null,
    },
    1000,
    config.timeouts.dbQueryMs,
    (s) => {
      metrics.outboxBacklog.set(s.backlog);
      metrics.outboxOldestAge.set(s.oldestAgeS);
      if (s.slotLagBytes !== null) metrics.slotLag.set(s.slotLagBytes);
    },
  );
  backlog.start();
  const lapse = createLapseCatchUp({
    connections: () => registry.all(),
    lastSequences: (ids) => store.lastSequences(ids),
    log,
    metrics,
  });
  const pipeline = await opts.pipeline({ inbox, users: () => registry.userCounts(), rooms: () => registry.roomsHere(), lapses: lapse });
  onRoomInterest = async (c, i) => pipeline.cluster?.roomInterest(c, i);
  const regionFeed = pipeline.cluster?.presenceFeed ?? createLocalPresenceFeed((u) => registry.countOf(u));
  const presence = createPresenceService({
    feed: forwarder ? withRegionPresence(regionFeed, forwarder, log) : regionFeed,
    store,
    graceMs: config.presence.clientGraceMs,
    maxWatchedPerConnection: config.presence.maxWatchedPerConnection,
    recheckMs: config.presence.clientRecheckMs,
    log,
    metrics,
  });

  const auth = createAuthenticator({
    secret: jwtSecret,
    publicKeyPem: jwt.publicKeyPem,
    jwks: jwt.jwks,
    issuer: jwt.issuer,
    audience: jwt.audience,
    maxTtlS: jwt.maxTtlS,
    clockToleranceS: jwt.clockToleranceS,
  });
  const server = await startGatewayServer(
    {
      config,
      store,
      localStore,
      failoversFrom: (from, after, limit) => failoversFrom(sql, config.region, from, after, limit),
      auth,
      admin: createAdminDeps({ config, sql, jwt: auth }),
      registry,
      registrationLapsed: () => lapse.active(),
      membership,
      log,
      metrics,
      sendLimiter: new RateLimiter(config.limits.sendsPerSecond, config.limits.sendBurst),
      admitSend() {
        if (backlog.overloaded) {
          metrics.sendsRefusedBacklog.inc();
          throw new AppError(
            'unavailable',
            'the event stream is behind (outbox backlog or replication slot over its bound); retry with the same idempotency key',
            { retryAfterS: 1 },
          );
        }
      },
      onEventCommitted: () => pipeline.onEventCommitted(),
      newTraceId: traceIdGenerator(),
      push: {
        store: createPushStore({ sql, queryTimeoutMs: config.timeouts.dbQueryMs }),
        vapidPublicKey: opts.vapidPublicKey === undefined ? (config.push.vapid?.publicKey ?? null) : opts.vapidPublicKey,
      },
      cluster: pipeline.cluster,
      ...(forwarder ? { regionTyping: (conversationId: string, userId: string) => forwarder.typing(conversationId, userId) } : {}),
      // The route itself takes only the regions' secret (none set: every call is refused).
      typingFromRegion: (conversationId: string, userId: string) =>
        fanOutTyping({ store: localStore, membership, registry, cluster: pipeline.cluster }, conversationId, userId, false),
      // Like typing, the routes take only the regions' secret; they answer from this region's own feed.
      presenceFromRegion: {
        notice: (n: PresenceNotice) => presenceFromOtherRegion(regionFeed, n),
        online: (userIds: readonly string[]) => regionFeed.online(userIds),
      },
      presence,
      // The database, and in a cluster this node's own delivery consumer. Not Redis: every node
      // shares it and has a degraded path without it (broadcast); failing readiness on it would
      // take every node out of the load balancer at once.
      ready: async () => {
        try {
          await withTimeout(store.ping(), 1000, 'readiness ping');
        } catch {
          return false;
        }
        return pipeline.cluster?.consumerStatus?.().running ?? true;
      },
    },
    config.host,
    config.port,
  );
  log.info(
    { host: config.host, port: server.port, mode: config.mode, kafka: Boolean(config.kafkaBrokers), dev_auth: config.devAuth },
    'realchat listening',
  );

  let closing: Promise<void> | null = null;
  return {
    port: server.port,
    internalPort: server.internalPort,
    settled: () => pipeline.settled(),
    close() {
      closing ??= (async () => {
        server.drain({ retryAfterMs: 2000 });
        // Bounded wait for the close handshakes, so delivery positions are recorded before the database closes.
        const deadline = Date.now() + config.timeouts.drainMs;
        while (registry.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
        backlog.stop();
        await presence.stop();
        await pipeline.stop();
        await server.close();
      })();
      return closing;
    },
  };
}
