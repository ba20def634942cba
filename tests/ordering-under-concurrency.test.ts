import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BACKENDS, createConversation, startTestServer, type TestServer } from './harness/server.js';
import { TestClient } from './harness/ws-client.js';

describe.each(BACKENDS)('ordering under concurrent sends (%s)', (backend) => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer(backend, {
      REALCHAT_SENDS_PER_S: '10000',
      REALCHAT_SEND_BURST: '10000',
      REALCHAT_FRAMES_PER_S: '10000',
      REALCHAT_FRAME_BURST: '10000',
    });
  });
  afterAll(async () => s?.close());

  it('every receiver sees sequences 1..N gap-free in order; each sender sees its own in send order', async () => {
    const SENDERS = 8;
    const PER_SENDER = 40;
    const users = await Promise.all(Array.from({ length: SENDERS }, () => s.token()));
    const conv = await createConversation(
      s,
      users[0]!.token,
      users.slice(1).map((u) => u.userId),
    );
    const clients = await Promise.all(users.map((u) => TestClient.connect(s.wsUrl, u.token)));
    const listeners = await Promise.all(users.slice(0, 3).map((u) => TestClient.connect(s.wsUrl, u.token)));

    // Every sender pipelines all its sends without waiting for acks.
    clients.forEach((c, i) => {
      for (let j = 0; j < PER_SENDER; j++)
        c.send({ type: 'send', conversation_id: conv, idempotency_key: `s${i}-${j}`, payload: { i, j } });
    });
    const total = SENDERS * PER_SENDER;
    for (const c of [...clients, ...listeners]) await c.waitForCount((f) => f.type === 'message', total, 60_000);
    // A sender's ack can come after the message itself: the commit is visible to the relay before the
    // gateway has read its answer, and the protocol promises no order between the two.
    for (const c of clients) await c.waitForCount((f) => f.type === 'ack', PER_SENDER, 10_000);

    for (const c of [...clients, ...listeners]) {
      const seqs = c.messages(conv).map((m) => m.sequence_number);
      expect(seqs).toEqual(Array.from({ length: total }, (_, k) => k + 1));
    }
    clients.forEach((c, i) => {
      const acks = c.frames.filter((f) => f.type === 'ack');
      expect(acks.map((a) => a.idempotency_key)).toEqual(Array.from({ length: PER_SENDER }, (_, j) => `s${i}-${j}`));
      const ackSeqs = acks.map((a) => a.sequence_number);
      expect([...ackSeqs].sort((a, b) => a - b)).toEqual(ackSeqs);
      const own = c
        .messages(conv)
        .filter((m) => m.payload.i === i)
        .map((m) => m.payload.j);
      expect(own).toEqual(Array.from({ length: PER_SENDER }, (_, j) => j));
    });
    const rows = await s.query<{ n: number; min: number; max: number; last: number }>(
      `SELECT count(*)::int AS n, min(sequence)::int AS min, max(sequence)::int AS max,
              (SELECT last_seq::int FROM conversations WHERE id = $1) AS last
       FROM messages WHERE conversation_id = $1`,
      [conv],
    );
    expect(rows[0]).toEqual({ n: total, min: 1, max: total, last: total });
    for (const c of [...clients, ...listeners]) c.close();
  });
});
