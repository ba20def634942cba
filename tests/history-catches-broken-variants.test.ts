/**
 * The history checker must fail on deliberately broken variants of the pipeline before a green
 * end-to-end run means anything: a relay that reads the outbox with an id cursor (skips rows
 * committed out of id order), a delivery path without dedup, and a pipeline that loses events (the
 * connection's gap fill hides the loss from every other check; the arrival path shows it). Our real
 * components, fed the same input, must pass.
 */
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import postgres from 'postgres';
import { freshDatabase } from './harness/server.js';
import { History, isClean, type StoredMessage } from './harness/history.js';
import { createSql } from '../common/db.js';
import { migrate } from '../sql/migrate.js';
import { createChatStore } from '../gateway/chat-store.js';
import { Semaphore } from '../common/semaphore.js';
import { createOutboxRelay } from '../relay/outbox-relay.js';
import { createInMemoryBus } from '../common/bus.js';
import type { EventRecord } from '../common/events.js';
import { createMetrics } from '../common/metrics.js';
import { createLogger } from '../common/log.js';
import { Connection, type HistoryPort, type SocketPort } from '../gateway/connection.js';
import type { Envelope, Via } from '../common/protocol.js';
import { encodeFrame, encodeMessageFrame } from '../common/protocol.js';

const log = createLogger({ level: 'silent', nodeId: 't', role: 'test' });

/** A real connection of `alice` subscribed to `conv` from sequence 0, whose socket hands every message frame it writes to `onMessage`. */
function connectionWriting(history: HistoryPort, alice: string, conv: string, onMessage: (m: Envelope, via: Via) => void): Connection {
  const socket: SocketPort = {
    send: (t) => {
      const f = JSON.parse(t);
      if (f.type === 'message') onMessage(f.message, f.via);
      return true;
    },
    bufferedAmount: () => 0,
    end: () => {},
  };
  const conn = new Connection(alice, socket, {
    history,
    log,
    metrics: createMetrics({ nodeId: 't', defaultMetrics: false }),
    fillBatch: 100,
    highWaterBytes: 1 << 20,
    drainTimeoutMs: 1000,
  });
  conn.activate([[conv, 0]], new Map());
  return conn;
}

async function setup() {
  const url = await freshDatabase();
  const sql = createSql({ url, maxConnections: 5, connectTimeoutS: 5, queryTimeoutMs: 10_000, applicationName: 'broken-variants' });
  await migrate(sql);
  const store = createChatStore({
    sql,
    queryTimeoutMs: 10_000,
    maxRoomMembers: 100,
    largeRoomMembers: 50,
    maxPageBytes: 1024 * 1024,
    outboxMode: 'table',
    gate: new Semaphore(10, 100),
    sendBatch: { maxBatch: 100, maxInFlight: 2, maxQueued: 1000 },
  });
  const alice = randomUUID();
  const conv = (await store.createConversation(alice, [], null, null)).conversation_id;
  await sql`DELETE FROM outbox`;
  return { url, sql, store, alice, conv };
}

/** Two conversations' sends committed out of id order: T1 takes an outbox id, T2 takes a later one and commits first. */
async function commitOutOfIdOrder(url: string, conv1: string, conv2: string, sender: string, onBetween: () => Promise<void>) {
  const a = postgres(url, { max: 1, onnotice: () => {} });
  const b = postgres(url, { max: 1, onnotice: () => {} });
  const insert = (tx: postgres.TransactionSql, conv: string, seq: number, key: string) =>
    tx`WITH m AS (INSERT INTO messages (id, conversation_id, sender_id, sequence, payload, idempotency_key)
                  VALUES (${randomUUID()}, ${conv}, ${sender}, ${seq}, '{}'::jsonb, ${key}) RETURNING *)
       INSERT INTO outbox (event_id, aggregateid, type, payload)
       SELECT gen_random_uuid(), m.conversation_id::text, 'message.created',
              jsonb_build_object('schema_version', 1, 'event_id', gen_random_uuid(), 'type', 'message.created',
                'conversation_id', m.conversation_id, 'occurred_at', '2026-01-01T00:00:00.000Z',
                'message', jsonb_build_object('message_id', m.id, 'conversation_id', m.conversation_id, 'sender_id', m.sender_id,
                  'sequence_number', m.sequence, 'payload', m.payload, 'created_at', '2026-01-01T00:00:00.000Z', 'idempotency_key', m.idempotency_key))
       FROM m`;
  let releaseT1!: () => void;
  const t1Held = new Promise<void>((r) => (releaseT1 = r));
  let t1Inserted!: () => void;
  const t1Ready = new Promise<void>((r) => (t1Inserted = r));
  const t1 = a.begin(async (tx) => {
    await tx`UPDATE conversations SET last_seq = 1 WHERE id = ${conv1}`;
    await insert(tx, conv1, 1, 'k1');
    t1Inserted();
    await t1Held;
  });
  await t1Ready;
  await b.begin(async (tx) => {
    await tx`UPDATE conversations SET last_seq = 1 WHERE id = ${conv2}`;
    await insert(tx, conv2, 1, 'k2');
  });
  await onBetween();
  releaseT1();
  await t1;
  await a.end();
  await b.end();
}

async function storedMessages(sql: ReturnType<typeof createSql>, convs: string[]): Promise<StoredMessage[]> {
  return [
    ...(await sql<
      StoredMessage[]
    >`SELECT conversation_id, sequence::int AS sequence_number, id AS message_id, sender_id, idempotency_key, payload
                                   FROM messages WHERE conversation_id IN ${sql(convs)} ORDER BY conversation_id, sequence`),
  ];
}

