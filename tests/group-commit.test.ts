/**
 * Group commit of sends: the batching queue (unit, with a fake writer) and the batch statement's
 * rules against a real PostgreSQL (sql/migrations/0004_send_batch.sql), including the race in which
 * a concurrent transaction commits the same idempotency key between the check and the insert.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import postgres from 'postgres';
import { GroupCommit } from '../gateway/group-commit.js';
import { createSql, type Sql } from '../common/db.js';
import { migrate } from '../sql/migrate.js';
import { deleteOutboxRows } from '../common/outbox.js';
import { freshDatabase } from './harness/server.js';

const tick = () => new Promise((r) => setImmediate(r));

describe('GroupCommit (queue)', () => {
  function fakeWriter() {
    const calls: number[][] = [];
    const release: Array<() => void> = [];
    return {
      calls,
      release,
      write: (items: number[]) =>
        new Promise<number[]>((resolve) => {
          calls.push(items);
          release.push(() => resolve(items.map((x) => x * 10)));
        }),
    };
  }

  it('writes the first item at once, and what arrives meanwhile as one batch; each caller gets its own result', async () => {
    const w = fakeWriter();
    const gc = new GroupCommit<number, number>({ write: w.write, maxBatch: 100, maxInFlight: 1, maxQueued: 100 });
    const first = gc.submit(1).result;
    const rest = [2, 3, 4].map((x) => gc.submit(x).result);
    await tick();
    expect(w.calls).toEqual([[1]]);
    w.release[0]!();
    expect(await first).toBe(10);
    await tick();
    expect(w.calls).toEqual([[1], [2, 3, 4]]);
    w.release[1]!();
    expect(await Promise.all(rest)).toEqual([20, 30, 40]);
  });

  it('bounds batch size, batches in flight and the queue; refuses beyond the queue with unavailable', async () => {
    const w = fakeWriter();
    const gc = new GroupCommit<number, number>({ write: w.write, maxBatch: 2, maxInFlight: 2, maxQueued: 3 });
    const rs = [1, 2, 3, 4, 5].map((x) => gc.submit(x).result);
    await tick();
    // Two writers were free: the first two sends went out alone; the rest wait.
    expect(w.calls).toEqual([[1], [2]]);
    expect(gc.queued).toBe(3);
    await expect(Promise.all([gc.submit(6).result, gc.submit(7).result])).rejects.toMatchObject({ code: 'unavailable' });
    for (let i = 0; i < 4; i++) {
      w.release[i]!();
      await tick();
      await tick();
    }
    expect(w.calls).toEqual([[1], [2], [3, 4], [5]]);
    expect(await Promise.all(rs)).toEqual([10, 20, 30, 40, 50]);
  });

  it('a batch beyond the first in flight starts only when extraWriterAt items wait; the first batch never waits', async () => {
    const w = fakeWriter();
    const gc = new GroupCommit<number, number>({ write: w.write, maxBatch: 100, maxInFlight: 2, maxQueued: 100, extraWriterAt: 3 });
    const rs = [gc.submit(1).result];
    await tick();
    expect(w.calls).toEqual([[1]]);
    rs.push(gc.submit(2).result, gc.submit(3).result);
    await tick();
    // A writer is free, but two waiting sends do not pay a statement of their own.
    expect(w.calls).toEqual([[1]]);
    rs.push(gc.submit(4).result);
    await tick();
    expect(w.calls).toEqual([[1], [2, 3, 4]]);
    rs.push(gc.submit(5).result);
    w.release[0]!();
    await tick();
    await tick();
    // [1] is done but [2, 3, 4] is still in flight: 5 alone is below the mark and waits for it.
    expect(w.calls).toEqual([[1], [2, 3, 4]]);
    w.release[1]!();
    await tick();
    await tick();
    // Nothing in flight: the first batch starts whatever waits.
    expect(w.calls).toEqual([[1], [2, 3, 4], [5]]);
    w.release[2]!();
    expect(await Promise.all(rs)).toEqual([10, 20, 30, 40, 50]);
  });

  it('items with the same key never share a batch; order is kept', async () => {
    const w = fakeWriter();
    const gc = new GroupCommit<number, number>({ write: w.write, maxBatch: 10, maxInFlight: 1, maxQueued: 10, key: (x) => String(x % 3) });
    const rs = [1, 2, 4, 5, 7, 3].map((x) => gc.submit(x).result);
    await tick();
    expect(w.calls).toEqual([[1]]);
    for (let i = 0; i < 3; i++) {
      w.release[i]!();
      await tick();
      await tick();
    }
    expect(w.calls).toEqual([[1], [2, 4, 3], [5, 7]]);
    expect(await Promise.all(rs)).toEqual([10, 20, 40, 50, 70, 30]);
  });

  it('an item withdrawn before its batch starts is not written; a failed batch fails its items; a retriable failure is written once more', async () => {
    const w = fakeWriter();
    const gc = new GroupCommit<number, number>({ write: w.write, maxBatch: 10, maxInFlight: 1, maxQueued: 10 });
    const a = gc.submit(1).result;
    const b = gc.submit(2);
    b.abandon();
    const c = gc.submit(3).result;
    await tick();
    w.release[0]!();
    await a;
    await tick();
    expect(w.calls).toEqual([[1], [3]]);
    w.release[1]!();
    expect(await c).toBe(30);
    void b.result.catch(() => {});

    let attempts = 0;
    const flaky = new GroupCommit<number, number>({
      write: async (items) => {
        if (++attempts === 1) throw Object.assign(new Error('deadlock'), { code: '40P01' });
        return items;
      },
      maxBatch: 10,
      maxInFlight: 1,
      maxQueued: 10,
      retryOnce: (err) => (err as { code?: string }).code === '40P01',
    });
    expect(await flaky.submit(5).result).toBe(5);
    const broken = new GroupCommit<number, number>({
      write: async () => Promise.reject(new Error('down')),
      maxBatch: 10,
      maxInFlight: 1,
      maxQueued: 10,
    });
    await expect(Promise.all([broken.submit(1).result, broken.submit(2).result])).rejects.toThrow('down');
  });

  it('a batch failed by one of its items (splitOn) is written again item by item: only that item fails', async () => {
    const calls: number[][] = [];
    let hold: (() => void) | null = null;
    const gc = new GroupCommit<number, number>({
      write: async (items) => {
        calls.push(items);
        // The first batch is held so the next three queue up and share one.
        if (calls.length === 1) await new Promise<void>((r) => (hold = r));
        if (items.includes(13)) throw Object.assign(new Error('homed elsewhere'), { code: 'RCH01' });
        return items.map((x) => x * 10);
      },
      maxBatch: 10,
      maxInFlight: 1,
      maxQueued: 10,
      splitOn: (err) => (err as { code?: string }).code === 'RCH01',
    });
    const first = gc.submit(1).result;
    const rest = [12, 13, 14].map((x) => gc.submit(x).result);
    await tick();
    hold!();
    expect(await first).toBe(10);
    const settled = await Promise.allSettled(rest);
    expect(settled.map((r) => (r.status === 'fulfilled' ? r.value : (r.reason as { code: string }).code))).toEqual([120, 'RCH01', 140]);
    expect(calls).toEqual([[1], [12, 13, 14], [12], [13], [14]]);
  });
});

describe('realchat_send_batch (PostgreSQL)', () => {
  let url: string;
  let sql: Sql;
  beforeAll(async () => {
    url = await freshDatabase();
    sql = createSql({ url, maxConnections: 4, connectTimeoutS: 5, queryTimeoutMs: 10_000, applicationName: 'group-commit-test' });
    await migrate(sql);
  });
  afterAll(async () => sql?.end());

  async function conversation(members: string[], db: Sql = sql): Promise<string> {
    const id = randomUUID();
    await db`INSERT INTO conversations (id, created_by) VALUES (${id}, ${members[0]!})`;
    for (const u of members) await db`INSERT INTO members (conversation_id, user_id) VALUES (${id}, ${u})`;
    return id;
  }
  const item = (i: number, c: string, s: string, k: string, p: unknown) => ({ i, c, s, k, p, b: JSON.stringify(p).length, t: null });
  const send = (conn: postgres.Sql | Sql, items: unknown[]) =>
    conn<
      Array<{ idx: number; status: string; sequence: number | null }>
    >`SELECT idx, status, sequence FROM realchat_send_batch(${JSON.stringify(items)}::text::jsonb)`;

  it('answers each send by its own rule; sequences per conversation follow arrival order, gap-free; one outbox event per new message', async () => {
    const [a, b, stranger] = [randomUUID(), randomUUID(), randomUUID()];
    const c1 = await conversation([a, b]);
    const c2 = await conversation([a]);
    await send(sql, [item(0, c1, a, 'old', { v: 0 })]);
    const rows = await send(sql, [
      item(0, c1, b, 'k1', 'x'),
      item(1, c2, a, 'k2', 'y'),
      item(2, c1, a, 'k3', 'z'),
      item(3, c1, a, 'old', { v: 0 }),
      item(4, c1, a, 'old', { v: 1 }),
      item(5, c1, stranger, 'k4', 'w'),
      item(6, randomUUID(), a, 'k5', 'v'),
    ]);
    const byIdx = Object.fromEntries(rows.map((r) => [r.idx, [r.status, r.sequence]]));
    expect(byIdx).toEqual({
      0: ['created', 2],
      1: ['created', 1],
      2: ['created', 3],
      3: ['duplicate', 1],
      4: ['conflict', 1],
      5: ['not_member', null],
      6: ['not_found', null],
    });
    const [last] = await sql<{ s1: number; s2: number; events: number }[]>`
      SELECT (SELECT last_seq::int FROM conversations WHERE id = ${c1}) AS s1, (SELECT last_seq::int FROM conversations WHERE id = ${c2}) AS s2,
             (SELECT count(*)::int FROM outbox WHERE aggregateid IN (${c1}, ${c2}) AND type = 'message.created') AS events`;
    expect(last).toEqual({ s1: 3, s2: 1, events: 4 });
    // Sending is reading: b's #2 read a's #1, a's #3 read b's #2 (in this very batch): a receipt
    // each, on the message's own event (v1.5). a's first send and its send in c2 read nobody else's
    // message: none. No conversation.read event of its own any more.
    const receipts = await sql<{ c: string; n: number; receipt: { event_id: string; user_id: string; read_sequence: number } | null }[]>`
      SELECT aggregateid AS c, (payload->'message'->>'sequence_number')::int AS n, payload->'receipt' AS receipt FROM outbox
      WHERE aggregateid IN (${c1}, ${c2}) AND type = 'message.created' ORDER BY aggregateid = ${c2}, n`;
    expect(receipts.map((r) => [r.c, r.n, r.receipt && [r.receipt.user_id, r.receipt.read_sequence]])).toEqual([
      [c1, 1, null],
      [c1, 2, [b, 2]],
      [c1, 3, [a, 3]],
      [c2, 1, null],
    ]);
    expect(receipts.filter((r) => r.receipt).every((r) => /^[0-9a-f-]{36}$/.test(r.receipt!.event_id))).toBe(true);
    const separate = await sql`SELECT 1 FROM outbox WHERE aggregateid IN (${c1}, ${c2}) AND type = 'conversation.read'`;
    expect(separate.count).toBe(0);
  });

  it('a JSON null payload is a value: stored as jsonb null, and the same send again is a duplicate, not a conflict', async () => {
    const a = randomUUID();
    const c = await conversation([a]);
    const first = await send(sql, [item(0, c, a, 'null-p', null)]);
    expect(first.map((r) => r.status)).toEqual(['created']);
    const again = await send(sql, [item(0, c, a, 'null-p', null), item(1, c, a, 'other', null)]);
    expect(again.map((r) => [r.status, r.sequence])).toEqual([
      ['duplicate', 1],
      ['created', 2],
    ]);
    const [row] = await sql<{ t: string }[]>`SELECT jsonb_typeof(payload) AS t FROM messages WHERE conversation_id = ${c} AND sequence = 1`;
    expect(row!.t).toBe('null');
  });

  it('published outbox rows are deleted by id in one relaxed-durability transaction; anything but integer ids is refused', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const [r] = await sql<{ id: string }[]>`
        INSERT INTO outbox (event_id, aggregateid, type, payload) VALUES (${randomUUID()}, 'c', 'test.event', '{}') RETURNING id::text AS id`;
      ids.push(r!.id);
    }
    expect(await deleteOutboxRows(sql, ids.slice(0, 2), 5000)).toBe(true);
    const left = await sql<{ id: string }[]>`SELECT id::text AS id FROM outbox WHERE id = ANY(${ids}::bigint[])`;
    expect(left.map((r) => r.id)).toEqual([ids[2]]);
    await expect(deleteOutboxRows(sql, ['1); DROP TABLE outbox; --'], 5000)).rejects.toThrow('not an integer');
    // The relaxed setting is local to that transaction: the session keeps durable commits.
    const [setting] = await sql<{ s: string }[]>`SELECT current_setting('synchronous_commit') AS s`;
    expect(setting!.s).toBe('on');
    await deleteOutboxRows(sql, [ids[2]!], 5000);
  });

  /** The plans a new session makes for the function's statements (auto_explain), for one send per conversation. */
  async function plansOfOneBatch(dbUrl: string, convs: string[], senders: string[], tag: string): Promise<string[]> {
    const plans: string[] = [];
    const probe = postgres(dbUrl, { max: 1, onnotice: (n) => plans.push(String(n.message)) });
    try {
      await probe`LOAD 'auto_explain'`;
      await probe`SET auto_explain.log_min_duration = 0`;
      await probe`SET auto_explain.log_nested_statements = on`;
      await probe`SET client_min_messages = log`;
      const rows = await send(
        probe,
        convs.map((c, i) => item(i, c, senders[i]!, `${tag}-${i}`, 'x')),
      );
      expect(rows.map((r) => r.status)).toEqual(convs.map(() => 'created'));
    } finally {
      await probe.end();
    }
    return plans;
  }
  const tableScans = (plans: string[]) =>
    plans.filter((p) => /Seq Scan on (conversations|members|messages|user_conversation_state)\b/.test(p));

  it('locks and reads every row of a batch by index: no statement of the function scans a whole table, whatever its size', async () => {
    // A generic plan guesses 100 ids per batch; against a small table that guess made the lock
    // statement hash them against a sequential scan of conversations (below 20,000-30,000 rows),
    // so every batch read the whole table. Thousands of rows are enough to show it.
    const users = Array.from({ length: 4 }, () => randomUUID());
    await sql`INSERT INTO conversations (id, created_by) SELECT gen_random_uuid(), ${users[0]!} FROM generate_series(1, 5000)`;
    const convs = [await conversation(users.slice(0, 2)), await conversation(users.slice(1, 3)), await conversation(users.slice(2, 4))];
    await sql`ANALYZE conversations`;
    const plans = await plansOfOneBatch(url, convs, users.slice(1), 'plan');
    const lock = plans.find((p) => /FOR UPDATE/.test(p) && /jsonb_array_elements\(batch\)/.test(p));
    expect(lock, 'the lock statement was planned and logged').toBeDefined();
    expect(lock).toMatch(/Index Scan using conversations_pkey/);
    expect(tableScans(plans)).toEqual([]);
  });

  it('a session that plans while the tables are tiny still looks sends up by index: its plans are kept as the tables grow', async () => {
    // The function plans once per session. Planned against a few analyzed rows, the idempotency
    // lookup and the receipt check read the whole of messages, and the plan stayed until the next
    // ANALYZE: sends took seconds and timed out as the table grew (perf/README.md, "Tenth round").
    const tinyUrl = await freshDatabase();
    const tiny = createSql({
      url: tinyUrl,
      maxConnections: 2,
      connectTimeoutS: 5,
      queryTimeoutMs: 10_000,
      applicationName: 'group-commit-test',
    });
    try {
      await migrate(tiny);
      const users = [randomUUID(), randomUUID()];
      const c = await conversation(users, tiny);
      await send(tiny, [item(0, c, users[0]!, 'seed-0', 'a'), item(1, c, users[1]!, 'seed-1', 'b'), item(2, c, users[0]!, 'seed-2', 'c')]);
      await tiny`ANALYZE conversations, members, messages, user_conversation_state`;
      const plans = await plansOfOneBatch(tinyUrl, [c], [users[1]!], 'tiny');
      expect(
        plans.some((p) => /Index Scan using messages_sender_idempotency on messages m\b/.test(p)),
        'the idempotency lookup by index',
      ).toBe(true);
      expect(tableScans(plans)).toEqual([]);
    } finally {
      await tiny.end();
    }
  });

  it('a concurrent transaction that commits the same key first: the losing batch fails whole (40001, no gap), and written again answers as stored', async () => {
    const a = randomUUID();
    const [c1, c2, c3] = [await conversation([a]), await conversation([a]), await conversation([a])];
    // The winner writes the key in c3 in its own transaction and holds it open. (Within one
    // conversation the row lock already orders them: the loser would simply see the key.)
    const winner = postgres(url, { max: 1, onnotice: () => {} });
    const reserved = await winner.reserve();
    await reserved`BEGIN`;
    await reserved`SELECT * FROM realchat_send_batch(${JSON.stringify([item(0, c3, a, 'race', 'same')])}::text::jsonb)`;
    // The loser does not see the uncommitted key, so it numbers its sends and blocks on the insert.
    const batch = [item(0, c2, a, 'race', 'same'), item(1, c1, a, 'after', 'next')];
    const loser = send(sql, batch).catch((err: { code?: string }) => err);
    await new Promise((r) => setTimeout(r, 300));
    await reserved`COMMIT`;
    reserved.release();
    await winner.end();
    const lost = await loser;
    expect(lost, JSON.stringify(lost)).toMatchObject({ code: '40001' });
    // Nothing of the losing batch stayed: not its other message, not a sequence.
    const lastSeq = async (c: string) => (await sql<{ l: number }[]>`SELECT last_seq::int AS l FROM conversations WHERE id = ${c}`)[0]!.l;
    expect([await lastSeq(c1), await lastSeq(c2), await lastSeq(c3)]).toEqual([0, 0, 1]);
    const again = await send(sql, batch);
    expect(Object.fromEntries(again.map((r) => [r.idx, [r.status, r.sequence]]))).toEqual({ 0: ['conflict', 1], 1: ['created', 1] });
    expect([await lastSeq(c1), await lastSeq(c2), await lastSeq(c3)]).toEqual([1, 0, 1]);
  });
});
