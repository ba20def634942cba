/**
 * Protocol v1.1 membership changes across the distributed stack (issue 13): 3 gateway nodes, the
 * relay and a delivery worker in this process, with real Kafka, Redis (presence) and PostgreSQL
 * (tests/harness/inproc-stack.ts). A removed member receives the `members_removed` entry, then no
 * later entry of that conversation on any connection or node, also where a membership cache is
 * stale (loaded before the removal, or on a node the removal was never routed to), on both the
 * presence path and the broadcast path (no presence: each node resolves recipients from its own
 * cache); afterwards every REST and WS operation of the removed user there answers `forbidden`; a
 * large room likewise; a member added back receives the `members_added` entry and what follows.
 */
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rest, startInProcStack, type InProcStack } from './harness/inproc-stack.js';
import { TestClient, type Frame } from './harness/ws-client.js';

const entryFrames = (c: TestClient, conv: string): Frame[] =>
  c.frames.filter((f) => f.type === 'message' && f.message.conversation_id === conv);
const seqs = (c: TestClient, conv: string): number[] => entryFrames(c, conv).map((f) => f.message.sequence_number);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits until the connection has written `seq` of `conv` (in order: everything below too). */
async function waitSeq(c: TestClient, conv: string, seq: number, timeoutMs = 30_000): Promise<void> {
  try {
    await c.waitFor((f) => f.type === 'message' && f.message.conversation_id === conv && f.message.sequence_number >= seq, timeoutMs);
  } catch (err) {
    throw new Error(
      `${names.get(c) ?? 'a connection'} did not get sequence ${seq} (has ${seqs(c, conv)}): ${(err as Error).message.slice(0, 200)}`,
    );
  }
}
const names = new Map<TestClient, string>();

/** Sends one WS request frame and returns the answer that follows it (an error, an ack or a reply). */
async function request(c: TestClient, frame: Record<string, unknown>, answer: (f: Frame) => boolean): Promise<Frame> {
  const since = c.frames.length;
  c.send(frame);
  return c.waitFor((f) => f.type === 'error' || answer(f), 10_000, since);
}

