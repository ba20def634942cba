/**
 * withTimeout's deadline cannot be faked by a blocked event loop (common/timeout.ts): an answer that
 * reached the socket before the deadline, while the loop was busy past it, is an answer; a query
 * that does not answer in time still times out near the deadline, and is still called off.
 */
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TimeoutError, withTimeout } from '../common/timeout.js';
import { freshDatabase } from './harness/server.js';
import { blockLoop } from './harness/block-loop.js';

/** The race every deadline used to be: a plain timer against the work. */
function plainTimerRace<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TimeoutError(`timed out after ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

describe('deadlines wait for the turn that read the answer (real PostgreSQL)', () => {
  let sql: postgres.Sql;
  let other: postgres.Sql;
  beforeAll(async () => {
    const url = await freshDatabase();
    sql = postgres(url, { max: 1, onnotice: () => {} });
    other = postgres(url, { max: 1, onnotice: () => {} });
    await Promise.all([sql`SELECT 1`, other`SELECT 1`]);
  });
  afterAll(async () => {
    await sql?.end({ timeout: 1 });
    await other?.end({ timeout: 1 });
  });

  /**
   * Blocks the loop in a socket callback, as a gateway's long turns are (a WebSocket message read):
   * Node (libuv 1.45+) then runs due timers before its next socket reads. A block in a timer
   * callback would not show it, since the reads come first there. The round trip on the other
   * connection also lets the driver write the query under test first.
   */
  async function sentThenBlocked(ms: number): Promise<void> {
    await other`SELECT 1`;
    blockLoop(ms);
  }

  // Each query answers ~50 ms after it is sent, while the loop is blocked for 1 s (the server has
  // that long to answer on a busy machine): the answer is in the socket when the loop is free, and
  // the 150 ms deadline has long passed.
  it('a plain timer reports a query answered behind a blocked loop as a timeout (why ours exists)', async () => {
    const plain = plainTimerRace(sql`SELECT pg_sleep(0.05), 1 AS one`, 150);
    await sentThenBlocked(1000);
    await expect(plain).rejects.toBeInstanceOf(TimeoutError);
    await sql`SELECT 1`; // the abandoned query's answer is read before the next test
  });

  it('withTimeout returns its rows', async () => {
    const ours = withTimeout(sql`SELECT pg_sleep(0.05), 2 AS two`, 150, 'select');
    await sentThenBlocked(1000);
    expect((await ours)[0]?.two).toBe(2);
  });

  it('a query that runs past its deadline still times out near it, and is cancelled on the server', async () => {
    let calledOff = 0;
    const t0 = performance.now();
    await expect(withTimeout(sql`SELECT pg_sleep(5)`, 150, 'sleep', () => calledOff++)).rejects.toThrow('sleep timed out after 150 ms');
    const took = performance.now() - t0;
    expect(took).toBeGreaterThanOrEqual(145);
    expect(took).toBeLessThan(2000);
    expect(calledOff).toBe(1);
    // Cancelled, not left running: the one connection answers the next query long before 5 s.
    const t1 = performance.now();
    expect((await sql`SELECT 3 AS three`)[0]?.three).toBe(3);
    expect(performance.now() - t1).toBeLessThan(2000);
  });
});
