/**
 * The only module that reads the environment. Everything else receives a frozen Config.
 * Field names carry their units.
 */
export interface Config {
  readonly mode: 'embedded' | 'postgres';
  readonly port: number;
  readonly host: string;
  /** null: embedded PGlite in dataDir. */
  readonly databaseUrl: string | null;
  readonly dataDir: string;
  /** null: embedded mode generates one and keeps it in dataDir (see gateway/secrets.ts). */
  readonly jwtSecret: string | null;
  readonly devAuth: boolean;
  readonly nodeId: string;
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
  readonly kafka: KafkaTopics;
  /** null: no presence registry (deliveries are broadcast to every gateway node). */
  readonly redis: RedisConfig | null;
  readonly presence: PresenceConfig;
  /** Relay and delivery serve /metrics and /healthz here (0 = ephemeral). */
  readonly metricsPort: number;
  readonly limits: Limits;
  readonly timeouts: Timeouts;
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
  /** Partitions of each gateway node's delivery topic. */
  readonly nodeTopicPartitions: number;
  /** Node topics of nodes dead this long are deleted by delivery workers. */
  readonly deadNodeTopicTtlMs: number;
  /** After a registry failure, delivery broadcasts for this long before trying the registry again. */
  readonly breakerOpenMs: number;
  /** Event-loop delay above which a gateway pauses consuming deliveries. */
  readonly pauseAboveLoopDelayMs: number;
}

function hostPorts(raw: string, name: string): Array<{ host: string; port: number }> {
  return raw.split(',').map((hp) => {
    const [host, port] = hp.trim().split(':');
    const n = Number(port);
    if (!host || !Number.isInteger(n) || n < 1 || n > 65535) throw new ConfigError(`${name} must be host:port[,host:port...], got "${raw}"`);
    return { host, port: n };
  });
}

export interface KafkaTopics {
  readonly eventsTopic: string;
  readonly deliveriesTopic: string;
  readonly deadLetterTopic: string;
  readonly partitions: number;
  readonly deliveryGroupId: string;
  readonly requestTimeoutMs: number;
}

