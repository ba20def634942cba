/**
 * /readyz of the worker roles reflects what each needs to do its job, and says what fails
 * (common/ops-server.ts); /healthz stays liveness. Relay: PostgreSQL, and Kafka while it leads
 * (a standby is ready without publishing). Delivery: its consumer group member, Redis, PostgreSQL.
 * Real PostgreSQL, Kafka and Redis, stopped and started under the roles.
 */
import { randomUUID } from 'node:crypto';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../common/config.js';
import { runRelay } from '../relay/main.js';
import { runDelivery } from '../delivery/main.js';
import { freePort, startPostgres, type PostgresServer } from './harness/postgres.js';
import { startKafka, type KafkaHandle } from './harness/kafka.js';
import { startRedis, type RedisProcess } from './harness/redis.js';

interface Probe {
  status: number;
  body: { status?: string; failing?: string[]; role?: string; checks?: Record<string, { ok: boolean; detail?: string }> };
}

async function get(port: number, path: '/readyz' | '/healthz'): Promise<Probe> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(3000) });
    return { status: res.status, body: (await res.json()) as Probe['body'] };
  } catch {
    return { status: 0, body: {} };
  }
}

async function until(what: string, port: number, pred: (p: Probe) => boolean, timeoutMs: number): Promise<Probe> {
  const t0 = Date.now();
  let last: Probe = { status: 0, body: {} };
  while (Date.now() - t0 < timeoutMs) {
    last = await get(port, '/readyz');
    if (pred(last)) return last;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${what}; last /readyz: ${last.status} ${JSON.stringify(last.body)}`);
}

describe('readiness of the worker roles', () => {
  let pg: PostgresServer;
  let kafka: KafkaHandle;
  const stops: Array<() => Promise<void>> = [];

  beforeAll(async () => {
    pg = await startPostgres();
    kafka = await startKafka();
    await kafka.createTopic('realchat.events.v1', 2);
  }, 240_000);
  afterAll(async () => {
    for (const s of stops.reverse()) await s().catch(() => {});
    await kafka?.stop().catch(() => {});
    pg?.stop();
  });

  const baseEnv = () => ({
    DATABASE_URL: pg.url,
    KAFKA_BROKERS: kafka.brokers,
    LOG_LEVEL: 'warn',
    REALCHAT_TOPIC_PARTITIONS: '2',
    REALCHAT_KAFKA_TIMEOUT_MS: '2000',
    REALCHAT_DB_QUERY_TIMEOUT_MS: '2000',
    REALCHAT_DB_CONNECT_TIMEOUT_S: '2',
    REALCHAT_RELAY_LEASE_TTL_MS: '2000',
    REALCHAT_RELAY_LEASE_RENEW_MS: '400',
    REALCHAT_RELAY_LEASE_MARGIN_MS: '400',
    REALCHAT_RELAY_POLL_MS: '200',
  });

  it('relay: ready as leader or standby; 503 naming kafka while the leader cannot publish, postgres while it is down', async () => {
    const ports = [await freePort(), await freePort()];
    const leader = await runRelay(loadConfig({ ...baseEnv(), REALCHAT_NODE_ID: 'relay-1', METRICS_PORT: String(ports[0]) }));
    stops.push(() => leader.stop());
    await until('relay-1 leading', ports[0]!, (p) => p.status === 200 && p.body.role === 'leader', 20_000);
    const standby = await runRelay(loadConfig({ ...baseEnv(), REALCHAT_NODE_ID: 'relay-2', METRICS_PORT: String(ports[1]) }));
    stops.push(() => standby.stop());
    expect(await get(ports[1]!, '/readyz')).toMatchObject({ status: 200, body: { status: 'ready', role: 'standby' } });

    const sql = postgres(pg.url, { max: 1, onnotice: () => {}, connect_timeout: 2 });
    try {
      await kafka.kill();
      let restarted = false;
      try {
        await sql`INSERT INTO outbox (event_id, aggregateid, type, payload) VALUES (${randomUUID()}, 'c', 'test.event', '{}')`;
        const down = await until('the leader not ready', ports[0]!, (p) => p.status === 503, 60_000);
        expect(down.body).toMatchObject({ status: 'not_ready', failing: ['kafka'], role: 'leader' });
        expect(down.body.checks?.postgres).toEqual({ ok: true });
        // Liveness is not readiness: the process is fine.
        expect(await get(ports[0]!, '/healthz')).toMatchObject({ status: 200 });
        // The standby does not need Kafka to stand by.
        expect(await get(ports[1]!, '/readyz')).toMatchObject({ status: 200, body: { role: 'standby' } });
        await kafka.restart();
        restarted = true;
        await until('the leader ready again', ports[0]!, (p) => p.status === 200, 60_000);
      } finally {
        if (!restarted) await kafka.restart();
      }
    } finally {
      await sql.end({ timeout: 1 });
    }

    pg.kill();
    try {
      for (const port of ports) {
        const down = await until('not ready without postgres', port, (p) => p.status === 503, 20_000);
        expect(down.body.failing).toContain('postgres');
        expect(down.body.checks?.postgres?.detail).toBeTruthy();
        expect(await get(port, '/healthz')).toMatchObject({ status: 200 });
      }
    } finally {
      pg.restart();
    }
    for (const port of ports) await until('ready after postgres returned', port, (p) => p.status === 200, 30_000);
  }, 240_000);

  it('delivery: ready with its group member, Redis and PostgreSQL; 503 naming redis when Redis is gone', async () => {
    let redis: RedisProcess | null = await startRedis();
    stops.push(async () => redis?.kill());
    const port = await freePort();
    const worker = await runDelivery(
      loadConfig({
        ...baseEnv(),
        REDIS_URL: `redis://127.0.0.1:${redis.port}`,
        REALCHAT_NODE_ID: 'delivery-1',
        REALCHAT_DELIVERY_GROUP: `readiness-${randomUUID().slice(0, 8)}`,
        METRICS_PORT: String(port),
      }),
    );
    stops.push(() => worker.stop());
    const up = await until('delivery ready', port, (p) => p.status === 200, 60_000);
    expect(up.body.checks).toMatchObject({ kafka: { ok: true }, redis: { ok: true }, postgres: { ok: true } });

    await redis.kill();
    redis = null;
    const down = await until('delivery not ready without redis', port, (p) => p.status === 503, 20_000);
    expect(down.body).toMatchObject({ status: 'not_ready', failing: ['redis'] });
    expect(await get(port, '/healthz')).toMatchObject({ status: 200 });
  }, 180_000);
});
