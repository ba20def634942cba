/**
 * The only module that reads the environment. Everything else receives a frozen Config.
 * Field names carry their units.
 */
import type { BreakerSettings } from './breaker.js';

export interface Config {
  readonly mode: 'embedded' | 'postgres';
  readonly port: number;
  readonly host: string;
  /** null: embedded PGlite in dataDir. */
  readonly databaseUrl: string | null;
  readonly dataDir: string;
  readonly jwt: JwtConfig;
  /**
   * POST /v1/dev/token mints a token for anyone. On by default only on the embedded default bound
   * to loopback with no real key configured; anywhere else it must be asked for explicitly.
   */
  readonly devAuth: boolean;
  /** What the public port accepts from browsers and proxies (docs/architecture.md, bad input and abuse). */
  readonly edge: EdgeConfig;
  readonly nodeId: string;
  /**
   * This deployment's region (REALCHAT_REGION, default `default`): the home region shown for the
   * conversations homed here, and the name other regions know it by (docs/multi-region.md).
   */
  readonly region: string;
  /**
   * The mirror applier (npm run mirror): the region whose mirrored stream it applies here
   * (REALCHAT_MIRROR_SOURCE); null when this process is no mirror applier.
   */
  readonly mirrorSource: string | null;
  /** The other regions this one forwards writes to (docs/multi-region.md). */
  readonly regions: RegionsConfig;
  readonly logLevel: string;
  /**
   * table: outbox rows stay until the TS relay publishes and deletes them. wal: rows are deleted in
   * the transaction that wrote them; Debezium reads them from the WAL (REALCHAT_OUTBOX_MODE=wal).
   */
  readonly outboxMode: 'table' | 'wal';
  /** wal mode: replication slot read by Debezium, and the retained-WAL bound past which sends are refused. */
  readonly slotName: string;
  readonly maxSlotLagBytes: number;
  /** null: the in-process bus (single node). Set: relay, delivery and gateways talk through Kafka. */
  readonly kafkaBrokers: string[] | null;
  /**
   * REALCHAT_ADDRESS_MAP: `host:port=host:port` pairs. Kafka brokers and Redis Sentinel hand out
   * addresses of their own; behind a NAT, a port forward or a proxy a role must connect elsewhere.
   * Applied to every connection to a Kafka broker and to every Redis primary, replica and
   * sentinel that Sentinel names. Empty: connect as told.
   */
  readonly addressMap: ReadonlyMap<string, { host: string; port: number }>;
  readonly kafka: KafkaTopics;
  /** null: no presence registry (deliveries are broadcast to every gateway node). */
  readonly redis: RedisConfig | null;
  readonly presence: PresenceConfig;
  /**
   * Circuit breakers per dependency (common/breaker.ts). redis: the presence registry (delivery
   * workers and gateways broadcast while it is open); postgres: request-path database work on a
   * gateway (refused with `unavailable` at once while it is open).
   */
  readonly breakers: { readonly redis: BreakerSettings; readonly postgres: BreakerSettings };
  /** Relay and delivery serve /metrics and /healthz here (0 = ephemeral). */
  readonly metricsPort: number;
  readonly limits: Limits;
  readonly timeouts: Timeouts;
  readonly tracing: TracingConfig;
  /** Web Push notifications (the notifier role, gateway push routes); docs/operations.md, "Web Push". */
  readonly push: PushConfig;
  /** API keys, admin routes and webhooks (docs/webhooks.md, docs/protocol.md "API keys"). */
  readonly webhooks: WebhookConfig;
}

export interface WebhookConfig {
  /** REALCHAT_ADMIN_TOKEN: the operator's secret with every admin scope; null: the admin routes are off. */
  readonly adminToken: string | null;
  /** Webhook URLs may resolve to loopback, private and other non-public addresses (tests, closed networks). */
  readonly allowPrivate: boolean;
  /** One delivery attempt (connect, send, response headers and body) has this long. */
  readonly requestTimeoutMs: number;
  readonly dnsTimeoutMs: number;
  /** Waits before each retry; after the last one fails the delivery is dead-lettered. */
  readonly retryScheduleMs: readonly number[];
  /** Deliveries posted at once per dispatcher. */
  readonly concurrency: number;
  /** Pending deliveries per webhook; events beyond are logged as dead (`backlog_full`) and counted, replayable. */
  readonly maxPendingPerWebhook: number;
  /** The sender looks for due retries this often (new events wake it at once in-process). */
  readonly pollMs: number;
  /** The dispatcher's consumer group on the event topic (distributed). */
  readonly groupId: string;
}

/** Web Push (RFC 8030/8291/8292): the notifier role and the gateway's push routes. */
export interface PushConfig {
  /**
   * VAPID key pair (base64url: a P-256 public point, 65 bytes, and its private scalar, 32 bytes).
   * null: web push is off (the embedded default generates a pair in dataDir, standalone/secrets.ts).
   */
  readonly vapid: { readonly publicKey: string; readonly privateKey: string } | null;
  /** The VAPID `sub` claim: a mailto: or https: URL push services can reach the operator at. */
  readonly vapidSubject: string;
  /** A member with a live connection is notified only if the message is still unread this long after it was written. */
  readonly unreadDelayMs: number;
  /** Attempts per notification before it is dead-lettered (push service 5xx, 429, timeouts). */
  readonly maxAttempts: number;
  readonly retryBaseMs: number;
  readonly retryMaxMs: number;
  /** Deadline of one request to a push service. */
  readonly requestTimeoutMs: number;
  /** The TTL header: how long a push service keeps a notification for a device that is offline. */
  readonly ttlS: number;
  /** Requests to push services in flight per notifier. */
  readonly concurrency: number;
  /** The notifier looks for due notifications this often (also woken by new events). */
  readonly pollMs: number;
  /** A notifier holds a claimed notification this long; one that died meanwhile leaves it to another after. */
  readonly leaseMs: number;
  /** Pending notifications beyond which new ones are dropped (counted in realchat_push_dropped_total). */
  readonly maxPending: number;
  /** Conversations with more members get no notifications (large rooms). */
  readonly maxRoomMembers: number;
  readonly maxSubscriptionsPerUser: number;
  /** Tests only: accept http://127.0.0.1 / [::1] / localhost endpoints, and push to private addresses (a local push service). */
  readonly allowHttpLoopback: boolean;
  /** The notifier's consumer group on the event topic (distributed). */
  readonly groupId: string;
}

