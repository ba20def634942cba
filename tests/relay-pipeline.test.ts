/**
 * The relay pipelines a batch's outbox delete with the next batch's poll and publish
 * (relay/outbox-relay.ts): a delete held up (here by a row lock another session holds on one of
 * the published rows) no longer holds up the publication of what was committed meanwhile. The
 * delete of the held batch lands later; nothing is published twice while it waits, nothing is
 * lost, and the bus sees every row once in id order. A delete that fails (lock_timeout on the
 * lock) only re-publishes its rows: duplicates, never a loss.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import { createSql, type Sql } from '../common/db.js';
import { migrate } from '../sql/migrate.js';
import { createOutboxRelay, type OutboxRelay } from '../relay/outbox-relay.js';
import { createLogger } from '../common/log.js';
import { createMetrics } from '../common/metrics.js';
import type { EventBus } from '../common/bus.js';
import type { EventRecord } from '../common/events.js';
import { freshDatabase } from './harness/server.js';
import { until } from './harness/until.js';

describe('relay pipeline: a slow delete does not hold up the next publish', () => {
  let sql: Sql;
  let locker: Sql;
  let relay: OutboxRelay | null = null;
  let url = '';
  let extraSql: Sql | null = null;
  beforeAll(async () => {
    url = await freshDatabase();
    const opts = { url, connectTimeoutS: 5, queryTimeoutMs: 10_000 };
    sql = createSql({ ...opts, maxConnections: 4, applicationName: 'relay-pipeline' });
    locker = createSql({ ...opts, maxConnections: 1, applicationName: 'relay-pipeline-locker' });
    await migrate(sql);
  });
  afterAll(async () => {
    await extraSql?.end({ timeout: 5 });
    await locker?.end({ timeout: 5 });
    await sql?.end({ timeout: 5 });
  });

  const conv = randomUUID();
  /**
   * Commits `n` rows in one statement. One commit matters: rows committed one by one can be polled
   * part-way (on a loaded machine), and a batch's publish waits for the previous batch's delete, so
   * the rest would wait for the lock the test holds.
   */
  async function insert(n: number): Promise<string[]> {
    const ids = Array.from({ length: n }, () => randomUUID());
    await sql`INSERT INTO outbox (event_id, aggregateid, type, payload)
              SELECT e, ${conv}, 'message.created', jsonb_build_object('i', i)
              FROM unnest(${ids}::uuid[]) WITH ORDINALITY AS x(e, i) ORDER BY i`;
    return ids;
  }
  const outboxIds = async () => (await sql<{ event_id: string }[]>`SELECT event_id FROM outbox ORDER BY id`).map((r) => r.event_id);

  /** Another session locks the row of `eventId` until released: deletes of it wait. */
  async function lockRow(eventId: string): Promise<() => Promise<void>> {
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    let locked!: () => void;
    const lockTaken = new Promise<void>((r) => (locked = r));
    const holder = locker.begin(async (tx) => {
      await tx`SELECT id FROM outbox WHERE event_id = ${eventId} FOR UPDATE`;
      locked();
      await released;
    });
    await Promise.race([lockTaken, holder]);
    return async () => {
      release();
      await holder;
    };
  }

  afterEach(async () => {
    await relay?.stop();
    relay = null;
    await unlock?.();
    unlock = null;
    await sql`DELETE FROM outbox`;
  });
  let unlock: (() => Promise<void>) | null = null;

  function startRelay(queryTimeoutMs: number, relaySql: Sql = sql): { published: EventRecord[]; relay: OutboxRelay } {
    const published: EventRecord[] = [];
    const bus: EventBus = {
      async publish(records) {
        published.push(...records);
      },
      subscribe() {},
      async close() {},
    };
    const r = createOutboxRelay({
      sql: relaySql,
      bus,
      log: createLogger({ level: 'silent', nodeId: 'relay-pipeline', role: 'relay' }),
      metrics: createMetrics({ nodeId: 'relay-pipeline' }),
      batchSize: 5,
      pollMs: 20,
      lingerMs: 0,
      queryTimeoutMs,
    });
    relay = r;
    r.start();
    return { published, relay: r };
  }

  it('publishes rows committed while the previous batch delete waits on a lock; the delete lands afterwards', async () => {
    const first = await insert(3);
    // Another session locks the first row: the relay's delete of the batch holding it has to wait.
    unlock = await lockRow(first[0]!);
    const { published, relay: r } = startRelay(10_000);
    await until('first batch published', () => published.length >= 3, 5000);
    // The delete of the first batch is blocked now; the next batch (up to batchSize rows) must still
    // go out. (Its own delete then waits for the first one: one delete in flight at a time.)
    const later = await insert(4);
    await until('rows committed during the blocked delete published', () => published.length >= 7, 5000);
    expect(published.map((p) => p.eventId)).toEqual([...first, ...later]);
    // The first batch's delete is still waiting: its rows are in the table, not published twice.
    expect((await outboxIds()).slice(0, 3)).toEqual(first);

    await unlock();
    unlock = null;
    await until('outbox empty', async () => (await outboxIds()).length === 0, 5000);
    await r.idle();
    expect(published.map((p) => p.eventId)).toEqual([...first, ...later]);
  });

  it('a delete that fails re-publishes its rows (duplicates, no loss), in order after the first copies', async () => {
    const first = await insert(2);
    unlock = await lockRow(first[0]!);
    // The relay's deletes give up after 300 ms on the lock (lock_timeout: polls take no lock, so
    // only the delete fails, whatever the load on the machine).
    const [row] = await sql<{ db: string }[]>`SELECT current_database() AS db`;
    await sql.unsafe(`ALTER DATABASE "${row!.db}" SET lock_timeout = '300ms'`);
    const relaySql = createSql({ url, connectTimeoutS: 5, queryTimeoutMs: 10_000, maxConnections: 2, applicationName: 'relay-pipeline-2' });
    extraSql = relaySql;
    const { published } = startRelay(10_000, relaySql);
    await until('first batch published', () => published.length >= 2, 5000);
    const later = await insert(3);
    await until('later rows published', () => published.filter((p) => later.includes(p.eventId)).length === 3, 5000);
    // Let the timed-out delete be seen, then free the lock: the first rows go out again.
    await new Promise((res) => setTimeout(res, 600));
    await unlock();
    unlock = null;
    await until('outbox empty', async () => (await outboxIds()).length === 0, 10_000);
    const ids = published.map((p) => p.eventId);
    for (const id of [...first, ...later]) expect(ids).toContain(id);
    expect(ids.filter((id) => id === first[0]).length).toBeGreaterThanOrEqual(2);
    // First copies are in commit order.
    const firstSeen = [...new Set(ids)];
    expect(firstSeen).toEqual([...first, ...later]);
  });
});