describe('timeline across nodes: removal, stale caches, re-add (distributed)', () => {
  let s: InProcStack;
  let redis: Redis;
  const open: TestClient[] = [];
  const connect = async (node: number, userId: string, resume?: Record<string, number>, name = `${userId.slice(0, 4)}@${node}`) => {
    const c = await TestClient.connect(s.ws(node), await s.token(userId), resume);
    names.set(c, name);
    open.push(c);
    return c;
  };
  /** A plain message sent over REST at `node`; returns its sequence. */
  const say = async (node: number, user: string, conv: string, text: string): Promise<number> => {
    const r = await rest(s.http(node), await s.token(user), 'POST', `/v1/conversations/${conv}/messages`, {
      idempotency_key: randomUUID(),
      payload: { text },
    });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    return r.body.sequence_number;
  };
  /** Waits until Redis has the presence entry of `user` on `node`. */
  const presenceOf = async (user: string, node: number) => {
    for (let i = 0; i < 100; i++) {
      if (await redis.hget(`rc:u:${user}`, `gateway-${node}`)) return;
      await sleep(50);
    }
    throw new Error(`no presence entry for ${user} on gateway-${node}`);
  };

  beforeAll(async () => {
    // Rooms past 5 members are large; the stack starts on the broadcast path (no presence) so that
    // every node's membership cache is loaded with the first messages.
    s = await startInProcStack({ gateways: 3, env: { REALCHAT_LARGE_ROOM_MEMBERS: '5' }, delivery: 'broadcast' });
    redis = new Redis({ port: s.redis.port, host: '127.0.0.1', lazyConnect: false, maxRetriesPerRequest: 1 });
  }, 240_000);
  afterAll(async () => {
    for (const c of open) c.close();
    redis?.disconnect();
    await s?.close();
  }, 120_000);

  const [O, R, M] = [randomUUID(), randomUUID(), randomUUID()];
  let conv = '';
  let removalSeq = 0;
  let lastSeq = 0;
  let r0: TestClient, r1: TestClient, r2: TestClient, m0: TestClient, m1: TestClient, m2: TestClient;

  /*
   * Breaks it: the removed user's connections going on receiving entries after the removal (the
   * `this.leave(conv)` calls in gateway/connection.ts: the stale node 2 then re-sends the removal
   * from the database on each gap, and the live path would write the next entry), the removed user
   * not receiving the removal (the members_removed branch of delivery/recipient-routing.ts, or the
   * `...event.user_ids` addition in gateway/inbox.ts on the broadcast path), or membership checks
   * on the REST/WS paths that still let a removed user read or write.
   */
  it('(a) removed on node 1 by the owner on node 0: the removal entry live, then nothing more on any node, even from a stale cache; then forbidden everywhere', async () => {
    conv = (await rest(s.http(0), await s.token(O), 'POST', '/v1/conversations', { member_ids: [R, M] })).body.conversation_id;
    expect(conv).toMatch(/^[0-9a-f-]{36}$/);
    // R on every node (node 2's connection is the one the registry will lose); M on nodes 0 and 1.
    r0 = await connect(0, R, undefined, 'r0');
    r1 = await connect(1, R, undefined, 'r1');
    r2 = await connect(2, R, undefined, 'r2');
    m0 = await connect(0, M, undefined, 'm0');
    m1 = await connect(1, M, undefined, 'm1');
    const co = await connect(0, O, undefined, 'o0');

    // Broadcast path: every node delivers from its own membership cache, which these load (with R).
    for (let i = 0; i < 3; i++) lastSeq = await say(i, [O, M, R][i]!, conv, `warm-${i}`);
    for (const c of [r0, r1, r2, m0, m1, co]) await waitSeq(c, conv, lastSeq);

    // Presence path from here; the worker's cache is loaded before the removal too.
    await s.useDelivery(true);
    for (const n of [0, 1, 2]) await presenceOf(R, n);
    lastSeq = await say(1, M, conv, 'presence-warm');
    for (const c of [r0, r1, r2, m0, m1, co]) await waitSeq(c, conv, lastSeq);

    // The registry loses R's entry on node 2 (a failover to a replica that lacked it): the removal
    // is routed to nodes 0 and 1 only, node 2 keeps R in its cache and r2 stays subscribed.
    await redis.hdel(`rc:u:${R}`, 'gateway-2');
    await redis.srem('rc:n:gateway-2', R);

    const removed = await rest(s.http(0), await s.token(O), 'DELETE', `/v1/conversations/${conv}/members/${R}`);
    expect(removed.status, JSON.stringify(removed.body)).toBe(200);
    expect(removed.body).toMatchObject({ conversation_id: conv, removed_user_ids: [R], member_count: 2 });
    removalSeq = removed.body.last_sequence;
    lastSeq = removalSeq;
    expect(removalSeq).toBe(5);
    // Every other member, and R's connections on nodes 0 and 1, receive the entry live.
    for (const c of [r0, r1, m0, m1, co]) {
      await waitSeq(c, conv, removalSeq);
      const f = entryFrames(c, conv).find((x) => x.message.sequence_number === removalSeq)!;
      expect(f.message).toMatchObject({ kind: 'members_removed', sender_id: O, payload: { user_ids: [R], by: O, reason: 'removed' } });
    }
    for (const c of [r0, r1]) expect(entryFrames(c, conv).find((x) => x.message.sequence_number === removalSeq)!.via).toBe('live');

    // After the removal: M observes on node 2 too (connected now; node 2's cache stays as it was).
    m2 = await connect(2, M, undefined, 'm2');
    // R's new connection on node 2 is refused the conversation.
    const late = await connect(2, R, { [conv]: 0 });
    const refused = await late.waitFor((f) => f.type === 'error');
    expect(refused).toMatchObject({ code: 'forbidden', ref: conv });

    // More entries on the presence path (plain, edit, delete), then on the broadcast path, where
    // node 2 resolves recipients from its stale cache (R still in it) and R's connections there
    // are the last gate.
    const after1 = await say(0, O, conv, 'after-1');
    const edit = await rest(
      s.http(0),
      await s.token(O),
      'PATCH',
      `/v1/conversations/${conv}/messages/${entryFrames(co, conv)[0]!.message.message_id}`,
      {
        idempotency_key: randomUUID(),
        payload: { text: 'warm-0 edited' },
      },
    );
    expect(edit.status).toBe(201);
    lastSeq = edit.body.sequence_number;
    expect(lastSeq).toBe(after1 + 1);
    for (const c of [m0, m1, m2]) await waitSeq(c, conv, lastSeq);

    await s.useDelivery(false);
    for (let i = 0; i < 4; i++) lastSeq = await say(i % 3, i % 2 ? M : O, conv, `broadcast-${i}`);
    co.send({ type: 'typing', conversation_id: conv });
    for (const c of [m0, m1, m2, co]) await waitSeq(c, conv, lastSeq);
    // Node 2 wrote every entry to m2; r2's catch-up (a database read) gets a moment more.
    await sleep(1500);

    // Nothing after the removal on any of R's connections; the removal exactly once on each.
    for (const [name, c] of [
      ['r0', r0],
      ['r1', r1],
      ['r2', r2],
      ['late', late],
    ] as const) {
      const got = seqs(c, conv);
      expect(
        got.filter((q) => q > removalSeq),
        `${name} got entries after its removal: ${got}`,
      ).toEqual([]);
      if (c !== late)
        expect(
          got.filter((q) => q === removalSeq),
          `${name}: ${got}`,
        ).toEqual([removalSeq]);
      expect(
        c.frames.filter((f) => f.type === 'typing' && f.conversation_id === conv),
        name,
      ).toEqual([]);
    }
    // r2 learned its removal from the database (node 2 never got it routed: its cache stayed stale),
    // in order, with no gap.
    expect(seqs(r2, conv)).toEqual([1, 2, 3, 4, 5]);
    expect(entryFrames(r2, conv).at(-1)!.via).toBe('fill');
    // The remaining members got everything in order.
    for (const c of [m0, m1]) expect(seqs(c, conv)).toEqual(Array.from({ length: lastSeq }, (_, i) => i + 1));

    // Every REST read and write by R answers forbidden, on any node.
    const tr = await s.token(R);
    const someId = entryFrames(co, conv)[1]!.message.message_id;
    const calls: Array<[string, string, unknown?]> = [
      ['GET', `/v1/conversations/${conv}/messages?after_sequence=0&limit=10`],
      ['GET', `/v1/conversations/${conv}/messages?before_sequence=${lastSeq}&limit=10`],
      ['POST', `/v1/conversations/${conv}/messages`, { idempotency_key: randomUUID(), payload: 'x' }],
      [
        'PATCH',
        `/v1/conversations/${conv}/messages/${entryFrames(co, conv)[2]!.message.message_id}`,
        { idempotency_key: randomUUID(), payload: 'y' },
      ],
      ['DELETE', `/v1/conversations/${conv}/messages/${someId}`],
      ['GET', `/v1/conversations/${conv}/members?limit=10`],
      ['POST', `/v1/conversations/${conv}/members`, { user_ids: [randomUUID()] }],
    ];
    for (const [method, path, body] of calls) {
      for (const node of [0, 1, 2]) {
        // Writes without a key in the body carry one in the Idempotency-Key header.
        const header: Record<string, string> =
          method !== 'GET' && !(body as { idempotency_key?: string } | undefined)?.idempotency_key
            ? { 'idempotency-key': randomUUID() }
            : {};
        const r = await rest(s.http(node), tr, method, path, body, header);
        expect([method, path, node, r.status, r.body?.error?.code]).toEqual([method, path, node, 403, 'forbidden']);
      }
    }
    // ...and every WS request, on the connection that was subscribed and on a new one.
    for (const c of [r1, r2, late]) {
      const key = randomUUID();
      const answers = [
        await request(c, { type: 'send', conversation_id: conv, idempotency_key: key, payload: 1 }, (f) => f.type === 'ack'),
        await request(
          c,
          { type: 'edit', conversation_id: conv, message_id: someId, idempotency_key: randomUUID(), payload: 2 },
          (f) => f.type === 'ack',
        ),
        await request(
          c,
          { type: 'delete', conversation_id: conv, message_id: someId, idempotency_key: randomUUID() },
          (f) => f.type === 'ack',
        ),
        await request(c, { type: 'sync', conversation_id: conv, after_sequence: 0, limit: 10 }, (f) => f.type === 'messages'),
        await request(c, { type: 'sync', conversation_id: conv, before_sequence: lastSeq + 1, limit: 10 }, (f) => f.type === 'messages'),
        await request(c, { type: 'typing', conversation_id: conv }, () => false),
      ];
      for (const a of answers) expect(a, JSON.stringify(a)).toMatchObject({ type: 'error', code: 'forbidden' });
    }
    // Nothing was written by R.
    expect(lastSeq).toBe(
      (await rest(s.http(0), await s.token(O), 'GET', `/v1/conversations/${conv}/messages?before_sequence=1000&limit=1`)).body.messages[0]
        .sequence_number,
    );
  }, 180_000);

  /*
   * Breaks it: a members_added entry not delivered to the added user (the inbox's registry.join,
   * the router's recipients for an entry-carrying members_added), or a connection that left not
   * subscribing again (Connection.join after leave).
   */
  it('(c) R added back: every connection of R (including the one that learned its removal by catch-up) receives members_added and what follows', async () => {
    // The registry has R on node 2 again (as the node's re-sync would do), and routing is by presence.
    await redis.hset(`rc:u:${R}`, 'gateway-2', 1);
    await redis.sadd('rc:n:gateway-2', R);
    await s.useDelivery(true);
    const added = await rest(s.http(1), await s.token(M), 'POST', `/v1/conversations/${conv}/members`, { user_ids: [R] });
    expect(added.status, JSON.stringify(added.body)).toBe(200);
    const addSeq = added.body.last_sequence;
    expect(addSeq).toBe(lastSeq + 1);
    const next = await say(0, O, conv, 'welcome back');
    const mine = await say(2, R, conv, 'thanks');
    for (const c of [r0, r1, r2]) {
      await waitSeq(c, conv, mine);
      const after = entryFrames(c, conv).filter((f) => f.message.sequence_number > removalSeq);
      expect(after.map((f) => f.message.sequence_number)).toEqual([addSeq, next, mine]);
      expect(after[0]!.message).toMatchObject({ kind: 'members_added', sender_id: M, payload: { user_ids: [R], by: M } });
      expect(after[0]!.via).toBe('live');
    }
    // REST reads work again for R, from the added entry on.
    const page = await rest(s.http(2), await s.token(R), 'GET', `/v1/conversations/${conv}/messages?after_sequence=${addSeq - 1}&limit=10`);
    expect(page.status).toBe(200);
    expect(page.body.messages.map((m: { sequence_number: number }) => m.sequence_number)).toEqual([addSeq, next, mine]);
  }, 120_000);

  /*
   * Breaks it: the delivery worker applying a batch's membership changes to its cache before it
   * routes the entries that precede them in the same batch (delivery/recipient-routing.ts: route()
   * mutates the cached member set, which recipientsInOrder then reads as the state "before"): the
   * message committed just before the removal then is not routed to the removed member, whose
   * connections learn it and the removal only by a catch-up read instead of live.
   */
  it('(d) a message and the removal that follows it in one batch: the removed member gets both, live, in order', async () => {
    const [O3, R3, M3] = [randomUUID(), randomUUID(), randomUUID()];
    const c3 = (await rest(s.http(0), await s.token(O3), 'POST', '/v1/conversations', { member_ids: [R3, M3] })).body
      .conversation_id as string;
    await s.useDelivery(true);
    const rc = [await connect(1, R3, undefined, 'R3@1'), await connect(2, R3, undefined, 'R3@2')];
    const mc = await connect(0, M3, undefined, 'M3@0');
    for (const n of [1, 2]) await presenceOf(R3, n);
    const first = await say(0, O3, c3, 'before the batch');
    for (const c of [...rc, mc]) await waitSeq(c, c3, first);
    // The relay stopped: the message and the removal reach Kafka in one publish, the worker in one batch.
    await s.stopRelay();
    const m = await say(0, O3, c3, 'just before the removal');
    const removed = await rest(s.http(0), await s.token(O3), 'DELETE', `/v1/conversations/${c3}/members/${R3}`);
    expect(removed.status).toBe(200);
    const after = await say(0, M3, c3, 'after the removal');
    await s.startRelay();
    await waitSeq(mc, c3, after);
    for (const c of rc) {
      await waitSeq(c, c3, removed.body.last_sequence);
      const got = entryFrames(c, c3).map((f) => [f.message.sequence_number, f.via]);
      expect(got, names.get(c)).toEqual([
        [first, 'live'],
        [m, 'live'],
        [removed.body.last_sequence, 'live'],
      ]);
    }
    await sleep(500);
    for (const c of rc) expect(seqs(c, c3)).not.toContain(after);
  }, 120_000);

  /*
   * Breaks it: the removed connection staying in the node's large-room index (the `this.leave(conv)`
   * calls in gateway/connection.ts, or registry.leaveRoom), so every later room delivery reaches it;
   * or the removal not reaching the removed user's connections (room delivery of members_removed).
   */
  it('(b) a large room: the removed user gets the removal on every node, then nothing more, presence and broadcast paths', async () => {
    const [O2, R2, M2] = [randomUUID(), randomUUID(), randomUUID()];
    const offline = Array.from({ length: 8 }, () => randomUUID());
    const created = await rest(s.http(0), await s.token(O2), 'POST', '/v1/conversations', { member_ids: [R2, M2, ...offline] });
    expect(created.status).toBe(201);
    const room = created.body.conversation_id as string;
    const ro = [await connect(1, R2, undefined, 'R2@1'), await connect(2, R2, undefined, 'R2@2'), await connect(0, R2, undefined, 'R2@0')];
    const mo = [await connect(0, M2, undefined, 'M2@0'), await connect(1, M2, undefined, 'M2@1'), await connect(2, M2, undefined, 'M2@2')];
    await s.useDelivery(true);
    let last = 0;
    for (let i = 0; i < 3; i++) last = await say(i, i === 1 ? R2 : O2, room, `room-${i}`);
    for (const c of [...ro, ...mo]) await waitSeq(c, room, last);

    const removed = await rest(s.http(2), await s.token(O2), 'DELETE', `/v1/conversations/${room}/members/${R2}`);
    expect(removed.status, JSON.stringify(removed.body)).toBe(200);
    const rseq = removed.body.last_sequence as number;
    for (const c of [...ro, ...mo]) await waitSeq(c, room, rseq);
    for (const c of ro) {
      const f = entryFrames(c, room).find((x) => x.message.sequence_number === rseq)!;
      expect(f.message).toMatchObject({ kind: 'members_removed', payload: { user_ids: [R2], reason: 'removed' } });
      expect(f.via).toBe('live');
    }
    for (let i = 0; i < 3; i++) last = await say(i, i === 1 ? M2 : O2, room, `room-after-${i}`);
    for (const c of mo) await waitSeq(c, room, last);
    await s.useDelivery(false);
    for (let i = 0; i < 3; i++) last = await say(i, O2, room, `room-broadcast-${i}`);
    mo[0]!.send({ type: 'typing', conversation_id: room });
    for (const c of mo) await waitSeq(c, room, last);
    await sleep(1000);
    for (const c of ro) {
      expect(seqs(c, room)).toEqual(Array.from({ length: rseq }, (_, i) => i + 1));
      expect(c.frames.filter((f) => f.type === 'typing' && f.conversation_id === room)).toEqual([]);
    }
    for (const c of mo) expect(seqs(c, room)).toEqual(Array.from({ length: last }, (_, i) => i + 1));
    const tr = await s.token(R2);
    for (const node of [0, 1, 2]) {
      const r = await rest(s.http(node), tr, 'GET', `/v1/conversations/${room}/messages?after_sequence=0&limit=5`);
      expect(r.status).toBe(403);
      const w = await rest(s.http(node), tr, 'POST', `/v1/conversations/${room}/messages`, { idempotency_key: randomUUID(), payload: 1 });
      expect(w.body?.error?.code).toBe('forbidden');
    }
    const a = await request(
      ro[0]!,
      { type: 'send', conversation_id: room, idempotency_key: randomUUID(), payload: 1 },
      (f) => f.type === 'ack',
    );
    expect(a).toMatchObject({ type: 'error', code: 'forbidden' });
    const t = await request(ro[1]!, { type: 'typing', conversation_id: room }, () => false);
    expect(t).toMatchObject({ type: 'error', code: 'forbidden' });

    // Added back: the large room's members_added reaches R2's connections, and what follows.
    const back = await rest(s.http(0), await s.token(O2), 'POST', `/v1/conversations/${room}/members`, { user_ids: [R2] });
    expect(back.status).toBe(200);
    await s.useDelivery(true);
    const next = await say(1, M2, room, 'again');
    for (const c of ro) {
      await waitSeq(c, room, next);
      expect(seqs(c, room).filter((q) => q > rseq)).toEqual([back.body.last_sequence, next]);
    }
  }, 180_000);
});
