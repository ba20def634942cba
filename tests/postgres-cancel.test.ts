/**
 * Cancelling a timed-out query must never hand another query its answer (common/timeout.ts,
 * cancellableNow). postgres.js 3.4 pipelines queries on a connection; cancelling one that waits in
 * that pipeline makes the connection answer each later query with the previous one's result. That
 * is how a send was once acknowledged and never stored (tests/own-order-under-refusals.test.ts, a
 * 1-in-20 failure): its batch resolved with the rows of the batch before it.
 */
import { randomUUID } from 'node:crypto';
import net from 'node:net';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPostgres, type PostgresServer } from './harness/postgres.js';
import { createSql, type Sql as DbSql } from '../common/db.js';
import { Semaphore } from '../common/semaphore.js';
import { TimeoutError, withTimeout } from '../common/timeout.js';
import { createChatStore } from '../gateway/chat-store.js';
import { migrate } from '../sql/migrate.js';
import { freshDatabase } from './harness/server.js';

type Sql = ReturnType<typeof postgres>;

describe('a timed-out query on a pipelined connection (real PostgreSQL)', () => {
  let pg: PostgresServer;
  let sql: Sql;
  beforeAll(async () => {
    pg = await startPostgres();
  });
  afterAll(() => pg?.stop());

  /** One connection; each statement prepared once first, as a busy gateway's are. */
  async function connect(): Promise<{
    slow: (v: number, s: number) => postgres.PendingQuery<{ v: number }[]>;
    fast: (v: number) => postgres.PendingQuery<{ v: number }[]>;
  }> {
    sql = postgres(pg.url, { max: 1, onnotice: () => {} });
    const slow = (v: number, s: number) => sql<{ v: number }[]>`SELECT ${v}::int AS v, pg_sleep(${s}) AS z`;
    const fast = (v: number) => sql<{ v: number }[]>`SELECT ${v}::int AS v`;
    await slow(0, 0);
    await fast(0);
    return { slow, fast };
  }
  const value = (rows: { v: number }[]) => rows.map((r) => r.v);
  /** Every query settles within `ms`, or says it hung. */
  const settled = (qs: Array<Promise<{ v: number }[]>>, ms = 5000) =>
    Promise.all(
      qs.map((q) =>
        Promise.race([
          q.then(value, (err: Error) => (err instanceof TimeoutError ? 'timeout' : ((err as { code?: string }).code ?? err.message))),
          new Promise<string>((r) => setTimeout(() => r('hung'), ms)),
        ]),
      ),
    );

  /** q1 runs for 0.3 s; q2, q3 and q4 are written to the connection behind it (the driver writes on the next turn). */
  async function fourInPipeline() {
    const { slow, fast } = await connect();
    const qs = [slow(1, 0.3).execute(), fast(2).execute(), fast(3).execute(), fast(4).execute()] as const;
    await new Promise((r) => setTimeout(r, 20));
    return qs;
  }

  it('the queries behind one that timed out while waiting in the pipeline each get their own answer', async () => {
    const [q1, q2, q3, q4] = await fourInPipeline();
    // q2 waits in the pipeline and times out there.
    expect((q2 as unknown as { state: unknown }).state).toBeTruthy();
    const timedOut = withTimeout(q2, 50, 'q2');
    expect(await settled([q1, timedOut, q3, q4])).toEqual([[1], 'timeout', [3], [4]]);
    // Not cancelled: it ran, and its own promise settled with its own answer.
    expect(await settled([q2])).toEqual([[2]]);
    await sql.end({ timeout: 1 });
  });

  it('the running query that timed out is cancelled on the server; the ones behind it get their own answers', async () => {
    const { slow, fast } = await connect();
    const t0 = Date.now();
    const q1 = slow(1, 5).execute();
    const q2 = fast(2).execute();
    expect(await settled([withTimeout(q1, 100, 'q1'), q2])).toEqual(['timeout', [2]]);
    expect(await settled([q1])).toEqual(['57014']);
    // Cancelled, not waited out: the 5 s sleep did not hold the connection.
    expect(Date.now() - t0).toBeLessThan(4000);
    await sql.end({ timeout: 1 });
  });

  it('a cancel request the server refuses (it is restarting) is no unhandled rejection', async () => {
    // The query's own connection goes through a forwarder that then stops accepting, so the
    // driver's cancel request (a connection of its own) is refused while the query still runs.
    const forwarder = net.createServer((client) => {
      const upstream = net.connect(pg.port, '127.0.0.1');
      client.pipe(upstream).pipe(client);
      const close = () => {
        client.destroy();
        upstream.destroy();
      };
      client.on('error', close);
      upstream.on('error', close);
    });
    await new Promise<void>((r) => forwarder.listen(0, '127.0.0.1', r));
    const port = (forwarder.address() as net.AddressInfo).port;
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    const viaForwarder = postgres(pg.url.replace(`:${pg.port}/`, `:${port}/`), { max: 1, onnotice: () => {} });
    try {
      await viaForwarder`SELECT 1`;
      const q = viaForwarder`SELECT pg_sleep(1) AS z`.execute();
      await new Promise((r) => setTimeout(r, 50));
      forwarder.close();
      await expect(withTimeout(q, 100, 'q')).rejects.toBeInstanceOf(TimeoutError);
      // The sleep ends on its own (the cancel never arrived); the refused cancel had time to settle.
      await q.catch(() => {});
      await new Promise((r) => setTimeout(r, 200));
      expect(unhandled.map((e) => (e as { code?: string }).code ?? String(e))).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
      await viaForwarder.end({ timeout: 1 });
      forwarder.close();
    }
  });

  it('the driver still drops the promise of its cancel request (when this fails, upstream fixed it: cancelQuietly may call cancel())', async () => {
    sql = postgres(pg.url, { max: 1, onnotice: () => {} });
    const q = sql`SELECT 1`;
    const canceller = (q as unknown as { canceller: unknown }).canceller;
    expect(typeof canceller).toBe('function');
    expect(q.cancel()).toBeNull();
    await q.catch(() => {});
    await sql.end({ timeout: 1 });
  });

  it('the driver still has the bug this guards against (when this fails, upstream fixed it: the guard may go)', async () => {
    const [q1, q2, q3, q4] = await fourInPipeline();
    void q2.cancel();
    // q3 answered with q2's row, q4 with q3's; q2 itself never settles.
    expect(await settled([q1, q2, q3, q4], 2000)).toEqual([[1], 'hung', [2], [3]]);
    await sql.end({ timeout: 1 });
  });
});

