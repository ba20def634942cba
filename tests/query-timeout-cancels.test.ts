/**
 * A query the caller stopped waiting for is cancelled on the server (common/timeout.ts), against a
 * real PostgreSQL: it leaves pg_stat_activity shortly after its timeout instead of holding its
 * connection, its locks and its request-gate slot until the server's statement_timeout, and a query
 * still queued in the driver is dropped instead of running later for nobody.
 */
import { randomUUID } from 'node:crypto';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSql, type Sql } from '../common/db.js';
import { TimeoutError, withTimeout } from '../common/timeout.js';
import type { AppError } from '../common/errors.js';
import { Semaphore } from '../common/semaphore.js';
import { migrate } from '../sql/migrate.js';
import { createChatStore } from '../gateway/chat-store.js';
import { freshDatabase } from './harness/server.js';

describe('timed-out queries are cancelled', () => {
  let url: string;
  let admin: postgres.Sql;
  let holder: postgres.ReservedSql;
  const pools: Sql[] = [];

  beforeAll(async () => {
    url = await freshDatabase();
    admin = postgres(url, { max: 3, onnotice: () => {} });
    await admin`CREATE TABLE lockme (id int PRIMARY KEY, v int NOT NULL)`;
    await admin`INSERT INTO lockme VALUES (1, 0)`;
    // Holds the row lock for the whole file: every UPDATE of row 1 blocks.
    holder = await admin.reserve();
    await holder`BEGIN`;
    await holder`UPDATE lockme SET v = v + 1 WHERE id = 1`;
  });
  afterAll(async () => {
    await holder`ROLLBACK`.catch(() => {});
    holder.release();
    for (const p of pools) await p.end({ timeout: 1 });
    await admin.end({ timeout: 1 });
  });

  const pool = (app: string, opts: { max: number; statementTimeoutMs: number }) => {
    const sql = createSql({
      url,
      maxConnections: opts.max,
      connectTimeoutS: 5,
      queryTimeoutMs: opts.statementTimeoutMs,
      applicationName: app,
    });
    pools.push(sql);
    return sql;
  };
  /** Statements of `app` the server is still running (or waiting on a lock for). */
  const running = async (app: string) =>
    (
      await admin<{ n: number }[]>`
        SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = ${app} AND state = 'active'`
    )[0]!.n;
  const goneWithin = async (app: string, ms: number): Promise<number> => {
    const t0 = Date.now();
    while ((await running(app)) > 0) {
      if (Date.now() - t0 > ms) return -1;
      await new Promise((r) => setTimeout(r, 20));
    }
    return Date.now() - t0;
  };

  it('a query blocked on a lock is gone from pg_stat_activity right after its timeout (not at statement_timeout)', async () => {
    const app = `cancel-${randomUUID().slice(0, 8)}`;
    // The server-side backstop is far away: only the client's cancel can end the query in time.
    const sql = pool(app, { max: 2, statementTimeoutMs: 30_000 });
    const t0 = Date.now();
    await expect(withTimeout(sql`UPDATE lockme SET v = v + 1 WHERE id = 1`, 500, 'blocked update')).rejects.toBeInstanceOf(TimeoutError);
    expect(Date.now() - t0).toBeLessThan(2000);
    const ms = await goneWithin(app, 2000);
    console.log(`blocked query left pg_stat_activity ${ms} ms after its client timeout`);
    expect(ms).toBeGreaterThanOrEqual(0);
    // The connection is usable at once.
    expect(await withTimeout(sql`SELECT 1 AS one`, 1000, 'next query')).toEqual([{ one: 1 }]);
  });

  it('a query still queued in the driver when it times out never runs', async () => {
    const app = `queued-${randomUUID().slice(0, 8)}`;
    // The server's statement_timeout must be far from the client's 1 s deadline: at 1 s each, the
    // server's cancel sometimes won the race and the blocked query failed with its error instead.
    const sql = pool(app, { max: 1, statementTimeoutMs: 10_000 });
    const blocked = withTimeout(sql`UPDATE lockme SET v = v + 1 WHERE id = 1`, 1000, 'blocked update');
    // Queued behind the blocked one (one connection).
    const queued = withTimeout(sql`UPDATE lockme SET v = v + 10 WHERE id = 1`, 1000, 'queued update');
    await expect(blocked).rejects.toBeInstanceOf(TimeoutError);
    await expect(queued).rejects.toBeInstanceOf(TimeoutError);
    // Without the cancel, the queued update starts once the first one fails and blocks on the lock.
    await new Promise((r) => setTimeout(r, 300));
    expect(await running(app)).toBe(0);
  });

  it('a gateway request that times out frees its request-gate slot at once', async () => {
    const app = `gate-${randomUUID().slice(0, 8)}`;
    const sql = pool(app, { max: 2, statementTimeoutMs: 30_000 });
    await migrate(sql);
    const user = randomUUID();
    await admin`INSERT INTO users (id, name) VALUES (${user}, 'before')`;
    const lock = await admin.reserve();
    try {
      await lock`BEGIN`;
      await lock`UPDATE users SET name = 'locked' WHERE id = ${user}`;
      const store = createChatStore({
        sql,
        queryTimeoutMs: 500,
        maxRoomMembers: 100,
        largeRoomMembers: 50,
        maxPageBytes: 1024 * 1024,
        outboxMode: 'table',
        // One slot: the blocked request holds it until it is cancelled.
        gate: new Semaphore(1, 10),
        sendBatch: { maxBatch: 10, maxInFlight: 1, maxQueued: 10 },
      });
      await expect(store.upsertUser(user, 'after')).rejects.toMatchObject({ code: 'unavailable' } satisfies Partial<AppError>);
      const t0 = Date.now();
      await store.ping();
      const waited = Date.now() - t0;
      console.log(`next request got the gate slot ${waited} ms after the timeout`);
      expect(waited).toBeLessThan(400);
      expect(await goneWithin(app, 1000)).toBeGreaterThanOrEqual(0);
    } finally {
      await lock`ROLLBACK`.catch(() => {});
      lock.release();
    }
  });
});
