/**
 * The distributed stack in one process (the test's): N gateway nodes (startRealChat with
 * KAFKA_BROKERS, each its own node id and port), the relay (runRelay) and delivery workers
 * (runDelivery), against a real Kafka broker, a real Redis (presence) and a fresh database on the
 * run's PostgreSQL. Runs the TypeScript sources directly (no build), so a local change to server
 * code is what runs. Delivery workers can be swapped at run time between routing by presence
 * (Redis) and broadcasting to every node (no presence: each gateway resolves recipients from its
 * own membership cache).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { loadConfig } from '../../common/config.js';
import { startRealChat, type RealChat } from '../../standalone/realchat.js';
import { runRelay } from '../../relay/main.js';
import { runDelivery } from '../../delivery/main.js';
import { createAuthenticator } from '../../gateway/auth.js';
import { freshDatabase } from './server.js';
import { startKafka, type KafkaHandle } from './kafka.js';
import { startRedis, type RedisProcess } from './redis.js';
import { freePort } from './postgres.js';
import { UNLIMITED_RATES } from './env.js';

export interface InProcStack {
  databaseUrl: string;
  kafka: KafkaHandle;
  redis: RedisProcess;
  gateways: RealChat[];
  /** ws URL of gateway i */
  ws(i: number): string;
  /** http base of gateway i */
  http(i: number): string;
  token(userId?: string): Promise<string>;
  /** The environment every role got (for a consumer's config). */
  env: Record<string, string>;
  /** Stops the running delivery worker(s) and starts one that routes by presence (true) or broadcasts (false). */
  useDelivery(presence: boolean): Promise<void>;
  /** Stops the relay (the outbox then holds what is committed) / starts it again. */
  stopRelay(): Promise<void>;
  startRelay(): Promise<void>;
  close(): Promise<void>;
}

export async function startInProcStack(opts: {
  gateways: number;
  env?: Record<string, string>;
  delivery?: 'presence' | 'broadcast';
}): Promise<InProcStack> {
  const databaseUrl = await freshDatabase();
  const kafka = await startKafka();
  const redis = await startRedis();
  const secret = randomBytes(32).toString('hex');
  const auth = createAuthenticator({ secret });
  const env: Record<string, string> = {
    DATABASE_URL: databaseUrl,
    KAFKA_BROKERS: kafka.brokers,
    REALCHAT_JWT_SECRET: secret,
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'warn',
    ...UNLIMITED_RATES,
    REALCHAT_TOPIC_PARTITIONS: '2',
    REALCHAT_NODE_TOPIC_PARTITIONS: '1',
    REALCHAT_KAFKA_TIMEOUT_MS: '3000',
    REALCHAT_RELAY_POLL_MS: '100',
    REALCHAT_DRAIN_TIMEOUT_MS: '2000',
    ...opts.env,
  };
  const stops: Array<() => Promise<unknown>> = [];
  const gateways: RealChat[] = [];
  let delivery: { stop(): Promise<void> } | null = null;
  let relay: { stop(): Promise<void> } | null = null;
  const stack: InProcStack = {
    databaseUrl,
    kafka,
    redis,
    gateways,
    env,
    ws: (i) => `ws://127.0.0.1:${gateways[i]!.port}/v1/ws`,
    http: (i) => `http://127.0.0.1:${gateways[i]!.port}`,
    token: (userId = randomUUID()) => auth.issue(userId),
    async useDelivery(presence) {
      if (delivery) await delivery.stop();
      delivery = null;
      delivery = await runDelivery(
        loadConfig({
          ...env,
          ...(presence ? { REDIS_URL: `redis://127.0.0.1:${redis.port}` } : {}),
          REALCHAT_NODE_ID: `delivery-${presence ? 'presence' : 'broadcast'}-${randomUUID().slice(0, 4)}`,
          METRICS_PORT: String(await freePort()),
        }),
      );
    },
    async stopRelay() {
      await relay?.stop();
      relay = null;
    },
    async startRelay() {
      if (relay) return;
      relay = await runRelay(
        loadConfig({ ...env, REALCHAT_NODE_ID: `relay-${randomUUID().slice(0, 4)}`, METRICS_PORT: String(await freePort()) }),
      );
    },
    async close() {
      await delivery?.stop().catch(() => {});
      await relay?.stop().catch(() => {});
      for (const s of stops.reverse()) await s().catch(() => {});
      await redis.kill().catch(() => {});
      await kafka.stop().catch(() => {});
    },
  };
  try {
    for (let i = 0; i < opts.gateways; i++) {
      // The first applies the migrations.
      const g = await startRealChat(
        loadConfig({ ...env, PORT: '0', REDIS_URL: `redis://127.0.0.1:${redis.port}`, REALCHAT_NODE_ID: `gateway-${i}` }),
      );
      gateways.push(g);
      stops.push(() => g.close());
    }
    await stack.startRelay();
    await stack.useDelivery((opts.delivery ?? 'presence') === 'presence');
  } catch (err) {
    await stack.close();
    throw err;
  }
  return stack;
}

export interface Rest {
  status: number;
  body: any;
}

/** One REST call with a bearer token (JSON in, JSON out). */
export async function rest(
  base: string,
  token: string,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<Rest> {
  const res = await fetch(base + path, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  let parsed: any = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: res.status, body: parsed };
}