const B64URL = /^[A-Za-z0-9_-]+$/;

function pushFrom(env: Env, largeRoomMembers: number): PushConfig {
  const pub = env.REALCHAT_VAPID_PUBLIC_KEY || null;
  const priv = env.REALCHAT_VAPID_PRIVATE_KEY || null;
  if ((pub === null) !== (priv === null))
    throw new ConfigError('set both REALCHAT_VAPID_PUBLIC_KEY and REALCHAT_VAPID_PRIVATE_KEY, or neither (web push off)');
  if (pub !== null && (!B64URL.test(pub) || Buffer.from(pub, 'base64url').length !== 65 || Buffer.from(pub, 'base64url')[0] !== 4))
    throw new ConfigError(
      'REALCHAT_VAPID_PUBLIC_KEY must be a base64url P-256 public key (65 bytes, uncompressed), as `npx web-push generate-vapid-keys` prints',
    );
  if (priv !== null && (!B64URL.test(priv) || Buffer.from(priv, 'base64url').length !== 32))
    throw new ConfigError('REALCHAT_VAPID_PRIVATE_KEY must be a base64url P-256 private key (32 bytes)');
  const subject = env.REALCHAT_VAPID_SUBJECT || 'mailto:realchat@example.com';
  if (!/^(mailto:.+|https:\/\/.+)$/.test(subject))
    throw new ConfigError(`REALCHAT_VAPID_SUBJECT must be a mailto: or https: URL, got "${subject}"`);
  const requestTimeoutMs = int(env, 'REALCHAT_PUSH_TIMEOUT_MS', 10_000, 100, 120_000);
  const leaseMs = int(env, 'REALCHAT_PUSH_LEASE_MS', 60_000, 1000, 3_600_000);
  if (leaseMs <= requestTimeoutMs) throw new ConfigError('REALCHAT_PUSH_LEASE_MS must be longer than REALCHAT_PUSH_TIMEOUT_MS');
  return {
    vapid: pub !== null && priv !== null ? { publicKey: pub, privateKey: priv } : null,
    vapidSubject: subject,
    unreadDelayMs: int(env, 'REALCHAT_PUSH_UNREAD_DELAY_MS', 60_000, 100, 7 * 24 * 3600_000),
    maxAttempts: int(env, 'REALCHAT_PUSH_MAX_ATTEMPTS', 6, 1, 100),
    retryBaseMs: int(env, 'REALCHAT_PUSH_RETRY_BASE_MS', 1000, 1, 3_600_000),
    retryMaxMs: int(env, 'REALCHAT_PUSH_RETRY_MAX_MS', 5 * 60_000, 1, 24 * 3600_000),
    requestTimeoutMs,
    ttlS: int(env, 'REALCHAT_PUSH_TTL_S', 24 * 3600, 0, 28 * 24 * 3600),
    concurrency: int(env, 'REALCHAT_PUSH_CONCURRENCY', 16, 1, 1000),
    pollMs: int(env, 'REALCHAT_PUSH_POLL_MS', 500, 10, 60_000),
    leaseMs,
    maxPending: int(env, 'REALCHAT_PUSH_MAX_PENDING', 100_000, 1, 100_000_000),
    maxRoomMembers: int(env, 'REALCHAT_PUSH_MAX_ROOM_MEMBERS', largeRoomMembers, 2, 10_000_000),
    maxSubscriptionsPerUser: int(env, 'REALCHAT_PUSH_MAX_SUBSCRIPTIONS_PER_USER', 10, 1, 1000),
    allowHttpLoopback: bool(env, 'REALCHAT_PUSH_ALLOW_HTTP_LOOPBACK', false),
    groupId: env.REALCHAT_NOTIFIER_GROUP || 'realchat-notifier',
  };
}

/** OpenTelemetry tracing (common/tracing.ts); the standard OTEL_* variables where one exists. */
export interface TracingConfig {
  /** none: off (no provider, no spans); otlp: OTLP/HTTP (JSON) to `endpoint`. */
  readonly exporter: 'none' | 'otlp';
  /** The traces URL (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, or OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces). */
  readonly endpoint: string;
  /** Share of new traces sampled; a span with a parent follows its parent's decision. */
  readonly sampleRatio: number;
  /** OTEL_SERVICE_NAME; null: realchat-<role>. */
  readonly serviceName: string | null;
  /** OTEL_BSP_SCHEDULE_DELAY; null: the SDK default (5 s). */
  readonly exportDelayMs: number | null;
  readonly exportTimeoutMs: number;
}

export interface JwtConfig {
  /** HS256. null: embedded mode generates one and keeps it in dataDir (see gateway/secrets.ts). */
  readonly secret: string | null;
  /** RS256/ES256 public key (PEM), for tokens signed by an identity provider. */
  readonly publicKeyPem: string | null;
  /** A JWKS document: an http(s) URL (fetched with a timeout, cached) or a file path. */
  readonly jwks: string | null;
  /** When set, tokens must carry exactly this `iss` / an `aud` containing this value. */
  readonly issuer: string | null;
  readonly audience: string | null;
  /** Tokens whose `exp` lies further in the future than this are refused. */
  readonly maxTtlS: number;
  readonly clockToleranceS: number;
}

export interface EdgeConfig {
  /** Browser origins allowed besides the server's own (exact `scheme://host[:port]`). */
  readonly allowedOrigins: readonly string[];
  /**
   * Host names (without port) accepted in the Host header besides IP literals and `localhost`;
   * null: any (a non-loopback bind with REALCHAT_PUBLIC_HOSTS unset, where the names are unknown).
   */
  readonly allowedHosts: readonly string[] | null;
  /** Peers whose X-Forwarded-For is believed (reverse proxies): the client address is its last entry. */
  readonly trustedProxies: readonly string[];
  /** Operators' port (/metrics, /healthz, /readyz); null: /metrics stays on the public port. */
  readonly internalPort: number | null;
  readonly internalHost: string;
}

