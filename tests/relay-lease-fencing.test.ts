/**
 * Relay leadership is a lease with an expiry on the database's clock and a fencing token
 * (relay/lease.ts). A paused leader loses it to a standby within ttl + one renewal period, cannot
 * delete outbox rows once it lost it, and steps down when it resumes. Part one runs two leadership
 * loops in this process against a real PostgreSQL (the "pause" holds the leader's renewals and its
 * publish in flight); part two runs two real relay processes against PostgreSQL and Kafka and
 * SIGSTOPs the leader.
 */
import { randomUUID } from 'node:crypto';
import postgres from 'postgres';
import kafkajs from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSql, type Sql } from '../common/db.js';
import { createLogger } from '../common/log.js';
import { createMetrics } from '../common/metrics.js';
import type { EventBus } from '../common/bus.js';
import { EVENT_HEADERS, type EventRecord } from '../common/events.js';
import { deleteOutboxRows } from '../common/outbox.js';
import { migrate } from '../sql/migrate.js';
import { OutboxLease } from '../relay/lease.js';
import { createLeaderRelay, type Lease, type LeaderRelay } from '../relay/leader.js';
import { createOutboxRelay } from '../relay/outbox-relay.js';
import { LogSink, freshDatabase } from './harness/server.js';
import { freePort, startPostgres, type PostgresServer } from './harness/postgres.js';
import { startKafka, type KafkaHandle } from './harness/kafka.js';
import { spawnRole, type RoleProcess } from './harness/stack.js';

const until = async (what: string, cond: () => boolean | Promise<boolean>, timeoutMs: number, stepMs = 20): Promise<number> => {
  const t0 = Date.now();
  while (!(await cond())) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
  return Date.now() - t0;
};

async function insertRows(sql: Sql | postgres.Sql, n: number, conversations: string[], counter: { next: number }): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const k = counter.next++;
    const eventId = randomUUID();
    const conv = conversations[k % conversations.length]!;
    await sql`INSERT INTO outbox (event_id, aggregateid, type, payload) VALUES (${eventId}, ${conv}, 'test.event', ${JSON.stringify({ k })}::jsonb)`;
    ids.push(eventId);
  }
  return ids;
}