export interface Limits {
  readonly maxPayloadBytes: number;
  /** Frames above this are refused by uWS itself (close 1009); between payload and frame max we answer payload_too_large. */
  readonly maxFrameBytes: number;
  readonly maxHttpBodyBytes: number;
  /** Bytes queued in a socket before it is closed as a slow consumer. */
  readonly maxConnectionBufferBytes: number;
  readonly maxRoomMembers: number;
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
  /** Request-path database operations allowed to wait for a connection; beyond: `unavailable`. */
  readonly maxQueuedDbOperations: number;
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

function outboxModeFrom(raw: string | undefined): 'table' | 'wal' {
  if (!raw || raw === 'table') return 'table';
  if (raw === 'wal') return 'wal';
  throw new ConfigError(`REALCHAT_OUTBOX_MODE must be table or wal, got "${raw}"`);
}

function nodeIdFrom(raw: string | undefined): string {
  if (!raw) return `node-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  // It names a Kafka topic (realchat.node.<id>) and Redis keys.
  if (!/^[A-Za-z0-9_-]{1,100}$/.test(raw)) throw new ConfigError(`REALCHAT_NODE_ID must be 1-100 of [A-Za-z0-9_-], got "${raw}"`);
  return raw;
}

export function loadConfig(env: Env = process.env, overrides: Partial<Config> = {}): Config {
  const databaseUrl = env.DATABASE_URL ? env.DATABASE_URL : null;
  const mode = databaseUrl ? 'postgres' : 'embedded';
  const jwtSecret = env.REALCHAT_JWT_SECRET ? env.REALCHAT_JWT_SECRET : null;
  if (jwtSecret !== null && Buffer.byteLength(jwtSecret) < 32) {
    throw new ConfigError('REALCHAT_JWT_SECRET must be at least 32 bytes for HS256');
  }
  const devAuth = bool(env, 'REALCHAT_DEV_AUTH', mode === 'embedded');
  const maxPayloadBytes = int(env, 'REALCHAT_MAX_PAYLOAD_BYTES', 64 * 1024, 1024, 1024 * 1024);
  const maxConnectionBufferBytes = int(env, 'REALCHAT_MAX_CONNECTION_BUFFER_BYTES', 1024 * 1024, 64 * 1024, 64 * 1024 * 1024);
  if (maxConnectionBufferBytes < 2 * (maxPayloadBytes + 4096)) {
    throw new ConfigError('REALCHAT_MAX_CONNECTION_BUFFER_BYTES must hold at least two maximal message frames (2 x (REALCHAT_MAX_PAYLOAD_BYTES + 4096))');
  }
  const cfg: Config = {
    mode,
    port: int(env, 'PORT', 8080, 0, 65535),
    // Embedded mode serves dev auth: never expose it on other interfaces by accident.
    host: env.HOST || (mode === 'embedded' ? '127.0.0.1' : '0.0.0.0'),
    databaseUrl,
    dataDir: env.REALCHAT_DATA_DIR || './data',
    jwtSecret,
    devAuth,
    nodeId: nodeIdFrom(env.REALCHAT_NODE_ID),
    logLevel: env.LOG_LEVEL || 'info',
    outboxMode: outboxModeFrom(env.REALCHAT_OUTBOX_MODE),
    slotName: env.REALCHAT_SLOT_NAME || 'realchat_outbox',
    maxSlotLagBytes: int(env, 'REALCHAT_SLOT_MAX_LAG_BYTES', 512 * 1024 * 1024, 1024 * 1024, Number.MAX_SAFE_INTEGER),
    kafkaBrokers: env.KAFKA_BROKERS ? env.KAFKA_BROKERS.split(',').map((b) => b.trim()).filter(Boolean) : null,
    kafka: {
      eventsTopic: env.REALCHAT_EVENTS_TOPIC || 'realchat.events.v1',
      deliveriesTopic: env.REALCHAT_DELIVERIES_TOPIC || 'realchat.deliveries.v1',
      deadLetterTopic: env.REALCHAT_DLQ_TOPIC || 'realchat.events.dlq.v1',
      partitions: int(env, 'REALCHAT_TOPIC_PARTITIONS', 12, 1, 10_000),
      deliveryGroupId: env.REALCHAT_DELIVERY_GROUP || 'realchat-delivery',
      requestTimeoutMs: int(env, 'REALCHAT_KAFKA_TIMEOUT_MS', 10_000, 500, 600_000),
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
      nodeTopicPartitions: int(env, 'REALCHAT_NODE_TOPIC_PARTITIONS', 4, 1, 1000),
      deadNodeTopicTtlMs: int(env, 'REALCHAT_DEAD_NODE_TOPIC_TTL_MS', 10 * 60_000, 1000, 7 * 24 * 3600_000),
      breakerOpenMs: int(env, 'REALCHAT_PRESENCE_BREAKER_MS', 2000, 100, 600_000),
      pauseAboveLoopDelayMs: int(env, 'REALCHAT_PAUSE_ABOVE_LOOP_DELAY_MS', 200, 10, 60_000),
    },
    metricsPort: int(env, 'METRICS_PORT', 0, 0, 65535),
    limits: {
      maxPayloadBytes,
      maxFrameBytes: Math.max(4 * maxPayloadBytes, 256 * 1024),
      maxHttpBodyBytes: Math.max(4 * maxPayloadBytes, 256 * 1024),
      maxConnectionBufferBytes,
      maxRoomMembers: int(env, 'REALCHAT_MAX_ROOM_MEMBERS', 10_000, 2, 1_000_000),
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
      maxQueuedDbOperations: int(env, 'REALCHAT_DB_MAX_QUEUED', 256, 1, 1_000_000),
    },
    timeouts: {
      helloMs: int(env, 'REALCHAT_HELLO_TIMEOUT_MS', 10_000, 100, 600_000),
      heartbeatIntervalMs: int(env, 'REALCHAT_HEARTBEAT_INTERVAL_MS', 25_000, 1000, 600_000),
      idleS: int(env, 'REALCHAT_IDLE_TIMEOUT_S', 120, 8, 960),
      dbQueryMs: int(env, 'REALCHAT_DB_QUERY_TIMEOUT_MS', 5000, 100, 600_000),
      dbConnectS: int(env, 'REALCHAT_DB_CONNECT_TIMEOUT_S', 5, 1, 600),
      drainMs: int(env, 'REALCHAT_DRAIN_TIMEOUT_MS', 10_000, 0, 600_000),
      relayPollMs: int(env, 'REALCHAT_RELAY_POLL_MS', 500, 10, 60_000),
    },
    ...overrides,
  };
  return Object.freeze(cfg);
}