export interface RedisConfig {
  readonly url: string | null;
  readonly sentinels: Array<{ host: string; port: number }> | null;
  readonly sentinelName: string;
  readonly commandTimeoutMs: number;
}

export interface PresenceConfig {
  readonly heartbeatMs: number;
  readonly ttlMs: number;
  /**
   * How long a delivery worker reuses its list of live nodes. A gateway back in the registry waits
   * this long before its catch-up reads, so nothing a stale list routed past it is missed.
   */
  readonly liveCacheMs: number;
  /** Partitions of each gateway node's delivery topic. */
  readonly nodeTopicPartitions: number;
  /** Node topics of nodes dead this long are deleted by delivery workers. */
  readonly deadNodeTopicTtlMs: number;
  /** Event-loop delay above which a gateway pauses consuming deliveries. */
  readonly pauseAboveLoopDelayMs: number;
  /** Presence for clients: a user offline this long (no connection anywhere) is reported offline; a reconnect within it is no change. */
  readonly clientGraceMs: number;
  /** Presence for clients: users one connection may watch at once. */
  readonly maxWatchedPerConnection: number;
  /** Presence for clients: each node re-reads the status of the users it watches this often (lost notices, killed nodes). */
  readonly clientRecheckMs: number;
}

function hostPorts(raw: string, name: string): Array<{ host: string; port: number }> {
  return raw.split(',').map((hp) => {
    const [host, port] = hp.trim().split(':');
    const n = Number(port);
    if (!host || !Number.isInteger(n) || n < 1 || n > 65535)
      throw new ConfigError(`${name} must be host:port[,host:port...], got "${raw}"`);
    return { host, port: n };
  });
}

function addressMapFrom(raw: string | undefined): ReadonlyMap<string, { host: string; port: number }> {
  const out = new Map<string, { host: string; port: number }>();
  for (const pair of (raw ?? '')
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean)) {
    const [from, to, extra] = pair.split('=');
    if (!from || !to || extra !== undefined) throw new ConfigError(`REALCHAT_ADDRESS_MAP must be host:port=host:port[,...], got "${raw}"`);
    const [a] = hostPorts(from, 'REALCHAT_ADDRESS_MAP');
    const [b] = hostPorts(to, 'REALCHAT_ADDRESS_MAP');
    out.set(`${a!.host}:${a!.port}`, b!);
  }
  return out;
}

/** REALCHAT_BREAKER_<DEP>_FAILURES (within _WINDOW_MS), _OPEN_MS, _PROBES (calls let through half-open). */
function breakerFrom(env: Env, dep: 'REDIS' | 'POSTGRES', dflt: BreakerSettings): BreakerSettings {
  return {
    failureThreshold: int(env, `REALCHAT_BREAKER_${dep}_FAILURES`, dflt.failureThreshold, 1, 1_000_000),
    windowMs: int(env, `REALCHAT_BREAKER_${dep}_WINDOW_MS`, dflt.windowMs, 10, 3_600_000),
    openMs: int(env, `REALCHAT_BREAKER_${dep}_OPEN_MS`, dflt.openMs, 10, 600_000),
    halfOpenProbes: int(env, `REALCHAT_BREAKER_${dep}_PROBES`, dflt.halfOpenProbes, 1, 1_000_000),
  };
}

export interface KafkaTopics {
  readonly eventsTopic: string;
  readonly deliveriesTopic: string;
  readonly deadLetterTopic: string;
  readonly partitions: number;
  readonly deliveryGroupId: string;
  readonly requestTimeoutMs: number;
  /** Consumer fetch batching (delivery workers, gateway nodes): see common/kafka/consumer.ts. */
  readonly fetchMinBytes: number;
  readonly fetchMaxWaitMs: number;
  /**
   * Fetch batching of the consumers nobody waits on in real time (the Web Push notifier, the
   * webhook dispatcher): they trade up to `backgroundFetchMaxWaitMs` of latency for far fewer,
   * larger fetches at light load (perf/README.md, "Twelfth round").
   */
  readonly backgroundFetchMinBytes: number;
  readonly backgroundFetchMaxWaitMs: number;
  /** Producers wait this long for more records before a request (0: only what piles up meanwhile). */
  readonly producerLingerMs: number;
  /**
   * How often a consumer commits its progress (REALCHAT_KAFKA_COMMIT_INTERVAL_MS; 0: after every
   * batch, in series with the next fetch). A member that stops commits what it handled; what a
   * crashed one leaves uncommitted is read again by the next owner (deduplicated by sequence).
   */
  readonly commitIntervalMs: number;
  /** What the Kafka client itself logs (REALCHAT_KAFKA_LOG_LEVEL): `debug` shows every request and its broker, for an incident. */
  readonly clientLogLevel: KafkaLogLevel;
}

export type KafkaLogLevel = 'error' | 'warn' | 'info' | 'debug';