describe('relay lease (in process, real PostgreSQL)', () => {
  const TTL = 1500;
  const RENEW = 250;
  const MARGIN = 300;
  let url: string;
  let admin: postgres.Sql;
  const pools: Sql[] = [];
  const leaders: LeaderRelay[] = [];

  beforeAll(async () => {
    url = await freshDatabase();
    admin = postgres(url, { max: 2, onnotice: () => {} });
  });
  afterAll(async () => {
    for (const l of leaders) await l.stop().catch(() => {});
    for (const p of pools) await p.end({ timeout: 1 });
    await admin.end({ timeout: 1 });
  });

  function relayNode(name: string) {
    const sql = createSql({ url, maxConnections: 4, connectTimeoutS: 5, queryTimeoutMs: 2000, applicationName: `lease-test-${name}` });
    pools.push(sql);
    const logs = new LogSink();
    const log = createLogger({ level: 'info', nodeId: name, role: 'relay', destination: logs });
    const metrics = createMetrics({ nodeId: name });
    // As in relay/main.ts: the lease has a one-connection client of its own.
    const leaseSql = createSql({
      url,
      maxConnections: 1,
      connectTimeoutS: 5,
      queryTimeoutMs: 2000,
      applicationName: `lease-test-${name}-lease`,
      maxLifetimeS: null,
    });
    pools.push(leaseSql);
    const inner = new OutboxLease({ sql: leaseSql, holder: `${name}/${randomUUID()}`, ttlMs: TTL, marginMs: MARGIN, timeoutMs: 1000 });
    // A "pause": renewals (and acquisitions) wait, and publishes wait, until resumed.
    let renewGate: Promise<void> | null = null;
    let openRenew = () => {};
    let publishGate: Promise<void> | null = null;
    let openPublish = () => {};
    let publishesWaiting = 0;
    const published: EventRecord[] = [];
    const lease: Lease = {
      get held() {
        return inner.held;
      },
      get token() {
        return inner.token;
      },
      tryAcquire: async () => {
        await renewGate;
        return inner.tryAcquire();
      },
      renew: async () => {
        await renewGate;
        return inner.renew();
      },
      stepDown: () => inner.stepDown(),
      release: () => inner.release(),
    };
    const bus: EventBus = {
      async publish(records) {
        if (publishGate) {
          publishesWaiting++;
          await publishGate;
          publishesWaiting--;
        }
        published.push(...records);
      },
      subscribe() {},
      async close() {},
    };
    const leader = createLeaderRelay({
      lease,
      renewMs: RENEW,
      log,
      metrics,
      createRelay: (fence) =>
        createOutboxRelay({ sql, bus, log, metrics, batchSize: 100, pollMs: 50, lingerMs: 0, queryTimeoutMs: 2000, fence }),
    });
    leaders.push(leader);
    return {
      sql,
      inner,
      leader,
      logs,
      published,
      get publishesWaiting() {
        return publishesWaiting;
      },
      pause() {
        renewGate = new Promise((r) => (openRenew = r));
        publishGate = new Promise((r) => (openPublish = r));
      },
      resumePublish() {
        publishGate = null;
        openPublish();
      },
      resumeRenewals() {
        renewGate = null;
        openRenew();
      },
    };
  }

  it('a paused leader loses the lease to the standby within ttl + a renewal; its delete is refused; it steps down', async () => {
    const counter = { next: 0 };
    const convs = [randomUUID(), randomUUID()];
    const a = relayNode('relay-a');
    await migrate(a.sql);
    const outboxLeft = async () => (await admin<{ n: number }[]>`SELECT count(*)::int AS n FROM outbox`)[0]!.n;

    a.leader.start();
    await until('relay-a leading', () => a.leader.state === 'leader', 5000);
    const first = await insertRows(admin, 3, convs, counter);
    await until('relay-a drained the outbox', async () => (await outboxLeft()) === 0, 5000);
    expect(a.published.map((r) => r.eventId)).toEqual(first);

    const b = relayNode('relay-b');
    b.leader.start();
    // Renewed while it runs: the standby stays a standby.
    await new Promise((r) => setTimeout(r, TTL + RENEW));
    expect(b.leader.state).toBe('standby');
    expect(a.leader.state).toBe('leader');

    // relay-a "pauses" in the middle of publishing a batch.
    a.pause();
    const pausedAt = Date.now();
    const during = await insertRows(admin, 3, convs, counter);
    await until('relay-a blocked in its publish', () => a.publishesWaiting === 1, 5000);

    await until('relay-b leading', () => b.leader.state === 'leader', TTL + RENEW + 2000);
    const takeoverMs = Date.now() - pausedAt;
    console.log(`lease takeover after a pause: ${takeoverMs} ms (ttl ${TTL} ms, renewal every ${RENEW} ms)`);
    expect(takeoverMs).toBeGreaterThanOrEqual(TTL - MARGIN);
    // By its own clock, relay-a no longer counts itself leader (it would not start another publish).
    expect(a.inner.held).toBe(false);

    // The outbox keeps flowing through relay-b, the rows relay-a holds included.
    await until('relay-b drained the outbox', async () => (await outboxLeft()) === 0, 5000);
    const after = await insertRows(admin, 2, convs, counter);
    await until('relay-b published the later rows', async () => (await outboxLeft()) === 0, 5000);
    const bIds = b.published.map((r) => r.eventId);
    for (const id of [...during, ...after]) expect(bIds).toContain(id);

    // relay-a resumes: its publish completes, its delete is refused (fenced), it steps down.
    a.resumePublish();
    await until('relay-a stepped down', () => a.leader.state === 'standby', 5000);
    expect(a.logs.find((l) => l.msg === 'outbox delete refused: the relay lease passed to another relay')).toHaveLength(1);
    a.resumeRenewals();
    await new Promise((r) => setTimeout(r, TTL));
    expect(a.leader.state).toBe('standby');
    expect(b.leader.state).toBe('leader');

    // Tokens: relay-a had 1, relay-b took over with 2; a delete under the stale token deletes nothing.
    const [lease] = await admin<{ token: number }[]>`SELECT token::int AS token FROM relay_lease WHERE name = 'outbox'`;
    expect(lease!.token).toBe(2);
    await a.leader.stop();
    await b.leader.stop();
    const [row] = await admin<{ id: string }[]>`
      INSERT INTO outbox (event_id, aggregateid, type, payload) VALUES (${randomUUID()}, ${convs[0]!}, 'test.event', '{}') RETURNING id::text AS id`;
    // relay-b released the lease on stop: not even its own token deletes now.
    expect(await deleteOutboxRows(a.sql, [row!.id], 1000, 1)).toBe(false);
    expect(await deleteOutboxRows(a.sql, [row!.id], 1000, 2)).toBe(false);
    expect(await outboxLeft()).toBe(1);
    expect(await deleteOutboxRows(a.sql, [row!.id], 1000)).toBe(true);
  }, 60_000);

  it('a crashed holder (its backend gone) is replaced without waiting for the expiry', async () => {
    const sqlA = createSql({
      url,
      maxConnections: 1,
      connectTimeoutS: 5,
      queryTimeoutMs: 2000,
      applicationName: 'lease-test-crash',
      maxLifetimeS: null,
    });
    const sqlB = createSql({
      url,
      maxConnections: 1,
      connectTimeoutS: 5,
      queryTimeoutMs: 2000,
      applicationName: 'lease-test-survivor',
      maxLifetimeS: null,
    });
    pools.push(sqlB);
    await migrate(sqlB);
    const a = new OutboxLease({ sql: sqlA, holder: 'a', ttlMs: 30_000, marginMs: 1000, timeoutMs: 1000 });
    const b = new OutboxLease({ sql: sqlB, holder: 'b', ttlMs: 30_000, marginMs: 1000, timeoutMs: 1000 });
    await until('a acquires', () => a.tryAcquire(), 5000, 100);
    expect(await b.tryAcquire()).toBe(false);
    // Like a kill -9: the connections close without a release.
    await sqlA.end({ timeout: 0 });
    const ms = await until('b takes over', () => b.tryAcquire(), 5000, 50);
    expect(ms).toBeLessThan(5000);
    expect(b.held).toBe(true);
    await b.release();
  });
});