describe('the history checker catches broken variants', () => {
  it('a relay with an id cursor loses a row committed out of id order; the real relay does not', async () => {
    const { url, sql, store, alice } = await setup();
    const c1 = (await store.createConversation(alice, [], null, null)).conversation_id;
    const c2 = (await store.createConversation(alice, [], null, null)).conversation_id;
    await sql`DELETE FROM outbox`;

    // Broken: remembers the highest id published and asks for ids above it.
    const brokenSeen: Envelope[] = [];
    let cursor = 0;
    const brokenPoll = async () => {
      const rows = await sql<
        { id: string; value: string }[]
      >`SELECT id::text AS id, payload::text AS value FROM outbox WHERE id > ${cursor} ORDER BY id`;
      for (const r of rows) {
        cursor = Math.max(cursor, Number(r.id));
        const e = JSON.parse(r.value);
        if (e.type === 'message.created') brokenSeen.push(e.message);
      }
    };
    await commitOutOfIdOrder(url, c1, c2, alice, brokenPoll);
    await brokenPoll();

    // Real: reads what remains in the table.
    const bus = createInMemoryBus();
    const realSeen: Envelope[] = [];
    bus.subscribe(async (records: EventRecord[]) => {
      for (const r of records) {
        const e = JSON.parse(r.value);
        if (e.type === 'message.created') realSeen.push(e.message);
      }
    });
    const relay = createOutboxRelay({
      sql,
      bus,
      log,
      metrics: createMetrics({ nodeId: 't', defaultMetrics: false }),
      batchSize: 100,
      lingerMs: 0,
      pollMs: 50,
      queryTimeoutMs: 5000,
    });
    relay.start();
    await relay.idle();
    await relay.stop();

    const stored = await storedMessages(sql, [c1, c2]);
    const check = (seen: Envelope[]) => {
      const h = new History();
      for (const m of seen) h.receive('reader', m as unknown as StoredMessage);
      return h.check(stored, () => ['reader']);
    };
    const broken = check(brokenSeen);
    expect(broken.lost).toHaveLength(1);
    expect(isClean(check(realSeen))).toBe(true);
    await sql.end();
  });

  it('delivery without dedup surfaces duplicates; the real connection drops them', async () => {
    const { sql, store, alice, conv } = await setup();
    for (let i = 0; i < 5; i++) await store.sendMessage(alice, conv, `d${i}`, { i }, 10, null);
    const msgs = await store.messagesAfter(conv, 0, 100);
    // The relay re-publishes after a crash, and a replay repeats the stream: 1..5, 3..5, 1..5.
    const stream = [...msgs, ...msgs.slice(2), ...msgs];

    const naive: Envelope[] = [...stream];
    const sent: Envelope[] = [];
    const conn = connectionWriting(store, alice, conv, (m) => sent.push(m));
    for (const m of stream) conn.deliverMessage(m, encodeFrame({ type: 'message', message: m }));

    const stored = await storedMessages(sql, [conv]);
    const check = (seen: Envelope[]) => {
      const h = new History();
      for (const m of seen) h.receive('reader', m as unknown as StoredMessage);
      return h.check(stored, () => ['reader']);
    };
    expect(check(naive).duplicated.length).toBeGreaterThan(0);
    expect(isClean(check(sent))).toBe(true);
    await sql.end();
  });

  it('a pipeline that loses events passes every check but arrival paths: fills outside any fault window fail it', async () => {
    const { sql, store, alice, conv } = await setup();
    for (let i = 0; i < 10; i++) await store.sendMessage(alice, conv, `f${i}`, { i }, 10, null);
    const msgs = await store.messagesAfter(conv, 0, 100);

    /** Feeds the live stream to a real connection; returns what it wrote, with each frame's via. */
    async function deliver(stream: Envelope[]) {
      const written: Array<{ m: Envelope; via: Via }> = [];
      const conn = connectionWriting(store, alice, conv, (m, via) => written.push({ m, via }));
      for (const m of stream) {
        conn.deliverMessage(m, encodeMessageFrame(m, 'live'));
        await new Promise((r) => setTimeout(r, 5));
      }
      // Gap fills are database reads that finish on their own time (slow on a busy machine): wait
      // until everything up to the last live sequence was written, or give up after 10 s (the
      // checks below then see what is missing).
      const last = stream.at(-1)?.sequence_number ?? 0;
      const deadline = Date.now() + 10_000;
      while (new Set(written.map((w) => w.m.sequence_number)).size < last && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 10));
      }
      return written;
    }
    const stored = await storedMessages(sql, [conv]);
    const check = (written: Array<{ m: Envelope; via: Via }>) => {
      const h = new History();
      for (const { m, via } of written) h.receive('reader', m as unknown as StoredMessage, { via });
      return { report: h.check(stored, () => ['reader'], { fillWindows: [] }), arrivals: h.arrivals() };
    };
    // Broken: every third event lost between the database and the node.
    const lossy = check(await deliver(msgs.filter((m) => m.sequence_number % 3 !== 0)));
    expect(lossy.report.lost).toEqual([]);
    expect(lossy.report.gapped).toEqual([]);
    expect(lossy.report.fillsOutsideWindows.length).toBeGreaterThan(0);
    expect(lossy.arrivals.fill).toBeGreaterThan(0);
    const real = check(await deliver(msgs));
    expect(isClean(real.report)).toBe(true);
    expect(real.arrivals).toMatchObject({ live: 10, fill: 0 });
    await sql.end();
  });
});
