import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BACKENDS, createConversation, startTestServer, type TestServer } from './harness/server.js';
import { TestClient } from './harness/ws-client.js';

describe.each(BACKENDS)('read receipts and typing (%s)', (backend) => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer(backend);
  });
  afterAll(async () => s?.close());

  it('read is monotonic and every member connection gets the receipt', async () => {
    const alice = await s.token();
    const bob = await s.token();
    const conv = await createConversation(s, alice.token, [bob.userId]);
    const a = await TestClient.connect(s.wsUrl, alice.token);
    const b1 = await TestClient.connect(s.wsUrl, bob.token);
    const b2 = await TestClient.connect(s.wsUrl, bob.token);
    for (let i = 1; i <= 3; i++) await a.sendMessage(conv, `r${i}`, i);
    b1.send({ type: 'read', conversation_id: conv, sequence_number: 2 });
    for (const c of [a, b1, b2]) {
      expect(await c.waitFor((f) => f.type === 'receipt')).toEqual({
        type: 'receipt',
        conversation_id: conv,
        user_id: bob.userId,
        read_sequence: 2,
      });
    }
    // Going backwards changes nothing and emits nothing.
    b1.send({ type: 'read', conversation_id: conv, sequence_number: 1 });
    b1.send({ type: 'read', conversation_id: conv, sequence_number: 3 });
    await a.waitFor((f) => f.type === 'receipt' && f.read_sequence === 3);
    expect(a.frames.filter((f) => f.type === 'receipt').map((f) => f.read_sequence)).toEqual([2, 3]);
    const st = await s.query<{ r: number }>(
      `SELECT last_read_sequence::int AS r FROM user_conversation_state WHERE user_id = $1 AND conversation_id = $2`,
      [bob.userId, conv],
    );
    expect(st[0]!.r).toBe(3);
    // Beyond the last sequence is refused.
    const since = b1.frames.length;
    b1.send({ type: 'read', conversation_id: conv, sequence_number: 99 });
    expect(await b1.waitFor((f) => f.type === 'error', 5000, since)).toMatchObject({ code: 'invalid_frame', ref: conv });
    for (const c of [a, b1, b2]) c.close();
  });

  it("a send that reads another member's message: every member gets the message, then the sender's receipt; over its own messages only, no receipt", async () => {
    const alice = await s.token();
    const bob = await s.token();
    const conv = await createConversation(s, alice.token, [bob.userId]);
    const a = await TestClient.connect(s.wsUrl, alice.token);
    const b = await TestClient.connect(s.wsUrl, bob.token);
    await a.sendMessage(conv, 'from-alice', 1);
    const reply = await b.sendMessage(conv, 'from-bob', 2);
    await b.sendMessage(conv, 'bob-again', 3);
    for (const c of [a, b]) {
      await c.waitFor((f) => f.type === 'message' && f.message.sequence_number === 3);
      // The stream carries one event per send (v1.5: the receipt rides on the message's event);
      // clients still see the receipt as a frame of its own, right after the message it stands for.
      const seen = c.frames
        .filter((f) => (f.type === 'message' && f.message.conversation_id === conv) || f.type === 'receipt')
        .map((f) =>
          f.type === 'receipt'
            ? `receipt ${f.user_id === bob.userId ? 'bob' : 'alice'} ${f.read_sequence}`
            : `message ${f.message.sequence_number}`,
        );
      expect(seen).toEqual(['message 1', 'message 2', `receipt bob ${reply.sequence_number}`, 'message 3']);
    }
    a.close();
    b.close();
  });

  it('typing reaches the other members only and is never stored', async () => {
    const alice = await s.token();
    const bob = await s.token();
    const conv = await createConversation(s, alice.token, [bob.userId]);
    const a = await TestClient.connect(s.wsUrl, alice.token);
    const b = await TestClient.connect(s.wsUrl, bob.token);
    const outboxBefore = await s.query<{ n: number }>(`SELECT count(*)::int AS n FROM messages WHERE conversation_id = $1`, [conv]);
    a.send({ type: 'typing', conversation_id: conv });
    expect(await b.waitFor((f) => f.type === 'typing')).toEqual({ type: 'typing', conversation_id: conv, user_id: alice.userId });
    a.send({ type: 'ping' });
    await a.waitFor((f) => f.type === 'pong');
    expect(a.frames.filter((f) => f.type === 'typing')).toHaveLength(0);
    const after = await s.query<{ n: number }>(`SELECT count(*)::int AS n FROM messages WHERE conversation_id = $1`, [conv]);
    expect(after).toEqual(outboxBefore);
    a.close();
    b.close();
  });
});