export interface Limits {
  readonly maxPayloadBytes: number;
  /** Frames above this are refused by uWS itself (close 1009); between payload and frame max we answer payload_too_large. */
  readonly maxFrameBytes: number;
  readonly maxHttpBodyBytes: number;
  /** Bytes queued in a socket before it is closed as a slow consumer. */
  readonly maxConnectionBufferBytes: number;
  /** A socket's frames of one event-loop turn wait for one write until they hold this many bytes (0: each frame written at once). */
  readonly wsCoalesceBytes: number;
  /**
   * A live message that arrives ahead of a missing sequence waits this long for it to arrive live
   * before the connection fills the gap from the database (0: at once), at most `reorderMaxHeld`
   * per connection and conversation (gateway/connection.ts).
   */
  readonly reorderWindowMs: number;
  readonly reorderMaxHeld: number;
  readonly maxRoomMembers: number;
  /** Past this many members a conversation is a large room: delivered by room interest, not member list. */
  readonly largeRoomMembers: number;
  readonly maxMembersPerRequest: number;
  readonly maxPageMessages: number;
  readonly maxConversationsListed: number;
  readonly maxResumeConversations: number;
  readonly framesPerSecond: number;
  readonly frameBurst: number;
  readonly sendsPerSecond: number;
  readonly sendBurst: number;
  readonly membershipCacheEntries: number;
  /** Unpublished outbox rows beyond which sends are refused with `unavailable`. */
  readonly maxOutboxBacklog: number;
  readonly deliveryMaxRetries: number;
  /** Outbox rows per relay batch (one produce request). */
  readonly relayBatch: number;
  /** Event-topic partitions a delivery worker handles at once. */
  readonly deliveryConcurrency: number;
  /** Request-path database operations allowed to wait for a connection; beyond: `unavailable`. */
  readonly maxQueuedDbOperations: number;
  /** PostgreSQL connections per gateway (embedded PGlite: always 1). */
  readonly dbPoolSize: number;
  /** Group commit: sends per batch, and batches written at once (default: half the pool). */
  readonly sendBatchMax: number;
  readonly sendBatchWriters: number;
  /** Sends waiting at which a batch beyond the first in flight starts (1: any free writer at once). */
  readonly sendBatchExtraWriterAt: number;
  /** WebSocket connections one user may hold on one node / one client address may hold on one node. */
  readonly maxConnectionsPerUser: number;
  readonly maxConnectionsPerAddress: number;
  /** A page of messages (REST, sync, catch-up reads) stops at this many payload bytes; has_more tells the rest. */
  readonly maxPageBytes: number;
  /** Longest number in a payload, in characters of its plain decimal form (as PostgreSQL prints jsonb). */
  readonly maxNumberChars: number;
  /** Per-minute token buckets: conversations created and member-add requests per user, dev tokens per address. */
  readonly conversationCreatesPerMin: number;
  readonly memberAddsPerMin: number;
  readonly devTokensPerMin: number;
  /** REST response bytes a node holds for clients that read slowly; beyond, requests get `unavailable`. */
  readonly maxPendingResponseBytes: number;
}

export interface Timeouts {
  readonly helloMs: number;
  readonly heartbeatIntervalMs: number;
  /** uWS idle timeout: a socket that sends nothing (not even a pong to our pings) for this long is closed. */
  readonly idleS: number;
  readonly dbQueryMs: number;
  readonly dbConnectS: number;
  readonly drainMs: number;
  readonly relayPollMs: number;
  /**
   * The relay waits this long after a wake-up before it polls (bigger batches, fewer requests).
   * 0 by default: under load the relay polls again at once after a publish anyway, and at light
   * load a linger was latency on every message (perf/README.md, "Twelfth round").
   */
  readonly relayLingerMs: number;
  /**
   * Relay leadership (relay/lease.ts): the lease lasts this long on the database's clock; the leader
   * renews it every renewMs and stops publishing marginMs before it runs out by its own clock; a
   * standby tries to take it over every renewMs.
   */
  readonly relayLeaseTtlMs: number;
  readonly relayLeaseRenewMs: number;
  readonly relayLeaseMarginMs: number;
  /** A REST response that makes no write progress this long is aborted (a client that never reads). */
  readonly responseStallMs: number;
  /** A WebSocket whose buffer stays above its high-water mark this long is closed as slow (4002). */
  readonly slowReaderMs: number;
  /** Embedded default only: between maintenance rounds of PGlite, which neither vacuums nor checkpoints by itself (0: never; standalone/embedded-maintenance.ts). */
  readonly embeddedMaintenanceMs: number;
}

type Env = Record<string, string | undefined>;

export class ConfigError extends Error {
  override name = 'ConfigError';
}

function int(env: Env, name: string, dflt: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new ConfigError(`${name} must be an integer between ${min} and ${max}, got "${raw}"`);
  }
  return n;
}

function bool(env: Env, name: string, dflt: boolean): boolean {
  const raw = env[name];
  if (raw === undefined || raw === '') return dflt;
  if (['1', 'true', 'yes', 'on'].includes(raw.toLowerCase())) return true;
  if (['0', 'false', 'no', 'off'].includes(raw.toLowerCase())) return false;
  throw new ConfigError(`${name} must be true or false, got "${raw}"`);
}

function list(env: Env, name: string): string[] {
  return (env[name] ?? '')
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
}

const LOOPBACK_BIND = /^(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|::1|localhost)$/;

export function isLoopbackHost(host: string): boolean {
  return LOOPBACK_BIND.test(host);
}

function originsFrom(env: Env): string[] {
  return list(env, 'REALCHAT_ALLOWED_ORIGINS').map((o) => {
    let u: URL;
    try {
      u = new URL(o);
    } catch {
      throw new ConfigError(`REALCHAT_ALLOWED_ORIGINS entries must be origins like https://chat.example.com, got "${o}"`);
    }
    if ((u.protocol !== 'http:' && u.protocol !== 'https:') || u.origin !== o.replace(/\/$/, '')) {
      throw new ConfigError(`REALCHAT_ALLOWED_ORIGINS entries must be exact origins (scheme://host[:port], no path), got "${o}"`);
    }
    return u.origin;
  });
}

function kafkaLogLevelFrom(raw: string | undefined): KafkaLogLevel {
  if (!raw) return 'warn';
  if (raw === 'error' || raw === 'warn' || raw === 'info' || raw === 'debug') return raw;
  throw new ConfigError(`REALCHAT_KAFKA_LOG_LEVEL must be error, warn, info or debug, got "${raw}"`);
}

function outboxModeFrom(raw: string | undefined): 'table' | 'wal' {
  if (!raw || raw === 'table') return 'table';
  if (raw === 'wal') return 'wal';
  throw new ConfigError(`REALCHAT_OUTBOX_MODE must be table or wal, got "${raw}"`);
}

export interface RegionsConfig {
  /** REALCHAT_REGION_PEERS `name=http://host:port,…`: a gateway (or its load balancer) of each other region. */
  readonly peers: ReadonlyMap<string, string>;
  /** REALCHAT_REGION_SECRET (at least 32 bytes): what regions show each other on forwarded writes; null: no forwarding either way. */
  readonly secret: string | null;
  /** A forwarded write not answered within this is refused `unavailable` (REALCHAT_REGION_FORWARD_TIMEOUT_MS). */
  readonly forwardTimeoutMs: number;
  /**
   * REALCHAT_REGION_FAILOVER_AFTER_MS: the mirror applier takes over its source region's
   * conversations once that region's gateway has not answered for this long; 0 (default): never
   * on its own (npm run region -- failover).
   */
  readonly failoverAfterMs: number;
}

