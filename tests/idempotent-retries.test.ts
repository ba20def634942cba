import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BACKENDS, createConversation, http, startTestServer, type TestServer } from './harness/server.js';
import { TestClient } from './harness/ws-client.js';

describe.each(BACKENDS)('idempotent retries (%s)', (backend) => {
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

  it('many concurrent sends with one key store one message; every answer names it', async () => {
    const alice = await s.token();
    const conv = await createConversation(s, alice.token, []);
    const clients = await Promise.all(Array.from({ length: 8 }, () => TestClient.connect(s.wsUrl, alice.token)));
    for (const c of clients)
      for (let i = 0; i < 5; i++) c.send({ type: 'send', conversation_id: conv, idempotency_key: 'same-key', payload: { n: 1 } });
    const wsAcks = clients.map((c) => c.waitForCount((f) => f.type === 'ack' || f.type === 'error', 5));
    const rest = Array.from({ length: 10 }, () =>
      http(s, 'POST', `/v1/conversations/${conv}/messages`, {
        token: alice.token,
        body: { idempotency_key: 'same-key', payload: { n: 1 } },
      }),
    );
    const acks = (await Promise.all(wsAcks)).flat();
    expect(acks).toHaveLength(40);
    const restResults = await Promise.all(rest);
    expect(acks.every((a) => a.type === 'ack')).toBe(true);
    const ids = new Set([...acks.map((a) => a.message_id), ...restResults.map((r) => r.body.message_id)]);
    expect(ids.size).toBe(1);
    expect(acks.filter((a) => !a.duplicate).length + restResults.filter((r) => r.status === 201).length).toBe(1);
    expect(restResults.every((r) => r.status === 200 || r.status === 201)).toBe(true);
    const rows = await s.query<{ n: number; last: number }>(
      `SELECT (SELECT count(*)::int FROM messages WHERE conversation_id = $1) AS n, (SELECT last_seq::int FROM conversations WHERE id = $1) AS last`,
      [conv],
    );
    // The losing transactions rolled back their sequence increments: no gap.
    expect(rows[0]).toEqual({ n: 1, last: 1 });
    for (const c of clients) c.close();
  });

  it('a resend after a dropped connection returns the original message as a duplicate', async () => {
    const alice = await s.token();
    const bob = await s.token();
    const conv = await createConversation(s, alice.token, [bob.userId]);
    const b = await TestClient.connect(s.wsUrl, bob.token);
    const a = await TestClient.connect(s.wsUrl, alice.token);
    // Send and drop the connection before reading the ack.
    a.send({ type: 'send', conversation_id: conv, idempotency_key: 'drop-1', payload: 'x' });
    a.close();
    const a2 = await TestClient.connect(s.wsUrl, alice.token);
    const ack = await a2.sendMessage(conv, 'drop-1', 'x');
    expect(ack.type).toBe('ack');
    expect(ack.sequence_number).toBe(1);
    await b.waitFor((f) => f.type === 'message');
    await a2.sendMessage(conv, 'drop-2', 'y');
    await b.waitFor((f) => f.type === 'message' && f.message.sequence_number === 2);
    expect(b.messages(conv).map((m) => m.idempotency_key)).toEqual(['drop-1', 'drop-2']);
    const rows = await s.query<{ n: number }>(`SELECT count(*)::int AS n FROM messages WHERE conversation_id = $1`, [conv]);
    expect(rows[0]!.n).toBe(2);
    a2.close();
    b.close();
  });

  it('the same key with a different payload or conversation is a conflict and stores nothing', async () => {
    const alice = await s.token();
    const c1 = await createConversation(s, alice.token, []);
    const c2 = await createConversation(s, alice.token, []);
    const a = await TestClient.connect(s.wsUrl, alice.token);
    expect((await a.sendMessage(c1, 'k', { v: 1 })).type).toBe('ack');
    const samePayloadKeyOrder = await a.sendMessage(c1, 'k', { v: 1 });
    expect(samePayloadKeyOrder).toMatchObject({ type: 'ack', duplicate: true });
    const otherPayload = await a.sendMessage(c1, 'k', { v: 2 });
    expect(otherPayload).toMatchObject({ type: 'error', code: 'conflict', ref: 'k' });
    const otherConv = await a.sendMessage(c2, 'k', { v: 1 });
    expect(otherConv).toMatchObject({ type: 'error', code: 'conflict', ref: 'k' });
    const rest = await http(s, 'POST', `/v1/conversations/${c2}/messages`, {
      token: alice.token,
      body: { idempotency_key: 'k', payload: { v: 1 } },
    });
    expect(rest.status).toBe(409);
    expect(rest.body.error.code).toBe('conflict');
    const rows = await s.query<{ n: number }>(`SELECT count(*)::int AS n FROM messages WHERE sender_id = $1`, [alice.userId]);
    expect(rows[0]!.n).toBe(1);
    const seq = await s.query<{ last_seq: number }>(`SELECT last_seq::int FROM conversations WHERE id = $1`, [c2]);
    expect(seq[0]!.last_seq).toBe(0);
    a.close();
  });

  it('idempotency keys are scoped per sender: two senders may use the same key', async () => {
    const alice = await s.token();
    const bob = await s.token();
    const conv = await createConversation(s, alice.token, [bob.userId]);
    const a = await TestClient.connect(s.wsUrl, alice.token);
    const b = await TestClient.connect(s.wsUrl, bob.token);
    const x = await a.sendMessage(conv, 'shared', 1);
    const y = await b.sendMessage(conv, 'shared', 1);
    expect(x.duplicate).toBe(false);
    expect(y.duplicate).toBe(false);
    expect(x.message_id).not.toBe(y.message_id);
    a.close();
    b.close();
  });
});
