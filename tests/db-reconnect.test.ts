/**
 * After a PostgreSQL outage a role's pool reconnects at once, not after postgres.js' default
 * backoff (3^n/100 s, up to 20 s), which grew during the outage and held every role back for
 * 5-20 s after the database was up again (docs/chaos.md, finding 14).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSql, reconnectDelayS, type Sql } from '../common/db.js';
import { withTimeout } from '../common/timeout.js';
import { startPostgres, type PostgresServer } from './harness/postgres.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('reconnecting after a database outage (real PostgreSQL)', () => {
  let pg: PostgresServer;
  let sql: Sql;
  beforeAll(async () => {
    pg = await startPostgres();
    sql = createSql({ url: pg.url, maxConnections: 2, connectTimeoutS: 2, queryTimeoutMs: 2000, applicationName: 'reconnect-test' });
  });
  afterAll(async () => {
    await sql?.end({ timeout: 1 }).catch(() => {});
    pg?.stop();
  });

  it('the delay between attempts stays at most 1 s however many failed', () => {
    for (const r of [0, 1, 5, 10, 50]) {
      expect(reconnectDelayS(r, () => 0.999)).toBeLessThanOrEqual(1);
      expect(reconnectDelayS(r, () => 0)).toBeGreaterThan(0);
    }
  });

  it('queries succeed within about a second of the server accepting connections again, after 8 s of failed attempts', async () => {
    await sql`SELECT 1`;
    pg.kill();
    let failures = 0;
    const until = Date.now() + 8000;
    while (Date.now() < until) {
      await withTimeout(sql`SELECT 1`, 1000, 'probe').catch(() => failures++);
      await sleep(50);
    }
    expect(failures).toBeGreaterThan(10);
    pg.restart(); // returns once the server accepts connections
    const back = Date.now();
    let ok = false;
    while (!ok && Date.now() - back < 30_000) {
      ok = await withTimeout(sql`SELECT 1`, 1000, 'probe').then(
        () => true,
        () => false,
      );
    }
    const tookMs = Date.now() - back;
    expect(ok).toBe(true);
    // postgres.js' own backoff would be 3.6-20 s by now; ours is at most 1 s (plus a probe's timeout).
    expect(tookMs).toBeLessThan(3000);
  });
});