function regionsFrom(env: Env, self: string): RegionsConfig {
  const peers = new Map<string, string>();
  for (const entry of list(env, 'REALCHAT_REGION_PEERS')) {
    const eq = entry.indexOf('=');
    const name = regionFrom(entry.slice(0, Math.max(eq, 0)), 'a region name in REALCHAT_REGION_PEERS');
    const url = entry.slice(eq + 1);
    if (eq < 1 || !/^https?:\/\/[^\s/]+$/.test(url))
      throw new ConfigError(`REALCHAT_REGION_PEERS entries are name=http(s)://host:port, got "${entry}"`);
    if (name === self) throw new ConfigError(`REALCHAT_REGION_PEERS names this region ("${self}")`);
    peers.set(name, url);
  }
  const secret = env.REALCHAT_REGION_SECRET || null;
  if (secret !== null && Buffer.byteLength(secret) < 32) throw new ConfigError('REALCHAT_REGION_SECRET must be at least 32 bytes');
  if (peers.size > 0 && secret === null) throw new ConfigError('REALCHAT_REGION_PEERS needs REALCHAT_REGION_SECRET');
  return {
    peers,
    secret,
    forwardTimeoutMs: int(env, 'REALCHAT_REGION_FORWARD_TIMEOUT_MS', 2000, 50, 60_000),
    failoverAfterMs: int(env, 'REALCHAT_REGION_FAILOVER_AFTER_MS', 0, 0, 24 * 3600_000),
  };
}

/** A region names Kafka topics (`<region>.realchat.events.v1`) and appears in the API. */
export function regionFrom(raw: string | undefined, name = 'REALCHAT_REGION'): string {
  if (!raw) return 'default';
  if (!/^[a-z][a-z0-9-]{0,31}$/.test(raw)) throw new ConfigError(`${name} must be 1-32 of [a-z0-9-], starting with a letter, got "${raw}"`);
  return raw;
}

