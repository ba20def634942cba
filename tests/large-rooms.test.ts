/**
 * Large rooms (past REALCHAT_LARGE_ROOM_MEMBERS): delivered by room interest, never by member list.
 * Every subscriber gets every message in order; read marks go to the reader's own connections; a
 * message committed while a member says hello is not lost; members added later receive what follows.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import { BACKENDS, createConversation, http, startTestServer, type TestServer } from './harness/server.js';
import { TestClient } from './harness/ws-client.js';
import { UNLIMITED_RATES } from './harness/env.js';

describe.each(BACKENDS)('large rooms (%s)', (backend) => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer(backend, { ...UNLIMITED_RATES, REALCHAT_LARGE_ROOM_MEMBERS: '3' });
  });
  afterAll(async () => s?.close());

  it('a room past the threshold is large; connected members get every message in order; offline members cost nothing', async () => {
    const users = await Promise.all(Array.from({ length: 3 }, () => s.token()));
    const offline = Array.from({ length: 20 }, () => randomUUID());
    const conv = await createConversation(s, users[0]!.token, [...users.slice(1).map((u) => u.userId), ...offline]);
    const [row] = await s.query<{ large: boolean; member_count: number }>('SELECT large, member_count FROM conversations WHERE id = $1', [
      conv,
    ]);
    expect(row).toEqual({ large: true, member_count: 23 });
    const clients = await Promise.all(users.map((u) => TestClient.connect(s.wsUrl, u.token)));
    // users[0] does not send: sending is reading, and its read mark is checked below.
    for (let i = 0; i < 10; i++) clients[1 + (i % 2)]!.send({ type: 'send', conversation_id: conv, idempotency_key: `l${i}`, payload: i });
    for (const c of clients) {
      const got = await c.waitForCount((f) => f.type === 'message' && f.message.conversation_id === conv, 10);
      expect(got.map((f) => f.message.sequence_number)).toEqual(Array.from({ length: 10 }, (_, i) => i + 1));
    }
    // Typing reaches the other subscribers.
    clients[0]!.send({ type: 'typing', conversation_id: conv });
    expect(await clients[1]!.waitFor((f) => f.type === 'typing')).toMatchObject({ user_id: users[0]!.userId });
    // A read mark goes to the reader's own connections only.
    const second = await TestClient.connect(s.wsUrl, users[0]!.token);
    clients[0]!.send({ type: 'read', conversation_id: conv, sequence_number: 5 });
    expect(await second.waitFor((f) => f.type === 'receipt')).toMatchObject({ user_id: users[0]!.userId, read_sequence: 5 });
    await new Promise((r) => setTimeout(r, 300));
    // (users[1] and users[2] get their own receipts: each send of theirs read the other's message.)
    expect(clients[1]!.frames.some((f) => f.type === 'receipt' && f.user_id === users[0]!.userId)).toBe(false);
    expect(clients[1]!.frames.some((f) => f.type === 'receipt' && f.user_id === users[2]!.userId)).toBe(false);
    for (const c of [...clients, second]) c.close();
  });

  it('a member added later receives its members_added entry and what follows; a small room that grows past the threshold becomes large', async () => {
    const [a, b, late] = await Promise.all([s.token(), s.token(), s.token()]);
    const conv = await createConversation(s, a.token, [b.userId]);
    const ca = await TestClient.connect(s.wsUrl, a.token);
    const cl = await TestClient.connect(s.wsUrl, late.token);
    expect((await ca.sendMessage(conv, 'small-1', 1)).type).toBe('ack');
    const added = await http(s, 'POST', `/v1/conversations/${conv}/members`, {
      token: a.token,
      body: { user_ids: [late.userId, randomUUID()] },
    });
    expect(added.body.member_count).toBe(4);
    expect((await s.query<{ large: boolean }>('SELECT large FROM conversations WHERE id = $1', [conv]))[0]!.large).toBe(true);
    expect((await ca.sendMessage(conv, 'large-2', 2)).type).toBe('ack');
    expect((await ca.sendMessage(conv, 'large-3', 3)).type).toBe('ack');
    // #2 is the addition itself (a members_added entry), then the two messages.
    const got = await cl.waitForCount((f) => f.type === 'message' && f.message.conversation_id === conv, 3);
    expect(got.map((f) => [f.message.sequence_number, f.message.kind])).toEqual([
      [2, 'members_added'],
      [3, undefined],
      [4, undefined],
    ]);
    expect((await ca.waitForCount((f) => f.type === 'message' && f.message.conversation_id === conv, 4)).length).toBe(4);
    ca.close();
    cl.close();
  });

  it('a message committed while a member says hello is delivered once, in order', async () => {
    const [a, b, c] = await Promise.all([s.token(), s.token(), s.token()]);
    const conv = await createConversation(s, a.token, [b.userId, c.userId, randomUUID()]);
    const ca = await TestClient.connect(s.wsUrl, a.token);
    for (let round = 0; round < 5; round++) {
      const hello = TestClient.connect(s.wsUrl, b.token, { [conv]: 0 });
      ca.send({ type: 'send', conversation_id: conv, idempotency_key: `h${round}`, payload: round });
      const cb = await hello;
      const got = await cb.waitForCount((f) => f.type === 'message' && f.message.conversation_id === conv, round + 1);
      expect(got.map((f) => f.message.sequence_number)).toEqual(Array.from({ length: round + 1 }, (_, i) => i + 1));
      cb.close();
    }
    ca.close();
  });
});
