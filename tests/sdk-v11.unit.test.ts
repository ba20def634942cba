/**
 * The v1.1 SDK against a fake WebSocket (no server): typed entries, the local view (edits, deletes),
 * derived receipts, removal (by entry and by a refused resume), edit/delete writes with keys and retries.
 */
import { afterEach, describe, expect, it } from 'vitest';
import {
  MessageView,
  RealChatClient,
  toEntry,
  type ClientOptions,
  type Envelope,
  type Receipt,
  type ReceiptInfo,
  type Removal,
  type TimelineEntry,
} from '../client/index.js';
import { until } from './harness/until.js';
import { FakeServer, type Frame } from './harness/fake-socket.js';

const ME = '11111111-1111-4111-8111-111111111111';
const BOB = '22222222-2222-4222-8222-222222222222';
const CONV = '33333333-3333-4333-8333-333333333333';
const OTHER = '44444444-4444-4444-8444-444444444444';

const clients: RealChatClient[] = [];
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});

let keyNo = 0;
function makeClient(opts: Partial<ClientOptions> = {}) {
  const server = new FakeServer(ME);
  const client = new RealChatClient({
    url: 'ws://fake/v1/ws',
    token: 't',
    WebSocket: server.WebSocket,
    random: () => 0,
    randomUUID: () => `key-${++keyNo}`,
    ...opts,
  });
  clients.push(client);
  const entries: TimelineEntry[] = [];
  const updates: Envelope[] = [];
  const removed: Removal[] = [];
  const receipts: Array<[Receipt, ReceiptInfo]> = [];
  const messages: Envelope[] = [];
  client.on('entry', (e) => entries.push(e));
  client.on('update', (m) => updates.push(m));
  client.on('removed', (r) => removed.push(r));
  client.on('receipt', (r, i) => receipts.push([r, i]));
  client.on('message', (m) => messages.push(m));
  return { client, server, entries, updates, removed, receipts, messages };
}

let idNo = 0;
function env(seq: number, over: Partial<Envelope> = {}, conv = CONV): Envelope {
  return {
    message_id: `m${seq}-${++idNo}`,
    conversation_id: conv,
    sender_id: BOB,
    sequence_number: seq,
    payload: { text: `t${seq}` },
    created_at: `2026-01-01T00:00:${String(seq).padStart(2, '0')}.000Z`,
    idempotency_key: `k${seq}`,
    ...over,
  };
}
const live = (m: Envelope): Frame => ({ type: 'message', message: m, via: 'live' });

describe('typed entries (toEntry)', () => {
  it('types each kind, and passes unknown kinds and malformed payloads through as `unknown`', () => {
    expect(toEntry(env(1))).toMatchObject({ kind: 'message', payload: { text: 't1' }, deleted: false });
    expect(toEntry(env(1, { kind: 'message', deleted: true, payload: null }))).toMatchObject({
      kind: 'message',
      deleted: true,
      payload: null,
    });
    expect(toEntry(env(1, { edited_at: 'x' }))).toMatchObject({ kind: 'message', edited_at: 'x' });
    expect(toEntry(env(2, { kind: 'edit', ref_message_id: 'm1', payload: 'new' }))).toMatchObject({
      kind: 'edit',
      ref_message_id: 'm1',
      payload: 'new',
    });
    expect(toEntry(env(3, { kind: 'delete', ref_message_id: 'm1', payload: null }))).toMatchObject({
      kind: 'delete',
      ref_message_id: 'm1',
    });
    expect(toEntry(env(4, { kind: 'members_added', payload: { user_ids: [ME], by: BOB } }))).toMatchObject({
      kind: 'members_added',
      user_ids: [ME],
      by: BOB,
    });
    expect(toEntry(env(5, { kind: 'members_removed', payload: { user_ids: [ME], by: BOB, reason: 'removed' } }))).toMatchObject({
      kind: 'members_removed',
      user_ids: [ME],
      reason: 'removed',
    });
    expect(toEntry(env(6, { kind: 'role_changed', payload: { user_id: ME, role: 'admin', by: BOB } }))).toMatchObject({
      kind: 'role_changed',
      user_id: ME,
      role: 'admin',
    });
    expect(toEntry(env(7, { kind: 'poll' as never }))).toMatchObject({ kind: 'unknown', original_kind: 'poll', sequence_number: 7 });
    expect(toEntry(env(8, { kind: 'members_removed', payload: { user_ids: 'nope' } }))).toMatchObject({ kind: 'unknown' });
    expect(toEntry(env(9, { kind: 'edit' }))).toMatchObject({ kind: 'unknown', original_kind: 'edit' });
  });
});