describe('relay lease (two relay processes, PostgreSQL and Kafka): SIGSTOP of the leader', () => {
  const TOPIC = 'realchat.events.v1';
  let pg: PostgresServer;
  let kafka: KafkaHandle;
  const procs: RoleProcess[] = [];

  beforeAll(async () => {
    pg = await startPostgres();
    kafka = await startKafka();
    await kafka.createTopic(TOPIC, 4);
  }, 240_000);
  afterAll(async () => {
    for (const p of procs) {
      p.child.kill('SIGCONT');
      await p.crash().catch(() => {});
    }
    await kafka?.stop().catch(() => {});
    pg?.stop();
  });

  it('the standby takes over within ttl + a renewal, nothing is lost or reordered, and the resumed leader steps down', async () => {
    const TTL = 2000;
    const RENEW = 400;
    const env = {
      DATABASE_URL: pg.url,
      KAFKA_BROKERS: kafka.brokers,
      REALCHAT_TOPIC_PARTITIONS: '4',
      REALCHAT_RELAY_POLL_MS: '100',
      REALCHAT_KAFKA_TIMEOUT_MS: '3000',
      REALCHAT_RELAY_LEASE_TTL_MS: String(TTL),
      REALCHAT_RELAY_LEASE_RENEW_MS: String(RENEW),
      REALCHAT_RELAY_LEASE_MARGIN_MS: '400',
    };
    const ports = [await freePort(), await freePort()];
    const first = await spawnRole('relay', { ...env, REALCHAT_NODE_ID: 'relay-1', METRICS_PORT: String(ports[0]) });
    procs.push(first);
    const readyz = async (port: number) => {
      try {
        const res = await fetch(`http://127.0.0.1:${port}/readyz`, { signal: AbortSignal.timeout(2000) });
        return { status: res.status, body: (await res.json()) as { role?: string } };
      } catch {
        return { status: 0, body: {} as { role?: string } };
      }
    };
    await until('relay-1 leading', async () => (await readyz(ports[0]!)).body.role === 'leader', 20_000, 100);
    const second = await spawnRole('relay', { ...env, REALCHAT_NODE_ID: 'relay-2', METRICS_PORT: String(ports[1]) });
    procs.push(second);
    expect(await readyz(ports[1]!)).toEqual({ status: 200, body: expect.objectContaining({ status: 'ready', role: 'standby' }) });

    const sql = postgres(pg.url, { max: 2, onnotice: () => {} });
    const convs = Array.from({ length: 8 }, () => randomUUID());
    const counter = { next: 0 };
    const inserted: string[] = [];
    let inserting = true;
    const writer = (async () => {
      while (inserting) {
        inserted.push(...(await insertRows(sql, 1, convs, counter)));
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    try {
      await new Promise((r) => setTimeout(r, 1500));
      first.child.kill('SIGSTOP');
      const stoppedAt = Date.now();
      await until('relay-2 leading', async () => (await readyz(ports[1]!)).body.role === 'leader', TTL + RENEW + 5000, 50);
      const takeoverMs = Date.now() - stoppedAt;
      // Rows written after the takeover are published while relay-1 is still stopped.
      const mark = counter.next;
      await until(
        'rows written after the takeover published',
        async () => (await sql<{ n: number }[]>`SELECT count(*)::int AS n FROM outbox WHERE (payload->>'k')::int <= ${mark}`)[0]!.n === 0,
        10_000,
        50,
      );
      const flowingMs = Date.now() - stoppedAt;
      console.log(`relay leader SIGSTOPped: standby leading after ${takeoverMs} ms, outbox drained after ${flowingMs} ms (ttl ${TTL} ms)`);
      expect(takeoverMs).toBeLessThan(TTL + RENEW + 2000);

      first.child.kill('SIGCONT');
      await until('relay-1 stepped down', async () => (await readyz(ports[0]!)).body.role === 'standby', 10_000, 50);
      await new Promise((r) => setTimeout(r, 1000));
      expect((await readyz(ports[1]!)).body.role).toBe('leader');
      expect((await readyz(ports[0]!)).body.role).toBe('standby');
      expect(first.logs.join('')).toContain('outbox lease lost');
    } finally {
      inserting = false;
      await writer;
    }
    await until('outbox empty', async () => (await sql<{ n: number }[]>`SELECT count(*)::int AS n FROM outbox`)[0]!.n === 0, 20_000, 100);
    const [lease] = await sql<{ token: number }[]>`SELECT token::int AS token FROM relay_lease`;
    expect(lease!.token).toBeGreaterThanOrEqual(2);
    await sql.end();

    // Every row reached the topic; per conversation, first occurrences are in insertion order
    // (a stale leader may only add duplicates of what was published before).
    const seen = new Map<string, string[]>();
    const all = new Set<string>();
    const consumer = new kafkajs.Kafka({ brokers: [kafka.brokers], logLevel: kafkajs.logLevel.NOTHING }).consumer({
      groupId: `check-${randomUUID()}`,
    });
    await consumer.connect();
    await consumer.subscribe({ topic: TOPIC, fromBeginning: true });
    await consumer.run({
      eachMessage: async ({ message }) => {
        const id = message.headers?.[EVENT_HEADERS.eventId]?.toString() ?? '';
        const key = message.key!.toString();
        const k = (JSON.parse(message.value!.toString()) as { k: number }).k;
        if (all.has(id)) return;
        all.add(id);
        const list = seen.get(key) ?? [];
        list.push(String(k));
        seen.set(key, list);
      },
    });
    try {
      await until('every row on the topic', () => all.size >= inserted.length, 60_000, 200);
    } finally {
      await consumer.disconnect();
    }
    expect(all.size).toBe(inserted.length);
    for (const list of seen.values()) {
      const ks = list.map(Number);
      expect(ks).toEqual([...ks].sort((x, y) => x - y));
    }
  }, 180_000);
});
