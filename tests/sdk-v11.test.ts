/**
 * The v1.1 SDK surface against a real in-process server (pglite): edit, delete, leave,
 * removeMember, setRole, members, history({before}), user helpers, typed entries, the local view
 * and derived receipts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { startTestServer, type TestServer } from './harness/server.js';
import {
  RealChatClient,
  RestClient,
  type Envelope,
  type Receipt,
  type ReceiptInfo,
  type Removal,
  type TimelineEntry,
  type WebSocketConstructor,
} from '../client/index.js';
import { until } from './harness/until.js';

interface Harnessed {
  client: RealChatClient;
  userId: string;
  token: string;
  rest: RestClient;
  entries: TimelineEntry[];
  updates: Envelope[];
  removed: Removal[];
  receipts: Array<[Receipt, ReceiptInfo]>;
  sent: Array<Record<string, any>>;
}

describe('SDK v1.1 against a real server (pglite)', () => {
  let s: TestServer;
  const clients: RealChatClient[] = [];
  beforeAll(async () => {
    s = await startTestServer('pglite', { REALCHAT_SENDS_PER_S: '10000', REALCHAT_SEND_BURST: '10000' });
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    await s?.close();
  });

  /** A user (dev token with a name) and a connected client that records what it emits and sends. */
  async function user(name: string): Promise<Harnessed> {
    const anon = new RestClient({ baseUrl: s.http });
    const { user_id, token } = await anon.devToken({ name });
    const sent: Array<Record<string, any>> = [];
    // Records outgoing frames (to check that edits and deletes go over the socket).
    const Recording = class extends WebSocket {
      override send(data: any, ...rest: any[]): void {
        sent.push(JSON.parse(String(data)));
        (super.send as any)(data, ...rest);
      }
    } as unknown as WebSocketConstructor;
    const client = new RealChatClient({ url: s.wsUrl, token, WebSocket: Recording, syncPageSize: 50 });
    clients.push(client);
    const h: Harnessed = {
      client,
      userId: user_id,
      token,
      rest: new RestClient({ baseUrl: s.http, token }),
      entries: [],
      updates: [],
      removed: [],
      receipts: [],
      sent,
    };
    client.on('entry', (e) => h.entries.push(e));
    client.on('update', (m) => h.updates.push(m));
    client.on('removed', (r) => h.removed.push(r));
    client.on('receipt', (r, info) => h.receipts.push([r, info]));
    await client.connect();
    return h;
  }

  it('edit and delete over the socket: acks, typed entries, the local view, erasure in history', async () => {
    const alice = await user('Alice Edits');
    const bob = await user('Bob Edits');
    const conv = (await alice.rest.createConversation([bob.userId])).conversation_id;
    const sent = await alice.client.send(conv, { text: 'helo' });
    await until('bob has the message', () => bob.client.messages(conv).length === 1);

    const editAck = await alice.client.edit(conv, sent.message_id, { text: 'hello' });
    expect(editAck).toMatchObject({ type: 'ack', conversation_id: conv, sequence_number: 2, duplicate: false });
    expect(alice.sent.filter((f) => f.type === 'edit')).toEqual([
      {
        type: 'edit',
        conversation_id: conv,
        message_id: sent.message_id,
        idempotency_key: editAck.idempotency_key,
        payload: { text: 'hello' },
      },
    ]);
    // The same key again: the same entry, a duplicate.
    const again = await alice.client.edit(conv, sent.message_id, { text: 'hello' }, { idempotencyKey: editAck.idempotency_key });
    expect(again).toMatchObject({ message_id: editAck.message_id, duplicate: true });

    await until('bob applied the edit', () => bob.updates.length === 1);
    expect(bob.updates[0]).toMatchObject({ message_id: sent.message_id, payload: { text: 'hello' }, edited_at: expect.any(String) });
    expect(bob.client.message(conv, sent.message_id)).toMatchObject({ payload: { text: 'hello' }, edited_at: expect.any(String) });
    const edit = bob.entries.find((e) => e.kind === 'edit');
    expect(edit).toMatchObject({ kind: 'edit', ref_message_id: sent.message_id, payload: { text: 'hello' }, sequence_number: 2 });

    // Bob cannot edit Alice's message.
    await expect(bob.client.edit(conv, sent.message_id, 'x')).rejects.toMatchObject({ code: 'forbidden' });

    const delAck = await alice.client.delete(conv, sent.message_id);
    expect(delAck).toMatchObject({ conversation_id: conv, sequence_number: 3, duplicate: false });
    expect(alice.sent.filter((f) => f.type === 'delete')).toEqual([
      { type: 'delete', conversation_id: conv, message_id: sent.message_id, idempotency_key: delAck.idempotency_key },
    ]);
    await until('bob applied the delete', () => bob.updates.length === 2);
    expect(bob.client.message(conv, sent.message_id)).toMatchObject({ payload: null, deleted: true });
    expect(bob.entries.map((e) => e.kind)).toEqual(['message', 'edit', 'delete']);
    // A deleted message cannot be edited.
    await expect(alice.client.edit(conv, sent.message_id, 'again')).rejects.toMatchObject({ code: 'conflict' });

    // History (socket, before a sequence) shows the current state: deleted, payload erased.
    const page = await bob.client.history(conv, { before: 4, limit: 10 });
    expect(page.messages.map((m) => m.sequence_number)).toEqual([1, 2, 3]);
    expect(page.messages[0]).toMatchObject({ message_id: sent.message_id, deleted: true, payload: null });
    expect(page.messages[1]).toMatchObject({ kind: 'edit', payload: null });
  });

  it('deleting an already deleted message resolves (with the existing delete entry)', async () => {
    const alice = await user('Alice Twice');
    const bob = await user('Bob Twice');
    const conv = (await alice.rest.createConversation([bob.userId])).conversation_id;
    const m = await bob.client.send(conv, 'oops');
    const first = await bob.client.delete(conv, m.message_id);
    // The owner deletes it again, with another key: answered with the existing delete entry.
    const second = await alice.client.delete(conv, m.message_id);
    expect(second).toMatchObject({ message_id: first.message_id, sequence_number: first.sequence_number, duplicate: true });
  });

  it('a message entry from S at N is S\u2019s read receipt at N', async () => {
    const alice = await user('Alice Receipt');
    const bob = await user('Bob Receipt');
    const conv = (await alice.rest.createConversation([bob.userId])).conversation_id;
    await bob.client.send(conv, 'hi');
    await until('alice derives bob\u2019s receipt', () => alice.receipts.some(([r]) => r.user_id === bob.userId));
    expect(alice.receipts.find(([r]) => r.user_id === bob.userId)).toEqual([
      { type: 'receipt', conversation_id: conv, user_id: bob.userId, read_sequence: 1 },
      { derived: true },
    ]);
    // The server agrees: sending moved bob's read position.
    const members = await alice.client.members(conv);
    expect(members.members.find((x) => x.user_id === bob.userId)).toMatchObject({ read_sequence: 1 });
  });

  it('members, setRole, removeMember and leave; a removed user stops tracking the conversation', async () => {
    const alice = await user('Alice Owner');
    const bob = await user('Bob Member');
    const carol = await user('Carol Member');
    const conv = (await alice.rest.createConversation([bob.userId, carol.userId], 'roles')).conversation_id;
    await alice.client.send(conv, 'one');
    await until('bob and carol track the conversation', () => bob.client.position(conv) === 1 && carol.client.position(conv) === 1);

    // members: all of them, paged by user id.
    const all = await alice.client.members(conv);
    expect(all.has_more).toBe(false);
    expect(all.members.map((m) => m.user_id)).toEqual([alice.userId, bob.userId, carol.userId].sort());
    expect(all.members.find((m) => m.user_id === alice.userId)).toMatchObject({ role: 'owner', name: 'Alice Owner', read_sequence: 1 });
    const first = await alice.client.members(conv, { limit: 1 });
    expect(first).toMatchObject({ has_more: true });
    const rest = await alice.client.members(conv, { limit: 5, after: first.members[0]!.user_id });
    expect([...first.members, ...rest.members].map((m) => m.user_id)).toEqual(all.members.map((m) => m.user_id));

    // setRole: bob becomes an admin (a role_changed entry everyone gets).
    const role = await alice.client.setRole(conv, bob.userId, 'admin');
    expect(role).toMatchObject({ conversation_id: conv, user_id: bob.userId, role: 'admin', last_sequence: 2 });
    await until('carol sees the role change', () => carol.entries.some((e) => e.kind === 'role_changed'));
    expect(carol.entries.find((e) => e.kind === 'role_changed')).toMatchObject({ user_id: bob.userId, role: 'admin', by: alice.userId });
    expect((await alice.client.members(conv)).members.find((m) => m.user_id === bob.userId)?.role).toBe('admin');
    // Only the owner sets roles.
    await expect(bob.client.setRole(conv, carol.userId, 'admin')).rejects.toMatchObject({ code: 'forbidden' });

    // removeMember: the admin removes carol; carol learns it and stops tracking the conversation.
    const removed = await bob.client.removeMember(conv, carol.userId);
    expect(removed).toMatchObject({ conversation_id: conv, removed_user_ids: [carol.userId], member_count: 2, last_sequence: 3 });
    await until('carol got her removal', () => carol.removed.length === 1);
    expect(carol.removed[0]).toMatchObject({ conversation_id: conv, reason: 'removed', by: bob.userId, sequence_number: 3 });
    expect(carol.client.position(conv)).toBeUndefined();
    expect(carol.client.messages(conv)).toEqual([]);
    await until('alice sees the removal', () => alice.entries.some((e) => e.kind === 'members_removed'));
    expect(alice.entries.find((e) => e.kind === 'members_removed')).toMatchObject({ user_ids: [carol.userId], reason: 'removed' });
    expect(alice.removed).toEqual([]);

    // leave: bob leaves; one `removed` event, the conversation is forgotten; later entries do not reach him.
    const left = await bob.client.leave(conv);
    expect(left).toMatchObject({ removed_user_ids: [bob.userId], member_count: 1, last_sequence: 4 });
    await new Promise((r) => setTimeout(r, 200));
    expect(bob.removed).toEqual([expect.objectContaining({ conversation_id: conv, reason: 'left', sequence_number: 4 })]);
    expect(bob.client.position(conv)).toBeUndefined();
    await alice.client.send(conv, 'after they left');
    await new Promise((r) => setTimeout(r, 300));
    expect(bob.entries.filter((e) => e.sequence_number > 4 && e.conversation_id === conv)).toEqual([]);
    expect((await alice.client.members(conv)).members.map((m) => m.user_id)).toEqual([alice.userId]);
  });

  it('a resume refused with forbidden drops the conversation (no more resume for it)', async () => {
    const alice = await user('Alice Resume');
    const bob = await user('Bob Resume');
    const conv = (await alice.rest.createConversation([bob.userId])).conversation_id;
    await alice.client.send(conv, 'x');
    await until('bob tracks it', () => bob.client.position(conv) === 1);
    // Bob is removed while his socket is down: he learns it from the resume's forbidden error.
    const hellos: Array<Record<string, any>> = [];
    const before = bob.sent.length;
    bob.client.setNetworkAvailable(false);
    await alice.client.removeMember(conv, bob.userId);
    bob.client.setNetworkAvailable(true);
    await until('bob is removed', () => bob.removed.length === 1, 15_000);
    expect(bob.removed[0]).toMatchObject({ conversation_id: conv, reason: 'forbidden' });
    hellos.push(...bob.sent.slice(before).filter((f) => f.type === 'hello'));
    expect(hellos[0]?.resume).toMatchObject({ [conv]: 1 });
    expect(bob.client.position(conv)).toBeUndefined();
    // The next connection does not resume it again.
    bob.client.setNetworkAvailable(false);
    bob.client.setNetworkAvailable(true);
    await until(
      'bob reconnected',
      () => bob.client.connectionState === 'connected' && bob.sent.filter((f) => f.type === 'hello').length >= 3,
    );
    expect(bob.sent.filter((f) => f.type === 'hello').at(-1)?.resume?.[conv]).toBeUndefined();
  });

  it('history({before}) pages backwards over the socket and over REST; user helpers', async () => {
    const alice = await user('Alice History');
    const conv = (await alice.rest.createConversation([])).conversation_id;
    for (let i = 1; i <= 12; i++) await alice.rest.sendMessage(conv, { n: i }, `h${i}`);
    const viaWs = await alice.client.history(conv, { before: 13, limit: 5 });
    expect(viaWs.messages.map((m) => m.sequence_number)).toEqual([8, 9, 10, 11, 12]);
    expect(viaWs.has_more).toBe(true);
    expect(alice.sent.filter((f) => f.type === 'sync').at(-1)).toEqual({
      type: 'sync',
      conversation_id: conv,
      before_sequence: 13,
      limit: 5,
    });
    const older = await alice.client.history(conv, { before: 8, limit: 5 });
    expect(older.messages.map((m) => m.sequence_number)).toEqual([3, 4, 5, 6, 7]);
    const oldest = await alice.client.history(conv, { before: 3, limit: 5 });
    expect(oldest).toMatchObject({ has_more: false });
    expect(oldest.messages.map((m) => m.sequence_number)).toEqual([1, 2]);
    // Pages land in the local view.
    expect(alice.client.messages(conv).map((m) => m.sequence_number)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);

    // Not connected: the same over REST.
    const offline = new RealChatClient({ url: s.wsUrl, token: alice.token, WebSocket: WebSocket as unknown as WebSocketConstructor });
    clients.push(offline);
    const viaRest = await offline.history(conv, { before: 5, limit: 2 });
    expect(viaRest).toMatchObject({ has_more: true });
    expect(viaRest.messages.map((m) => m.payload)).toEqual([{ n: 3 }, { n: 4 }]);

    // Users: names from the token, set, searched, resolved.
    expect(await alice.client.getUser(alice.userId)).toEqual({ user_id: alice.userId, name: 'Alice History' });
    expect(await alice.client.setName('Alicia Historian')).toEqual({ user_id: alice.userId, name: 'Alicia Historian' });
    const found = await alice.client.searchUsers('alicia hist');
    expect(found).toContainEqual({ user_id: alice.userId, name: 'Alicia Historian' });
    expect(await alice.client.getUser('00000000-0000-4000-8000-000000000000')).toBeNull();
  });
});
