import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BACKENDS, createConversation, http, startTestServer, type TestServer } from './harness/server.js';
import { TestClient } from './harness/ws-client.js';

describe.each(BACKENDS)('send and receive (%s)', (backend) => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer(backend);
  });
  afterAll(async () => s?.close());

  it('delivers a message live to every member connection, including the sender, and to no one else', async () => {
    const alice = await s.token();
    const bob = await s.token();
    const eve = await s.token();
    const conv = await createConversation(s, alice.token, [bob.userId], 'pair');
    const a1 = await TestClient.connect(s.wsUrl, alice.token);
    const a2 = await TestClient.connect(s.wsUrl, alice.token);
    const b = await TestClient.connect(s.wsUrl, bob.token);
    const e = await TestClient.connect(s.wsUrl, eve.token);

    const ack = await a1.sendMessage(conv, 'k1', { text: 'hi' });
    expect(ack).toMatchObject({ type: 'ack', idempotency_key: 'k1', conversation_id: conv, sequence_number: 1, duplicate: false });
    expect(ack.message_id).toMatch(/^[0-9a-f-]{36}$/);
    expect(new Date(ack.created_at).toISOString()).toBe(ack.created_at);

    for (const c of [a1, a2, b]) {
      const f = await c.waitFor((x) => x.type === 'message');
      expect(f.message).toEqual({
        message_id: ack.message_id,
        conversation_id: conv,
        sender_id: alice.userId,
        sequence_number: 1,
        payload: { text: 'hi' },
        created_at: ack.created_at,
        idempotency_key: 'k1',
      });
    }
    // eve is not a member: give the pipeline time to (wrongly) deliver, then check it did not.
    await b.sendMessage(conv, 'k2', 'second');
    await a1.waitFor((x) => x.type === 'message' && x.message.sequence_number === 2);
    expect(e.messages()).toHaveLength(0);

    const rest = await http(s, 'GET', `/v1/conversations/${conv}/messages?after_sequence=0`, { token: bob.token });
    expect(rest.status).toBe(200);
    expect(rest.body.messages.map((m: any) => m.sequence_number)).toEqual([1, 2]);
    expect(rest.body.messages[0]).toEqual(a1.messages(conv)[0]);
    for (const c of [a1, a2, b, e]) c.close();
  });

  it('delivers messages sent over REST live, and REST answers with the envelope', async () => {
    const alice = await s.token();
    const bob = await s.token();
    const conv = await createConversation(s, alice.token, [bob.userId]);
    const b = await TestClient.connect(s.wsUrl, bob.token);
    const r = await http(s, 'POST', `/v1/conversations/${conv}/messages`, {
      token: alice.token,
      body: { idempotency_key: 'r1', payload: [1, 2, 3] },
    });
    expect(r.status).toBe(201);
    expect(r.body).toMatchObject({
      conversation_id: conv,
      sender_id: alice.userId,
      sequence_number: 1,
      payload: [1, 2, 3],
      idempotency_key: 'r1',
    });
    const f = await b.waitFor((x) => x.type === 'message');
    expect(f.message).toEqual(r.body);
    b.close();
  });

  it('a member added later receives the members_added entry and live messages after it, on an already open connection', async () => {
    const alice = await s.token();
    const carol = await s.token();
    const conv = await createConversation(s, alice.token, []);
    const c = await TestClient.connect(s.wsUrl, carol.token);
    const a = await TestClient.connect(s.wsUrl, alice.token);
    await a.sendMessage(conv, 'before', 'before carol');
    const add = await http(s, 'POST', `/v1/conversations/${conv}/members`, { token: alice.token, body: { user_ids: [carol.userId] } });
    expect(add.status).toBe(200);
    // The addition is the conversation's entry #2; the new member starts with it.
    expect(add.body).toMatchObject({ added_user_ids: [carol.userId], last_sequence: 2 });
    const joined = await c.waitFor((x) => x.type === 'message');
    expect(joined.message).toMatchObject({
      sequence_number: 2,
      kind: 'members_added',
      payload: { user_ids: [carol.userId], by: alice.userId },
    });
    await a.sendMessage(conv, 'after', 'after carol');
    await a.sendMessage(conv, 'after2', 'again');
    await c.waitFor((x) => x.type === 'message' && x.message.sequence_number === 4);
    expect(c.messages(conv).map((m) => m.sequence_number)).toEqual([2, 3, 4]);
    a.close();
    c.close();
  });

  it('lists conversations with last, read and unread counts', async () => {
    const alice = await s.token();
    const bob = await s.token();
    const conv = await createConversation(s, alice.token, [bob.userId], 'counts');
    const a = await TestClient.connect(s.wsUrl, alice.token);
    for (let i = 0; i < 3; i++) await a.sendMessage(conv, `c${i}`, i);
    const b = await TestClient.connect(s.wsUrl, bob.token);
    b.send({ type: 'read', conversation_id: conv, sequence_number: 2 });
    await b.waitFor((f) => f.type === 'receipt' && f.read_sequence === 2);
    const r = await http(s, 'GET', '/v1/conversations', { token: bob.token });
    expect(r.status).toBe(200);
    expect(r.body.conversations).toEqual([
      {
        conversation_id: conv,
        title: 'counts',
        last_sequence: 3,
        read_sequence: 2,
        unread: 1,
        role: 'member',
        home_region: 'default',
        home_epoch: 0,
      },
    ]);
    a.close();
    b.close();
  });
});