function nodeIdFrom(raw: string | undefined): string {
  if (!raw) return `node-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  // It names a Kafka topic (realchat.node.<id>) and Redis keys.
  if (!/^[A-Za-z0-9_-]{1,100}$/.test(raw)) throw new ConfigError(`REALCHAT_NODE_ID must be 1-100 of [A-Za-z0-9_-], got "${raw}"`);
  return raw;
}

function relayLeaseFrom(env: Env): Pick<Timeouts, 'relayLeaseTtlMs' | 'relayLeaseRenewMs' | 'relayLeaseMarginMs'> {
  const ttl = int(env, 'REALCHAT_RELAY_LEASE_TTL_MS', 5000, 300, 600_000);
  const renew = int(env, 'REALCHAT_RELAY_LEASE_RENEW_MS', Math.round(ttl / 5), 50, 600_000);
  const margin = int(env, 'REALCHAT_RELAY_LEASE_MARGIN_MS', Math.round(ttl / 5), 10, 600_000);
  // At least one renewal must fit before the leader's own deadline, or leadership would flap.
  if (renew + margin >= ttl)
    throw new ConfigError(
      'REALCHAT_RELAY_LEASE_RENEW_MS + REALCHAT_RELAY_LEASE_MARGIN_MS must be below REALCHAT_RELAY_LEASE_TTL_MS (e.g. a fifth of it each)',
    );
  return { relayLeaseTtlMs: ttl, relayLeaseRenewMs: renew, relayLeaseMarginMs: margin };
}

/** 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 2 h, 4 h, 8 h: about 16 h of retries before a dead letter. */
const WEBHOOK_RETRY_SCHEDULE_MS = [5_000, 30_000, 120_000, 600_000, 1_800_000, 3_600_000, 7_200_000, 14_400_000, 28_800_000];

function webhooksFrom(env: Env): WebhookConfig {
  const adminToken = env.REALCHAT_ADMIN_TOKEN || null;
  if (adminToken !== null && Buffer.byteLength(adminToken) < 32)
    throw new ConfigError('REALCHAT_ADMIN_TOKEN must be at least 32 bytes (e.g. openssl rand -hex 32)');
  let retryScheduleMs = WEBHOOK_RETRY_SCHEDULE_MS;
  if (env.REALCHAT_WEBHOOK_RETRY_SCHEDULE_MS) {
    retryScheduleMs = env.REALCHAT_WEBHOOK_RETRY_SCHEDULE_MS.split(',').map((x) => Number(x.trim()));
    if (retryScheduleMs.length > 100 || retryScheduleMs.some((n) => !Number.isInteger(n) || n < 0 || n > 7 * 24 * 3600_000))
      throw new ConfigError(
        `REALCHAT_WEBHOOK_RETRY_SCHEDULE_MS must be up to 100 comma-separated waits in ms (0 to a week), got "${env.REALCHAT_WEBHOOK_RETRY_SCHEDULE_MS}"`,
      );
  }
  return {
    adminToken,
    allowPrivate: bool(env, 'REALCHAT_WEBHOOK_ALLOW_PRIVATE', false),
    requestTimeoutMs: int(env, 'REALCHAT_WEBHOOK_TIMEOUT_MS', 10_000, 100, 120_000),
    dnsTimeoutMs: int(env, 'REALCHAT_WEBHOOK_DNS_TIMEOUT_MS', 2000, 50, 60_000),
    retryScheduleMs,
    concurrency: int(env, 'REALCHAT_WEBHOOK_CONCURRENCY', 16, 1, 1000),
    maxPendingPerWebhook: int(env, 'REALCHAT_WEBHOOK_MAX_PENDING', 100_000, 1, 100_000_000),
    pollMs: int(env, 'REALCHAT_WEBHOOK_POLL_MS', 1000, 10, 600_000),
    groupId: env.REALCHAT_WEBHOOK_GROUP || 'realchat-webhooks',
  };
}

function tracingFrom(env: Env): TracingConfig {
  const base = (env.OTEL_EXPORTER_OTLP_ENDPOINT || 'http://localhost:4318').replace(/\/+$/, '');
  const endpoint = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || `${base}/v1/traces`;
  // Off unless asked for: REALCHAT_TRACING or OTEL_TRACES_EXPORTER, or an OTLP endpoint configured.
  const named = (env.REALCHAT_TRACING || env.OTEL_TRACES_EXPORTER || '').toLowerCase();
  const endpointSet = Boolean(env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || env.OTEL_EXPORTER_OTLP_ENDPOINT);
  let exporter: TracingConfig['exporter'];
  if (bool(env, 'OTEL_SDK_DISABLED', false) || named === 'none') exporter = 'none';
  else if (named === 'otlp' || (named === '' && endpointSet)) exporter = 'otlp';
  else if (named === '') exporter = 'none';
  else throw new ConfigError(`REALCHAT_TRACING / OTEL_TRACES_EXPORTER must be otlp or none, got "${named}"`);
  try {
    new URL(endpoint);
  } catch {
    throw new ConfigError(`the OTLP traces endpoint must be a URL, got "${endpoint}"`);
  }
  const rawRatio = env.REALCHAT_TRACE_SAMPLE_RATIO || env.OTEL_TRACES_SAMPLER_ARG || '1';
  const sampleRatio = Number(rawRatio);
  if (!Number.isFinite(sampleRatio) || sampleRatio < 0 || sampleRatio > 1)
    throw new ConfigError(`REALCHAT_TRACE_SAMPLE_RATIO must be a number from 0 to 1, got "${rawRatio}"`);
  return {
    exporter,
    endpoint,
    sampleRatio,
    serviceName: env.OTEL_SERVICE_NAME || null,
    exportDelayMs: env.OTEL_BSP_SCHEDULE_DELAY ? int(env, 'OTEL_BSP_SCHEDULE_DELAY', 5000, 1, 600_000) : null,
    exportTimeoutMs: int(env, 'OTEL_EXPORTER_OTLP_TIMEOUT', 10_000, 100, 600_000),
  };
}

export function loadConfig(env: Env = process.env, overrides: Partial<Config> = {}): Config {
  const databaseUrl = env.DATABASE_URL ? env.DATABASE_URL : null;
  const mode = databaseUrl ? 'postgres' : 'embedded';
  const jwtSecret = env.REALCHAT_JWT_SECRET ? env.REALCHAT_JWT_SECRET : null;
  if (jwtSecret !== null && Buffer.byteLength(jwtSecret) < 32) {
    throw new ConfigError('REALCHAT_JWT_SECRET must be at least 32 bytes for HS256');
  }
  const publicKeyPem = env.REALCHAT_JWT_PUBLIC_KEY ? env.REALCHAT_JWT_PUBLIC_KEY.replace(/\\n/g, '\n') : null;
  if (publicKeyPem !== null && !/-----BEGIN PUBLIC KEY-----/.test(publicKeyPem)) {
    throw new ConfigError('REALCHAT_JWT_PUBLIC_KEY must be a PEM public key (-----BEGIN PUBLIC KEY-----, SPKI)');
  }
  const jwks = env.REALCHAT_JWT_JWKS || null;
  const host = env.HOST || (mode === 'embedded' ? '127.0.0.1' : '0.0.0.0');
  const realKey = jwtSecret !== null || publicKeyPem !== null || jwks !== null;
  // Dev auth lets anyone be anyone: only on the embedded default on loopback unless asked for.
  const devAuthExplicit = env.REALCHAT_DEV_AUTH !== undefined && env.REALCHAT_DEV_AUTH !== '';
  const devAuth = bool(env, 'REALCHAT_DEV_AUTH', mode === 'embedded' && !realKey && isLoopbackHost(host));
  if (mode === 'embedded' && !realKey && !devAuthExplicit && !isLoopbackHost(host)) {
    throw new ConfigError(
      `HOST=${host} exposes the embedded default beyond this machine. Configure a real key (REALCHAT_JWT_SECRET, REALCHAT_JWT_PUBLIC_KEY or REALCHAT_JWT_JWKS) and set REALCHAT_DEV_AUTH=0, or set REALCHAT_DEV_AUTH=1 to expose dev auth (anyone can then act as any user)`,
    );
  }
  const publicHosts = list(env, 'REALCHAT_PUBLIC_HOSTS').map((h) => h.toLowerCase());
  const maxTtlS = int(env, 'REALCHAT_JWT_MAX_TTL_S', 24 * 3600, 60, 366 * 24 * 3600);
  const maxPayloadBytes = int(env, 'REALCHAT_MAX_PAYLOAD_BYTES', 64 * 1024, 1024, 1024 * 1024);
  const maxConnectionBufferBytes = int(env, 'REALCHAT_MAX_CONNECTION_BUFFER_BYTES', 1024 * 1024, 64 * 1024, 64 * 1024 * 1024);
  if (maxConnectionBufferBytes < 2 * (maxPayloadBytes + 4096)) {
    throw new ConfigError(
      'REALCHAT_MAX_CONNECTION_BUFFER_BYTES must hold at least two maximal message frames (2 x (REALCHAT_MAX_PAYLOAD_BYTES + 4096))',
    );
  }
  // One maximal message must always fit a page, or has_more could never make progress.
  const maxPageBytes = int(env, 'REALCHAT_MAX_PAGE_BYTES', 1024 * 1024, 64 * 1024, 64 * 1024 * 1024);
  if (maxPageBytes < 2 * maxPayloadBytes)
    throw new ConfigError('REALCHAT_MAX_PAGE_BYTES must be at least twice REALCHAT_MAX_PAYLOAD_BYTES');
  const dbPoolSize = int(env, 'REALCHAT_DB_POOL_SIZE', 10, 1, 1000);
  const cfg: Config = {
    mode,
    port: int(env, 'PORT', 8080, 0, 65535),
    // Embedded mode serves dev auth: never expose it on other interfaces by accident.
    host,
    databaseUrl,
    dataDir: env.REALCHAT_DATA_DIR || './data',
    jwt: {
      secret: jwtSecret,
      publicKeyPem,
      jwks,
      issuer: env.REALCHAT_JWT_ISSUER || null,
      audience: env.REALCHAT_JWT_AUDIENCE || null,
      maxTtlS,
      clockToleranceS: int(env, 'REALCHAT_JWT_CLOCK_TOLERANCE_S', 30, 0, 600),
    },
    devAuth,
    edge: {
      allowedOrigins: originsFrom(env),
      allowedHosts: publicHosts.length > 0 || isLoopbackHost(host) ? publicHosts : null,
      trustedProxies: list(env, 'REALCHAT_TRUSTED_PROXIES'),
      internalPort: env.REALCHAT_INTERNAL_PORT ? int(env, 'REALCHAT_INTERNAL_PORT', 0, 0, 65535) : null,
      internalHost: env.REALCHAT_INTERNAL_HOST || '127.0.0.1',
    },
    nodeId: nodeIdFrom(env.REALCHAT_NODE_ID),
    region: regionFrom(env.REALCHAT_REGION),
    regions: regionsFrom(env, regionFrom(env.REALCHAT_REGION)),
    mirrorSource: env.REALCHAT_MIRROR_SOURCE ? regionFrom(env.REALCHAT_MIRROR_SOURCE, 'REALCHAT_MIRROR_SOURCE') : null,
    logLevel: env.LOG_LEVEL || 'info',
    outboxMode: outboxModeFrom(env.REALCHAT_OUTBOX_MODE),
    slotName: env.REALCHAT_SLOT_NAME || 'realchat_outbox',
    maxSlotLagBytes: int(env, 'REALCHAT_SLOT_MAX_LAG_BYTES', 512 * 1024 * 1024, 1024 * 1024, Number.MAX_SAFE_INTEGER),
    kafkaBrokers: env.KAFKA_BROKERS
      ? env.KAFKA_BROKERS.split(',')
          .map((b) => b.trim())
          .filter(Boolean)
      : null,
    addressMap: addressMapFrom(env.REALCHAT_ADDRESS_MAP),
    kafka: {
      eventsTopic: env.REALCHAT_EVENTS_TOPIC || 'realchat.events.v1',
      deliveriesTopic: env.REALCHAT_DELIVERIES_TOPIC || 'realchat.deliveries.v1',
      deadLetterTopic: env.REALCHAT_DLQ_TOPIC || 'realchat.events.dlq.v1',
      partitions: int(env, 'REALCHAT_TOPIC_PARTITIONS', 12, 1, 10_000),
      deliveryGroupId: env.REALCHAT_DELIVERY_GROUP || 'realchat-delivery',
      requestTimeoutMs: int(env, 'REALCHAT_KAFKA_TIMEOUT_MS', 10_000, 500, 600_000),
      fetchMinBytes: int(env, 'REALCHAT_KAFKA_FETCH_MIN_BYTES', 1, 1, 64 * 1024 * 1024),
      fetchMaxWaitMs: int(env, 'REALCHAT_KAFKA_FETCH_MAX_WAIT_MS', 500, 1, 10_000),
      backgroundFetchMinBytes: int(env, 'REALCHAT_KAFKA_BACKGROUND_FETCH_MIN_BYTES', 256 * 1024, 1, 64 * 1024 * 1024),
      backgroundFetchMaxWaitMs: int(env, 'REALCHAT_KAFKA_BACKGROUND_FETCH_MAX_WAIT_MS', 100, 1, 10_000),
      producerLingerMs: int(env, 'REALCHAT_KAFKA_LINGER_MS', 0, 0, 1000),
      commitIntervalMs: int(env, 'REALCHAT_KAFKA_COMMIT_INTERVAL_MS', 500, 0, 60_000),
      clientLogLevel: kafkaLogLevelFrom(env.REALCHAT_KAFKA_LOG_LEVEL),
    },
    redis:
      env.REDIS_URL || env.REDIS_SENTINELS
        ? {
            url: env.REDIS_URL || null,
            sentinels: env.REDIS_SENTINELS ? hostPorts(env.REDIS_SENTINELS, 'REDIS_SENTINELS') : null,
            sentinelName: env.REDIS_SENTINEL_NAME || 'realchat',
            commandTimeoutMs: int(env, 'REALCHAT_REDIS_TIMEOUT_MS', 500, 50, 60_000),
          }
        : null,
    presence: {
      heartbeatMs: int(env, 'REALCHAT_PRESENCE_HEARTBEAT_MS', 1000, 100, 60_000),
      ttlMs: int(env, 'REALCHAT_PRESENCE_TTL_MS', 5000, 300, 600_000),
      liveCacheMs: int(env, 'REALCHAT_PRESENCE_LIVE_CACHE_MS', 1000, 0, 60_000),
      nodeTopicPartitions: int(env, 'REALCHAT_NODE_TOPIC_PARTITIONS', 4, 1, 1000),
      deadNodeTopicTtlMs: int(env, 'REALCHAT_DEAD_NODE_TOPIC_TTL_MS', 10 * 60_000, 1000, 7 * 24 * 3600_000),
      pauseAboveLoopDelayMs: int(env, 'REALCHAT_PAUSE_ABOVE_LOOP_DELAY_MS', 200, 10, 60_000),
      clientGraceMs: int(env, 'REALCHAT_PRESENCE_GRACE_MS', 5000, 0, 600_000),
      maxWatchedPerConnection: int(env, 'REALCHAT_PRESENCE_MAX_WATCHED', 1000, 1, 100_000),
      clientRecheckMs: int(env, 'REALCHAT_PRESENCE_RECHECK_MS', 30_000, 100, 3_600_000),
    },
    breakers: {
      // The registry is asked per batch: three failures in 5 s is an outage, not a blip; 2 s of
      // broadcasting is cheap. REALCHAT_PRESENCE_BREAKER_MS is the older name of the open time.
      redis: breakerFrom(env, 'REDIS', {
        failureThreshold: 3,
        windowMs: 5000,
        openMs: int(env, 'REALCHAT_PRESENCE_BREAKER_MS', 2000, 100, 600_000),
        halfOpenProbes: 1,
      }),
      // Refusing every request is costly: open only on a run of failures that mean "down" (timeouts,
      // refused connections), then let a few requests probe.
      postgres: breakerFrom(env, 'POSTGRES', { failureThreshold: 20, windowMs: 5000, openMs: 1000, halfOpenProbes: 3 }),
    },
    metricsPort: int(env, 'METRICS_PORT', 0, 0, 65535),
    limits: {
      maxPayloadBytes,
      maxFrameBytes: Math.max(4 * maxPayloadBytes, 256 * 1024),
      maxHttpBodyBytes: Math.max(4 * maxPayloadBytes, 256 * 1024),
      maxConnectionBufferBytes,
      wsCoalesceBytes: int(env, 'REALCHAT_WS_COALESCE_BYTES', 16 * 1024, 0, 256 * 1024),
      reorderWindowMs: int(env, 'REALCHAT_REORDER_WINDOW_MS', 150, 0, 10_000),
      reorderMaxHeld: int(env, 'REALCHAT_REORDER_MAX_HELD', 64, 1, 10_000),
      maxRoomMembers: int(env, 'REALCHAT_MAX_ROOM_MEMBERS', 100_000, 2, 10_000_000),
      largeRoomMembers: int(env, 'REALCHAT_LARGE_ROOM_MEMBERS', 1000, 2, 10_000_000),
      maxMembersPerRequest: 1000,
      maxPageMessages: 500,
      maxConversationsListed: 1000,
      maxResumeConversations: 1000,
      framesPerSecond: int(env, 'REALCHAT_FRAMES_PER_S', 200, 1, 1_000_000),
      frameBurst: int(env, 'REALCHAT_FRAME_BURST', 400, 1, 1_000_000),
      sendsPerSecond: int(env, 'REALCHAT_SENDS_PER_S', 100, 1, 1_000_000),
      sendBurst: int(env, 'REALCHAT_SEND_BURST', 200, 1, 1_000_000),
      membershipCacheEntries: int(env, 'REALCHAT_MEMBERSHIP_CACHE_ENTRIES', 10_000, 0, 10_000_000),
      maxOutboxBacklog: int(env, 'REALCHAT_OUTBOX_MAX_BACKLOG', 100_000, 1, 100_000_000),
      deliveryMaxRetries: int(env, 'REALCHAT_DELIVERY_MAX_RETRIES', 5, 0, 1000),
      deliveryConcurrency: int(env, 'REALCHAT_DELIVERY_CONCURRENCY', 6, 1, 1000),
      relayBatch: int(env, 'REALCHAT_RELAY_BATCH', 1000, 1, 100_000),
      maxQueuedDbOperations: int(env, 'REALCHAT_DB_MAX_QUEUED', 256, 1, 1_000_000),
      dbPoolSize,
      sendBatchMax: int(env, 'REALCHAT_SEND_BATCH_MAX', 500, 1, 10_000),
      sendBatchWriters: int(env, 'REALCHAT_SEND_BATCH_WRITERS', Math.min(2, dbPoolSize), 1, 1000),
      sendBatchExtraWriterAt: int(env, 'REALCHAT_SEND_BATCH_EXTRA_WRITER_AT', 16, 1, 10_000),
      maxConnectionsPerUser: int(env, 'REALCHAT_MAX_CONNECTIONS_PER_USER', 32, 1, 1_000_000),
      maxConnectionsPerAddress: int(env, 'REALCHAT_MAX_CONNECTIONS_PER_ADDRESS', 1000, 1, 10_000_000),
      maxPageBytes,
      maxNumberChars: int(env, 'REALCHAT_MAX_NUMBER_CHARS', 40, 17, 1000),
      conversationCreatesPerMin: int(env, 'REALCHAT_CONVERSATION_CREATES_PER_MIN', 60, 1, 10_000_000),
      memberAddsPerMin: int(env, 'REALCHAT_MEMBER_ADDS_PER_MIN', 120, 1, 10_000_000),
      devTokensPerMin: int(env, 'REALCHAT_DEV_TOKENS_PER_MIN', 30, 1, 10_000_000),
      maxPendingResponseBytes: int(env, 'REALCHAT_MAX_PENDING_RESPONSE_BYTES', 64 * 1024 * 1024, 1024 * 1024, 64 * 1024 * 1024 * 1024),
    },
    timeouts: {
      helloMs: int(env, 'REALCHAT_HELLO_TIMEOUT_MS', 10_000, 100, 600_000),
      heartbeatIntervalMs: int(env, 'REALCHAT_HEARTBEAT_INTERVAL_MS', 25_000, 1000, 600_000),
      idleS: int(env, 'REALCHAT_IDLE_TIMEOUT_S', 120, 8, 960),
      dbQueryMs: int(env, 'REALCHAT_DB_QUERY_TIMEOUT_MS', 5000, 100, 600_000),
      dbConnectS: int(env, 'REALCHAT_DB_CONNECT_TIMEOUT_S', 5, 1, 600),
      drainMs: int(env, 'REALCHAT_DRAIN_TIMEOUT_MS', 10_000, 0, 600_000),
      relayPollMs: int(env, 'REALCHAT_RELAY_POLL_MS', 500, 10, 60_000),
      relayLingerMs: int(env, 'REALCHAT_RELAY_LINGER_MS', 0, 0, 1000),
      ...relayLeaseFrom(env),
      responseStallMs: int(env, 'REALCHAT_RESPONSE_STALL_MS', 30_000, 100, 600_000),
      slowReaderMs: int(env, 'REALCHAT_SLOW_READER_TIMEOUT_MS', 30_000, 100, 600_000),
      embeddedMaintenanceMs: int(env, 'REALCHAT_EMBEDDED_MAINTENANCE_INTERVAL_MS', 30_000, 0, 3_600_000),
    },
    tracing: tracingFrom(env),
    push: pushFrom(env, int(env, 'REALCHAT_LARGE_ROOM_MEMBERS', 1000, 2, 10_000_000)),
    webhooks: webhooksFrom(env),
    ...overrides,
  };
  return Object.freeze(cfg);
}
