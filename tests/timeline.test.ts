/**
 * Protocol v1.1 (docs/protocol.md, "Timeline entries"): edits, deletes with erasure, leaving and
 * removing members, roles, members with receipts, history both ways, names, unread rules. Every
 * change is an entry of the conversation's one sequenced timeline, so each test also checks the
 * sequence each entry took and how it reached the other members.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BACKENDS, createConversation, http, startTestServer, type TestServer } from './harness/server.js';
import { TestClient } from './harness/ws-client.js';

describe.each(BACKENDS)('timeline entries (%s)', (backend) => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer(backend);
  });
  afterAll(async () => s?.close());

  const send = (token: string, conv: string, key: string, payload: unknown) =>
    http(s, 'POST', `/v1/conversations/${conv}/messages`, { token, body: { idempotency_key: key, payload } });
  const edit = (token: string, conv: string, id: string, key: string, payload: unknown) =>
    http(s, 'PATCH', `/v1/conversations/${conv}/messages/${id}`, { token, body: { idempotency_key: key, payload } });
  const del = (token: string, conv: string, id: string, key?: string) =>
    http(s, 'DELETE', `/v1/conversations/${conv}/messages/${id}`, { token, headers: key ? { 'idempotency-key': key } : {} });
  const history = async (token: string, conv: string, query = 'after_sequence=0') =>
    (await http(s, 'GET', `/v1/conversations/${conv}/messages?${query}`, { token })).body;

  it('edits: only the sender, answered like a send, delivered live as an entry, history shows the latest payload', async () => {
    const alice = await s.token();
    const bob = await s.token();
    const conv = await createConversation(s, alice.token, [bob.userId]);
    const b = await TestClient.connect(s.wsUrl, bob.token);
    const m = (await send(alice.token, conv, 'm1', { text: 'helo' })).body;

    const byBob = await edit(bob.token, conv, m.message_id, 'e0', { text: 'mine now' });
    expect(byBob.status).toBe(403);
    expect(byBob.body.error.code).toBe('forbidden');

    const e = await edit(alice.token, conv, m.message_id, 'e1', { text: 'hello' });
    expect(e.status).toBe(201);
    expect(e.body).toMatchObject({
      kind: 'edit',
      ref_message_id: m.message_id,
      sequence_number: 2,
      payload: { text: 'hello' },
      sender_id: alice.userId,
    });
    const again = await edit(alice.token, conv, m.message_id, 'e1', { text: 'hello' });
    expect(again.status).toBe(200);
    expect(again.body).toEqual(e.body);
    // The same key for another payload is a different request.
    expect((await edit(alice.token, conv, m.message_id, 'e1', { text: 'other' })).status).toBe(409);

    const live = await b.waitFor((f) => f.type === 'message' && f.message.sequence_number === 2);
    expect(live.message).toEqual(e.body);
    expect(live.via).toBe('live');

    const h = await history(bob.token, conv);
    expect(h.messages.map((x: any) => x.sequence_number)).toEqual([1, 2]);
    expect(h.messages[0]).toMatchObject({ message_id: m.message_id, payload: { text: 'hello' }, edited_at: e.body.created_at });
    expect(h.messages[0].kind).toBeUndefined();
    // An edit entry is not a message to edit.
    expect((await edit(alice.token, conv, e.body.message_id, 'e2', 'x')).status).toBe(404);
    b.close();
  });

  it('edit and delete over the WebSocket: ack with the entry, errors carry the key as ref', async () => {
    const alice = await s.token();
    const bob = await s.token();
    const conv = await createConversation(s, alice.token, [bob.userId]);
    const a = await TestClient.connect(s.wsUrl, alice.token);
    const b = await TestClient.connect(s.wsUrl, bob.token);
    const sent = await a.sendMessage(conv, 'w1', 'first');
    a.send({ type: 'edit', conversation_id: conv, message_id: sent.message_id, idempotency_key: 'w2', payload: 'first!' });
    const editAck = await a.waitFor((f) => f.type === 'ack' && f.idempotency_key === 'w2');
    expect(editAck).toMatchObject({ sequence_number: 2, duplicate: false, conversation_id: conv });
    b.send({ type: 'edit', conversation_id: conv, message_id: sent.message_id, idempotency_key: 'w3', payload: 'nope' });
    expect(await b.waitFor((f) => f.type === 'error' && f.ref === 'w3')).toMatchObject({ code: 'forbidden' });
    b.send({ type: 'delete', conversation_id: conv, message_id: sent.message_id, idempotency_key: 'w4' });
    expect(await b.waitFor((f) => f.type === 'error' && f.ref === 'w4')).toMatchObject({ code: 'forbidden' });
    a.send({ type: 'delete', conversation_id: conv, message_id: sent.message_id, idempotency_key: 'w5' });
    const deleted = await a.waitFor((f) => f.type === 'ack' && f.idempotency_key === 'w5');
    expect(deleted).toMatchObject({ sequence_number: 3, duplicate: false });
    // Deleting it again with another key answers the delete entry, under the request's own key.
    a.send({ type: 'delete', conversation_id: conv, message_id: sent.message_id, idempotency_key: 'w7' });
    expect(await a.waitFor((f) => f.type === 'ack' && f.idempotency_key === 'w7')).toMatchObject({
      message_id: deleted.message_id,
      sequence_number: 3,
      duplicate: true,
    });
    a.send({ type: 'edit', conversation_id: conv, message_id: sent.message_id, idempotency_key: 'w6', payload: 'back' });
    expect(await a.waitFor((f) => f.type === 'error' && f.ref === 'w6')).toMatchObject({ code: 'conflict' });
    const entries = await b.waitForCount((f) => f.type === 'message', 3);
    expect(entries.map((f) => [f.message.sequence_number, f.message.kind])).toEqual([
      [1, undefined],
      [2, 'edit'],
      [3, 'delete'],
    ]);
    a.close();
    b.close();
  });

  it('deletes erase the payload of the message and of every edit from the database, in the same transaction', async () => {
    const alice = await s.token();
    const bob = await s.token();
    const conv = await createConversation(s, alice.token, [bob.userId]);
    const secret = 'my card number is 4111';
    const m = (await send(alice.token, conv, 'd1', { text: secret })).body;
    await edit(alice.token, conv, m.message_id, 'd2', { text: `${secret}!` });
    const keep = (await send(bob.token, conv, 'd3', 'unrelated')).body;

    const d = await del(alice.token, conv, m.message_id, 'd4');
    expect(d.status).toBe(201);
    expect(d.body).toMatchObject({ kind: 'delete', ref_message_id: m.message_id, payload: null, sequence_number: 4 });
    // Deleting again, with or without a key, answers the delete entry.
    const again = await del(alice.token, conv, m.message_id);
    expect(again.status).toBe(200);
    expect(again.body.message_id).toBe(d.body.message_id);

    const rows = await s.query<{ payload: unknown }>(`SELECT payload FROM messages WHERE conversation_id = $1`, [conv]);
    expect(JSON.stringify(rows)).not.toContain(secret);
    const outbox = await s.query<{ payload: unknown }>(`SELECT payload FROM outbox WHERE aggregateid = $1`, [conv]);
    expect(JSON.stringify(outbox)).not.toContain(secret);

    const h = await history(bob.token, conv);
    expect(h.messages[0]).toMatchObject({ message_id: m.message_id, deleted: true, payload: null });
    expect(h.messages[1]).toMatchObject({ kind: 'edit', payload: null });
    expect(h.messages[2]).toEqual(keep);
    // A retried send of the deleted message is the same send: answered as stored, not a conflict.
    const retry = await send(alice.token, conv, 'd1', { text: secret });
    expect(retry.status).toBe(200);
    expect(retry.body).toMatchObject({ message_id: m.message_id, payload: null });
    // A deleted message cannot be edited.
    expect((await edit(alice.token, conv, m.message_id, 'd5', 'again')).status).toBe(409);
  });

  it("owners and admins delete others' messages; members do not", async () => {
    const owner = await s.token();
    const admin = await s.token();
    const member = await s.token();
    const conv = await createConversation(s, owner.token, [admin.userId, member.userId]);
    expect(
      (await http(s, 'PUT', `/v1/conversations/${conv}/members/${admin.userId}/role`, { token: owner.token, body: { role: 'admin' } }))
        .status,
    ).toBe(200);
    const byOwner = (await send(owner.token, conv, 'o1', 'owner says')).body;
    const byMember = (await send(member.token, conv, 'm1', 'member says')).body;
    const byMember2 = (await send(member.token, conv, 'm2', 'member says again')).body;
    expect((await del(member.token, conv, byOwner.message_id)).status).toBe(403);
    expect((await del(admin.token, conv, byMember.message_id)).status).toBe(201);
    expect((await del(owner.token, conv, byMember2.message_id)).status).toBe(201);
    expect((await del(admin.token, conv, byOwner.message_id)).status).toBe(201);
  });

  it('leave and remove: the rules, the entry delivered live to the removed member, then nothing more, and forbidden everywhere', async () => {
    const owner = await s.token();
    const admin = await s.token();
    const admin2 = await s.token();
    const bob = await s.token();
    const carol = await s.token();
    const conv = await createConversation(s, owner.token, [admin.userId, admin2.userId, bob.userId, carol.userId]);
    const role = (u: string, r: string, token = owner.token) =>
      http(s, 'PUT', `/v1/conversations/${conv}/members/${u}/role`, { token, body: { role: r } });
    const remove = (token: string, u: string) => http(s, 'DELETE', `/v1/conversations/${conv}/members/${u}`, { token });
    expect((await role(admin.userId, 'admin')).status).toBe(200);
    expect((await role(admin2.userId, 'admin')).status).toBe(200);

    expect((await remove(bob.token, carol.userId)).status).toBe(403); // a member removes no one
    expect((await remove(admin.token, owner.userId)).status).toBe(403); // the owner cannot be removed
    expect((await remove(admin.token, admin2.userId)).status).toBe(403); // an admin cannot remove an admin
    expect((await remove(owner.token, owner.userId)).status).toBe(409); // the owner leaves only as the last member

    const b1 = await TestClient.connect(s.wsUrl, bob.token);
    const b2 = await TestClient.connect(s.wsUrl, bob.token);
    const c = await TestClient.connect(s.wsUrl, carol.token);
    await send(owner.token, conv, 'x1', 'before');
    await b1.waitFor((f) => f.type === 'message' && f.message.sequence_number === 3);

    const r = await remove(admin.token, bob.userId);
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ conversation_id: conv, removed_user_ids: [bob.userId], member_count: 4, last_sequence: 4 });
    for (const conn of [b1, b2, c]) {
      const f = await conn.waitFor((x) => x.type === 'message' && x.message.sequence_number === 4);
      expect(f.message).toMatchObject({
        kind: 'members_removed',
        payload: { user_ids: [bob.userId], by: admin.userId, reason: 'removed' },
      });
    }
    await send(owner.token, conv, 'x2', 'after');
    await c.waitFor((x) => x.type === 'message' && x.message.sequence_number === 5);
    // Typing from the removed user is refused, and nothing after the removal reached bob.
    b1.send({ type: 'typing', conversation_id: conv });
    expect(await b1.waitFor((f) => f.type === 'error' && f.ref === conv)).toMatchObject({ code: 'forbidden' });
    for (const conn of [b1, b2]) expect(conn.messages(conv).map((m) => m.sequence_number)).toEqual([3, 4]);

    expect((await http(s, 'GET', `/v1/conversations/${conv}/messages`, { token: bob.token })).status).toBe(403);
    expect((await send(bob.token, conv, 'x3', 'let me in')).status).toBe(403);
    b1.send({ type: 'sync', conversation_id: conv, after_sequence: 0 });
    expect(await b1.waitFor((f) => f.type === 'error' && f.ref === conv && f.code === 'forbidden')).toBeTruthy();
    // A reconnect that resumes it is told it is not a member.
    const b3 = await TestClient.connect(s.wsUrl, bob.token, { [conv]: 4 });
    expect(await b3.waitFor((f) => f.type === 'error' && f.ref === conv)).toMatchObject({ code: 'forbidden' });

    // Leaving is removing yourself.
    const left = await remove(carol.token, carol.userId);
    expect(left.body).toMatchObject({ removed_user_ids: [carol.userId], member_count: 3, last_sequence: 6 });
    expect((await c.waitFor((x) => x.type === 'message' && x.message.sequence_number === 6)).message.payload).toMatchObject({
      reason: 'left',
    });
    const conversations = (await http(s, 'GET', '/v1/conversations', { token: carol.token })).body.conversations;
    expect(conversations.map((x: any) => x.conversation_id)).not.toContain(conv);

    // Added again: the members_added entry and everything after.
    const add = await http(s, 'POST', `/v1/conversations/${conv}/members`, { token: owner.token, body: { user_ids: [bob.userId] } });
    expect(add.body).toMatchObject({ added_user_ids: [bob.userId], last_sequence: 7 });
    const joined = await b1.waitFor((x) => x.type === 'message' && x.message.sequence_number === 7);
    expect(joined.message).toMatchObject({ kind: 'members_added', payload: { user_ids: [bob.userId] } });
    await send(owner.token, conv, 'x4', 'welcome back');
    await b1.waitFor((x) => x.type === 'message' && x.message.sequence_number === 8);
    for (const conn of [b1, b2, b3, c]) conn.close();
  });

  it('roles: only the owner changes them, the entry is delivered, and who_can_add restricts adding', async () => {
    const owner = await s.token();
    const bob = await s.token();
    const carol = await s.token();
    const dave = await s.token();
    const conv = await createConversation(s, owner.token, [bob.userId, carol.userId]);
    const b = await TestClient.connect(s.wsUrl, bob.token);
    expect(
      (await http(s, 'PUT', `/v1/conversations/${conv}/members/${carol.userId}/role`, { token: bob.token, body: { role: 'admin' } }))
        .status,
    ).toBe(403);
    expect(
      (await http(s, 'PUT', `/v1/conversations/${conv}/members/${owner.userId}/role`, { token: owner.token, body: { role: 'member' } }))
        .status,
    ).toBe(403);
    expect(
      (await http(s, 'PUT', `/v1/conversations/${conv}/members/${dave.userId}/role`, { token: owner.token, body: { role: 'admin' } }))
        .status,
    ).toBe(404);
    expect(
      (await http(s, 'PUT', `/v1/conversations/${conv}/members/${carol.userId}/role`, { token: owner.token, body: { role: 'owner' } }))
        .status,
    ).toBe(400);
    const r = await http(s, 'PUT', `/v1/conversations/${conv}/members/${carol.userId}/role`, {
      token: owner.token,
      body: { role: 'admin' },
    });
    expect(r.body).toEqual({ conversation_id: conv, user_id: carol.userId, role: 'admin', last_sequence: 1 });
    const f = await b.waitFor((x) => x.type === 'message' && x.message.sequence_number === 1);
    expect(f.message).toMatchObject({
      kind: 'role_changed',
      sender_id: owner.userId,
      payload: { user_id: carol.userId, role: 'admin', by: owner.userId },
    });

    expect((await http(s, 'PATCH', `/v1/conversations/${conv}`, { token: carol.token, body: { who_can_add: 'admins' } })).status).toBe(403);
    expect((await http(s, 'PATCH', `/v1/conversations/${conv}`, { token: owner.token, body: { who_can_add: 'admins' } })).status).toBe(200);
    expect(
      (await http(s, 'POST', `/v1/conversations/${conv}/members`, { token: bob.token, body: { user_ids: [dave.userId] } })).status,
    ).toBe(403);
    expect(
      (await http(s, 'POST', `/v1/conversations/${conv}/members`, { token: carol.token, body: { user_ids: [dave.userId] } })).status,
    ).toBe(200);
    const members = (await http(s, 'GET', `/v1/conversations/${conv}/members`, { token: dave.token })).body.members;
    expect(Object.fromEntries(members.map((m: any) => [m.user_id, m.role]))).toEqual({
      [owner.userId]: 'owner',
      [bob.userId]: 'member',
      [carol.userId]: 'admin',
      [dave.userId]: 'member',
    });
    b.close();
  });

  it("members list: others' read and delivered marks survive a reload; members only; pages by user id", async () => {
    const alice = await s.token();
    const bob = await s.token();
    const eve = await s.token();
    const conv = await createConversation(s, alice.token, [bob.userId]);
    for (let i = 0; i < 3; i++) await send(alice.token, conv, `r${i}`, i);
    const b = await TestClient.connect(s.wsUrl, bob.token, { [conv]: 0 });
    await b.waitFor((f) => f.type === 'synced' && f.conversation_id === conv);
    b.send({ type: 'read', conversation_id: conv, sequence_number: 2 });
    await b.waitFor((f) => f.type === 'receipt' && f.read_sequence === 2);
    b.close();
    await b.waitClosed();
    const list = async () => {
      for (let i = 0; i < 50; i++) {
        const r = await http(s, 'GET', `/v1/conversations/${conv}/members`, { token: alice.token });
        const me = r.body.members.find((m: any) => m.user_id === bob.userId);
        if (me.delivered_sequence === 3) return r.body;
        await new Promise((res) => setTimeout(res, 100));
      }
      throw new Error('delivered_sequence never recorded');
    };
    const body = await list();
    expect(body.has_more).toBe(false);
    expect(body.members.find((m: any) => m.user_id === bob.userId)).toMatchObject({
      read_sequence: 2,
      delivered_sequence: 3,
      role: 'member',
    });
    // Sending is reading: alice's own mark is at her last message.
    expect(body.members.find((m: any) => m.user_id === alice.userId)).toMatchObject({ read_sequence: 3, role: 'owner' });
    expect((await http(s, 'GET', `/v1/conversations/${conv}/members`, { token: eve.token })).status).toBe(403);
    const first = (await http(s, 'GET', `/v1/conversations/${conv}/members?limit=1`, { token: alice.token })).body;
    expect(first.has_more).toBe(true);
    const second = (
      await http(s, 'GET', `/v1/conversations/${conv}/members?limit=1&after=${first.members[0].user_id}`, { token: alice.token })
    ).body;
    expect(second.has_more).toBe(false);
    expect([...first.members, ...second.members].map((m: any) => m.user_id).sort()).toEqual([alice.userId, bob.userId].sort());
  });

  it('history both ways: REST before_sequence and sync before_sequence give the entries just below, ascending', async () => {
    const alice = await s.token();
    const conv = await createConversation(s, alice.token, []);
    for (let i = 1; i <= 7; i++) await send(alice.token, conv, `h${i}`, i);
    const page = await history(alice.token, conv, 'before_sequence=6&limit=3');
    expect(page.messages.map((m: any) => m.sequence_number)).toEqual([3, 4, 5]);
    expect(page.has_more).toBe(true);
    const oldest = await history(alice.token, conv, 'before_sequence=3&limit=3');
    expect(oldest.messages.map((m: any) => m.sequence_number)).toEqual([1, 2]);
    expect(oldest.has_more).toBe(false);
    expect(
      (await http(s, 'GET', `/v1/conversations/${conv}/messages?before_sequence=3&after_sequence=1`, { token: alice.token })).status,
    ).toBe(400);

    const a = await TestClient.connect(s.wsUrl, alice.token);
    a.send({ type: 'sync', conversation_id: conv, before_sequence: 8, limit: 2 });
    const m = await a.waitFor((f) => f.type === 'messages');
    expect(m.messages.map((x: any) => x.sequence_number)).toEqual([6, 7]);
    expect(m.has_more).toBe(true);
    a.send({ type: 'sync', conversation_id: conv, before_sequence: 3, after_sequence: 1 });
    expect(await a.waitFor((f) => f.type === 'error' && f.ref === conv)).toMatchObject({ code: 'invalid_frame' });
    a.close();
  });

  it('people: names from the token or PUT /v1/users/me, found by name prefix, resolved by id', async () => {
    const tag = `Zq${Date.now().toString(36)}`;
    const r = await http(s, 'POST', '/v1/dev/token', { body: { name: `${tag} Ada` } });
    const ada = { userId: r.body.user_id, token: r.body.token };
    const bob = await s.token();
    // A token's name claim names a user who has none yet.
    const fromToken = await http(s, 'POST', '/v1/dev/token', { body: { user_id: bob.userId, name: `${tag} Bob` } });
    expect((await http(s, 'GET', '/v1/conversations', { token: fromToken.body.token })).status).toBe(200);
    expect((await http(s, 'GET', `/v1/users/${bob.userId}`, { token: ada.token })).body).toEqual({
      user_id: bob.userId,
      name: `${tag} Bob`,
    });
    expect((await http(s, 'PUT', '/v1/users/me', { token: bob.token, body: { name: `${tag} Robert` } })).body).toEqual({
      user_id: bob.userId,
      name: `${tag} Robert`,
    });
    const found = (await http(s, 'GET', `/v1/users?query=${encodeURIComponent(tag.toLowerCase())}`, { token: bob.token })).body.users;
    expect(found).toEqual([
      { user_id: ada.userId, name: `${tag} Ada` },
      { user_id: bob.userId, name: `${tag} Robert` },
    ]);
    // LIKE's own characters are plain characters in a query.
    expect((await http(s, 'GET', `/v1/users?query=${encodeURIComponent('%')}`, { token: bob.token })).body.users).toEqual([]);
    expect((await http(s, 'GET', `/v1/users/${crypto.randomUUID()}`, { token: bob.token })).status).toBe(404);
    expect((await http(s, 'GET', '/v1/users?query=', { token: bob.token })).status).toBe(400);
    expect((await http(s, 'PUT', '/v1/users/me', { token: bob.token, body: { name: '   ' } })).status).toBe(400);
  });

  it("unread: never the caller's own entries, nor membership, role, edit or delete entries, nor deleted messages", async () => {
    const alice = await s.token();
    const bob = await s.token();
    const carol = await s.token();
    const conv = await createConversation(s, alice.token, [bob.userId]);
    const a = await TestClient.connect(s.wsUrl, alice.token);
    const unread = async (token: string) =>
      (await http(s, 'GET', '/v1/conversations', { token })).body.conversations.find((c: any) => c.conversation_id === conv).unread;
    const m1 = (await send(alice.token, conv, 'u1', 'one')).body;
    await send(alice.token, conv, 'u2', 'two');
    await edit(alice.token, conv, m1.message_id, 'u3', 'one!');
    await http(s, 'POST', `/v1/conversations/${conv}/members`, { token: alice.token, body: { user_ids: [carol.userId] } });
    await http(s, 'PUT', `/v1/conversations/${conv}/members/${carol.userId}/role`, { token: alice.token, body: { role: 'admin' } });
    expect(await unread(bob.token)).toBe(2);
    expect(await unread(alice.token)).toBe(0);
    await del(alice.token, conv, m1.message_id);
    expect(await unread(bob.token)).toBe(1);
    // Bob's send reads everything before it, and says so: a receipt, as a `read` would.
    const reply = (await send(bob.token, conv, 'u4', 'reply')).body;
    expect(await unread(bob.token)).toBe(0);
    expect(await unread(alice.token)).toBe(1);
    expect(await a.waitFor((f) => f.type === 'receipt' && f.user_id === bob.userId)).toMatchObject({
      read_sequence: reply.sequence_number,
    });
    // Alice's sends passed only her own messages: no receipt of hers (each message says it).
    await a.waitFor((f) => f.type === 'message' && f.message.sequence_number === reply.sequence_number);
    expect(a.frames.filter((f) => f.type === 'receipt' && f.user_id === alice.userId)).toEqual([]);
    a.close();
  });

  it('Idempotency-Key on REST writes: a repeated create, add, remove or role change answers the first', async () => {
    const alice = await s.token();
    const bob = await s.token();
    const create = () =>
      http(s, 'POST', '/v1/conversations', { token: alice.token, body: { member_ids: [] }, headers: { 'idempotency-key': 'c-1' } });
    const c1 = await create();
    const c2 = await create();
    expect(c1.status).toBe(201);
    expect(c2.status).toBe(200);
    expect(c2.body.conversation_id).toBe(c1.body.conversation_id);
    const conv = c1.body.conversation_id;
    const add = () =>
      http(s, 'POST', `/v1/conversations/${conv}/members`, {
        token: alice.token,
        body: { user_ids: [bob.userId] },
        headers: { 'idempotency-key': 'a-1' },
      });
    expect((await add()).body).toMatchObject({ added_user_ids: [bob.userId], last_sequence: 1 });
    expect((await add()).body).toMatchObject({ added_user_ids: [bob.userId], last_sequence: 1 });
    const remove = () =>
      http(s, 'DELETE', `/v1/conversations/${conv}/members/${bob.userId}`, { token: alice.token, headers: { 'idempotency-key': 'r-1' } });
    expect((await remove()).status).toBe(200);
    expect((await remove()).body).toMatchObject({ removed_user_ids: [bob.userId] });
    // One key, two different requests.
    expect(
      (
        await http(s, 'PUT', `/v1/conversations/${conv}/members/${bob.userId}/role`, {
          token: alice.token,
          body: { role: 'admin' },
          headers: { 'idempotency-key': 'r-1' },
        })
      ).status,
    ).toBe(409);
    // Body and header must agree.
    const both = await http(s, 'POST', `/v1/conversations/${conv}/messages`, {
      token: alice.token,
      body: { idempotency_key: 'k1', payload: 1 },
      headers: { 'idempotency-key': 'k2' },
    });
    expect(both.status).toBe(400);
    const viaHeader = await http(s, 'POST', `/v1/conversations/${conv}/messages`, {
      token: alice.token,
      body: { payload: 1 },
      headers: { 'idempotency-key': 'k3' },
    });
    expect(viaHeader.status).toBe(201);
    expect(viaHeader.body.idempotency_key).toBe('k3');
    const entries = await s.query<{ sequence: number; kind: string }>(
      `SELECT sequence::int, kind FROM messages WHERE conversation_id = $1 ORDER BY sequence`,
      [conv],
    );
    expect(entries.map((e) => e.kind)).toEqual(['members_added', 'members_removed', 'message']);
  });
});