describe('the local view', () => {
  it('applies edits and deletes; deleted is terminal; a history page older than a live change does not undo it', () => {
    const v = new MessageView({ maxMessagesPerConversation: 3, maxConversations: 10 });
    const m1 = env(1);
    v.put(m1);
    const edit = toEntry(env(2, { kind: 'edit', ref_message_id: m1.message_id, payload: { text: 'e' } }));
    expect(v.apply(edit as never)).toMatchObject({ payload: { text: 'e' }, edited_at: edit.created_at });
    // A page read before the edit (original payload) does not undo it.
    expect(v.put(m1)).toMatchObject({ payload: { text: 'e' }, edited_at: edit.created_at });
    const del = toEntry(env(3, { kind: 'delete', ref_message_id: m1.message_id, payload: null }));
    expect(v.apply(del as never)).toMatchObject({ payload: null, deleted: true });
    expect(v.get(CONV, m1.message_id)?.edited_at).toBeUndefined();
    expect(v.apply(edit as never)).toMatchObject({ payload: null, deleted: true });
    expect(v.put({ ...m1, edited_at: 'z', payload: 'later' })).toMatchObject({ payload: null, deleted: true });
    // Bounded: the oldest by sequence goes.
    for (let i = 4; i <= 7; i++) v.put(env(i));
    expect(v.list(CONV).map((m) => m.sequence_number)).toEqual([5, 6, 7]);
  });
});