describe('the send batch takes only its own answer', () => {
  it('rows that name another send are refused (internal, retriable), not acknowledged', async () => {
    const url = await freshDatabase();
    const sql = createSql({ url, maxConnections: 2, connectTimeoutS: 5, queryTimeoutMs: 5000, applicationName: 'send-batch-check' });
    try {
      await migrate(sql);
      // The driver bug's effect, reproduced: the batch statement resolves with another batch's rows.
      let lie = false;
      const lying = Object.assign((strings: TemplateStringsArray, ...args: unknown[]) => {
        const q = (sql as unknown as (s: TemplateStringsArray, ...a: unknown[]) => Promise<Array<Record<string, unknown>>>)(
          strings,
          ...args,
        );
        if (!lie || !strings.join('').includes('realchat_send_batch')) return q;
        return q.then((rows) => rows.map((r) => ({ ...r, idempotency_key: `other-${String(r.idempotency_key)}` })));
      }, sql) as unknown as DbSql;
      const store = createChatStore({
        sql: lying,
        queryTimeoutMs: 5000,
        maxRoomMembers: 100,
        largeRoomMembers: 50,
        maxPageBytes: 1024 * 1024,
        outboxMode: 'table',
        gate: new Semaphore(4, 10),
        sendBatch: { maxBatch: 10, maxInFlight: 1, maxQueued: 10 },
      });
      const user = randomUUID();
      await store.upsertUser(user, 'u');
      const conv = await store.createConversation(user, [], null, null);
      const send = (key: string) => store.sendMessage(user, conv.conversation_id, key, { key }, 10, null);
      await expect(send('k1')).resolves.toMatchObject({ duplicate: false });
      lie = true;
      await expect(send('k2')).rejects.toMatchObject({ code: 'internal' });
      lie = false;
      // The retry with the same key is answered from what is stored.
      await expect(send('k2')).resolves.toMatchObject({ envelope: { idempotency_key: 'k2' } });
    } finally {
      await sql.end({ timeout: 1 });
    }
  });
});