describe('RealChatClient v1.1 (fake server)', () => {
  it('applies edit and delete entries to the messages it holds and emits update events', async () => {
    const h = makeClient();
    await h.client.connect();
    const m1 = env(1);
    h.server.last.receive(live(m1));
    h.server.last.receive(live(env(2, { sender_id: BOB, kind: 'edit', ref_message_id: m1.message_id, payload: { text: 'edited' } })));
    await until('edit applied', () => h.updates.length === 1);
    expect(h.updates[0]).toMatchObject({
      message_id: m1.message_id,
      sequence_number: 1,
      payload: { text: 'edited' },
      edited_at: expect.any(String),
    });
    expect(h.client.message(CONV, m1.message_id)).toMatchObject({ payload: { text: 'edited' } });
    h.server.last.receive(live(env(3, { kind: 'delete', ref_message_id: m1.message_id, payload: null })));
    await until('delete applied', () => h.updates.length === 2);
    expect(h.client.messages(CONV)).toEqual([expect.objectContaining({ message_id: m1.message_id, payload: null, deleted: true })]);
    expect(h.entries.map((e) => e.kind)).toEqual(['message', 'edit', 'delete']);
    // v1.0 behaviour: every entry is still a `message` event, in order.
    expect(h.messages.map((m) => m.sequence_number)).toEqual([1, 2, 3]);
  });

  it('a plain message from S at N is S\u2019s read receipt at N (not the other kinds)', async () => {
    const h = makeClient();
    await h.client.connect();
    h.server.last.receive(live(env(1, { sender_id: BOB })));
    h.server.last.receive(live(env(2, { sender_id: ME })));
    h.server.last.receive(live(env(3, { kind: 'role_changed', payload: { user_id: BOB, role: 'admin', by: ME }, sender_id: ME })));
    h.server.last.receive({ type: 'receipt', conversation_id: CONV, user_id: BOB, read_sequence: 3 });
    await until('receipts', () => h.receipts.length === 3);
    expect(h.receipts).toEqual([
      [{ type: 'receipt', conversation_id: CONV, user_id: BOB, read_sequence: 1 }, { derived: true }],
      [{ type: 'receipt', conversation_id: CONV, user_id: ME, read_sequence: 2 }, { derived: true }],
      [{ type: 'receipt', conversation_id: CONV, user_id: BOB, read_sequence: 3 }, { derived: false }],
    ]);
  });

  it('ignores unknown kinds safely (typed as unknown; the position still advances)', async () => {
    const h = makeClient();
    await h.client.connect();
    h.server.last.receive(live(env(1, { kind: 'poll' as never, payload: { q: '?' } })));
    h.server.last.receive(live(env(2)));
    await until('two entries', () => h.entries.length === 2);
    expect(h.entries.map((e) => e.kind)).toEqual(['unknown', 'message']);
    expect(h.client.position(CONV)).toBe(2);
    expect(h.client.messages(CONV).map((m) => m.sequence_number)).toEqual([2]);
  });

  it('a members_removed entry that removes this user ends the conversation here: event, no resume, no gap fill', async () => {
    const h = makeClient();
    await h.client.connect();
    h.client.track(OTHER, 0);
    h.server.last.receive(live(env(1)));
    // 2 is missing: 3 opens a gap and a fill; 4 removes us.
    h.server.last.receive(live(env(3)));
    await until('a fill was asked for', () => h.server.sent('sync').some((f) => f.conversation_id === CONV));
    const removal = env(4, { kind: 'members_removed', payload: { user_ids: [ME], by: BOB, reason: 'removed' } });
    h.server.last.receive({ type: 'messages', conversation_id: CONV, messages: [env(2), removal, env(5)], has_more: false });
    await until('removed', () => h.removed.length === 1);
    expect(h.removed[0]).toMatchObject({ conversation_id: CONV, reason: 'removed', by: BOB, sequence_number: 4 });
    expect(h.entries.map((e) => e.sequence_number)).toEqual([1, 2, 3, 4]); // not 5
    expect(h.client.position(CONV)).toBeUndefined();
    expect(h.client.messages(CONV)).toEqual([]);
    // A late duplicate up to the removal is ignored; it does not start tracking again.
    h.server.last.receive(live(env(3)));
    await new Promise((r) => setTimeout(r, 20));
    expect(h.client.position(CONV)).toBeUndefined();
    // The next connection does not resume it.
    h.server.last.serverClose(4000, 'draining');
    await until('reconnected', () => h.server.sent('hello').length === 2);
    expect(h.server.sent('hello')[1]!.resume).toEqual({ [OTHER]: 0 });
    // Added again later: a members_added entry above the removal starts it afresh.
    await until('welcomed', () => h.client.connectionState === 'connected');
    h.server.last.receive(live(env(9, { kind: 'members_added', payload: { user_ids: [ME], by: BOB } })));
    await until('tracked again', () => h.client.position(CONV) === 9);
  });

  it('a resume refused with forbidden (ref = conversation) drops the conversation', async () => {
    const h = makeClient();
    const errors: unknown[] = [];
    h.client.on('error', (e) => errors.push(e));
    h.client.track(CONV, 5);
    h.client.track(OTHER, 2);
    h.server.afterWelcome = [{ type: 'error', code: 'forbidden', message: 'not a member of this conversation', ref: CONV }];
    await h.client.connect();
    expect(h.server.sent('hello')[0]!.resume).toEqual({ [CONV]: 5, [OTHER]: 2 });
    await until('removed', () => h.removed.length === 1);
    expect(h.removed[0]).toMatchObject({ conversation_id: CONV, reason: 'forbidden' });
    expect(errors).toEqual([expect.objectContaining({ code: 'forbidden', ref: CONV })]);
    expect(h.client.position(CONV)).toBeUndefined();
    h.server.afterWelcome = [];
    h.server.last.serverClose(4000, 'draining');
    await until('reconnected', () => h.server.sent('hello').length === 2);
    expect(h.server.sent('hello')[1]!.resume).toEqual({ [OTHER]: 2 });
  });

  it('edit and delete go over the socket with idempotency keys, are retried with the same key, and resolve with the ack', async () => {
    const h = makeClient();
    let refusals = 1;
    h.server.answer = (f, s) => {
      if (f.type !== 'edit' && f.type !== 'delete') return;
      if (f.type === 'edit' && refusals-- > 0) {
        s.receive({ type: 'error', code: 'unavailable', message: 'busy', ref: f.idempotency_key });
        return;
      }
      s.receive({
        type: 'ack',
        // A delete of an already deleted message answers the existing entry, under the request's key.
        idempotency_key: f.idempotency_key,
        conversation_id: f.conversation_id,
        message_id: `entry-${f.type}`,
        sequence_number: f.type === 'edit' ? 7 : 8,
        created_at: 'now',
        duplicate: f.type === 'delete',
      });
    };
    await h.client.connect();
    const ack = await h.client.edit(CONV, 'm1', { text: 'new' });
    expect(ack).toMatchObject({ message_id: 'entry-edit', sequence_number: 7 });
    const edits = h.server.sent('edit');
    expect(edits).toHaveLength(2);
    expect(edits[0]).toEqual({
      type: 'edit',
      conversation_id: CONV,
      message_id: 'm1',
      idempotency_key: ack.idempotency_key,
      payload: { text: 'new' },
    });
    expect(edits[1]).toEqual(edits[0]);
    const del = await h.client.delete(CONV, 'm1', { idempotencyKey: 'my-delete' });
    expect(del).toMatchObject({ message_id: 'entry-delete', duplicate: true });
    expect(h.server.sent('delete')).toEqual([{ type: 'delete', conversation_id: CONV, message_id: 'm1', idempotency_key: 'my-delete' }]);
    // Refusals that are final reject with the server's code.
    h.server.answer = (f, s) => s.receive({ type: 'error', code: 'forbidden', message: 'not yours', ref: f.idempotency_key });
    await expect(h.client.edit(CONV, 'm2', 'x')).rejects.toMatchObject({ code: 'forbidden' });
  });

  it('history({before}) is a sync with before_sequence over the socket; pages feed the view', async () => {
    const h = makeClient();
    const m1 = env(1, { edited_at: '2026-01-01T00:00:09.000Z', payload: 'latest' });
    h.server.answer = (f, s) => {
      if (f.type === 'sync')
        s.receive({
          type: 'messages',
          conversation_id: f.conversation_id,
          messages: [m1, env(2, { deleted: true, payload: null })],
          has_more: true,
        });
    };
    await h.client.connect();
    h.client.track(CONV, 10);
    const syncsBefore = h.server.sent('sync').length;
    const page = await h.client.history(CONV, { before: 3, limit: 2 });
    expect(h.server.sent('sync').slice(syncsBefore)).toContainEqual({ type: 'sync', conversation_id: CONV, before_sequence: 3, limit: 2 });
    expect(page.has_more).toBe(true);
    expect(page.messages.map((m) => [m.sequence_number, m.payload])).toEqual([
      [1, 'latest'],
      [2, null],
    ]);
    expect(h.client.messages(CONV).map((m) => m.sequence_number)).toEqual([1, 2]);
  });

  it('leave, removeMember, setRole, members and user helpers call the REST routes', async () => {
    const calls: Array<{ method: string; url: string; body?: string; key?: string }> = [];
    const fetch = async (url: string, init: { method: string; headers: Record<string, string>; body?: string }) => {
      calls.push({
        method: init.method,
        url,
        ...(init.body ? { body: init.body } : {}),
        ...(init.headers['idempotency-key'] ? { key: init.headers['idempotency-key'] } : {}),
      });
      const bodies: Record<string, unknown> = {
        DELETE: { conversation_id: CONV, removed_user_ids: [ME], member_count: 1, last_sequence: 4 },
        PUT: url.endsWith('/role') ? { conversation_id: CONV, user_id: BOB, role: 'admin', last_sequence: 5 } : { user_id: ME, name: 'Me' },
        GET: url.includes('/members')
          ? { members: [], has_more: false }
          : url.includes('/users?')
            ? { users: [{ user_id: BOB, name: 'Bob' }] }
            : { user_id: BOB, name: 'Bob' },
      };
      return { status: 200, text: async () => JSON.stringify(bodies[init.method]) };
    };
    const h = makeClient({ fetch, url: 'wss://chat.example/v1/ws' });
    await h.client.connect();
    h.client.track(CONV, 3);
    await h.client.setRole(CONV, BOB, 'admin');
    await h.client.removeMember(CONV, BOB);
    await h.client.members(CONV, { limit: 2, after: BOB });
    expect(await h.client.searchUsers('bo', { limit: 3 })).toEqual([{ user_id: BOB, name: 'Bob' }]);
    expect(await h.client.getUser(BOB)).toEqual({ user_id: BOB, name: 'Bob' });
    await h.client.setName('Me');
    await h.client.leave(CONV);
    const base = 'https://chat.example';
    expect(calls.map((c) => `${c.method} ${c.url}`)).toEqual([
      `PUT ${base}/v1/conversations/${CONV}/members/${BOB}/role`,
      `DELETE ${base}/v1/conversations/${CONV}/members/${BOB}`,
      `GET ${base}/v1/conversations/${CONV}/members?limit=2&after=${BOB}`,
      `GET ${base}/v1/users?query=bo&limit=3`,
      `GET ${base}/v1/users/${BOB}`,
      `PUT ${base}/v1/users/me`,
      `DELETE ${base}/v1/conversations/${CONV}/members/${ME}`,
    ]);
    expect(calls[0]!.body).toBe('{"role":"admin"}');
    expect(calls[0]!.key).toMatch(/^key-/);
    // leave: the conversation is no longer tracked, one removed event.
    expect(h.removed).toEqual([{ conversation_id: CONV, reason: 'left', by: ME, sequence_number: 4 }]);
    expect(h.client.position(CONV)).toBeUndefined();
    // Our own members_removed entry arriving after the leave answered is not a second removal.
    h.server.last.receive(live(env(4, { kind: 'members_removed', payload: { user_ids: [ME], by: ME, reason: 'left' } })));
    await new Promise((r) => setTimeout(r, 20));
    expect(h.removed).toHaveLength(1);
  });
});
