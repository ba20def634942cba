/**
 * Sends to a conversation homed in another region are forwarded there (docs/multi-region.md):
 * two regions, each a RealChat node on its own PostgreSQL database; region a's stream reaches
 * region b's mirror applier (taken from a's outbox by a tap table, standing in for MirrorMaker 2).
 * A member connected to b sends to a's conversation: the home numbers it, a retry in either region
 * is the same message, the entry comes back to b through the mirror and is delivered live there;
 * with the home not answering, the send is refused `unavailable` (home_unreachable) after the
 * forward timeout; the forwarded route takes only the regions' secret.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from './harness/postgres.js';
import { createConversation, http, startTestServer, type TestServer } from './harness/server.js';
import { makeCopyOf, tapStream } from './harness/regions.js';
import { TestClient } from './harness/ws-client.js';

const SECRET = randomBytes(32).toString('hex');

describe('forwarding sends to the home region (two regions, real PostgreSQL)', () => {
  let a: TestServer;
  let b: TestServer;
  let tapA: Awaited<ReturnType<typeof tapStream>>;
  /** Region c's gateway: accepts connections, never answers. */
  const blackhole = net.createServer((socket) => {
    blackholed++;
    socket.on('error', () => {});
  });
  let blackholed = 0;

  beforeAll(async () => {
    const [portA, portB] = [await freePort(), await freePort()];
    await new Promise<void>((r) => blackhole.listen(0, '127.0.0.1', r));
    const portC = (blackhole.address() as net.AddressInfo).port;
    const region = (self: string, port: number, peers: string) => ({
      PORT: String(port),
      REALCHAT_REGION: self,
      REALCHAT_REGION_PEERS: peers,
      REALCHAT_REGION_SECRET: SECRET,
      REALCHAT_REGION_FORWARD_TIMEOUT_MS: '1000',
      REALCHAT_PRESENCE_GRACE_MS: '300',
    });
    [a, b] = await Promise.all([
      startTestServer('postgres', region('a', portA, `b=http://127.0.0.1:${portB}`)),
      startTestServer('postgres', region('b', portB, `a=http://127.0.0.1:${portA},c=http://127.0.0.1:${portC}`)),
    ]);
    // a's stream as MirrorMaker would carry it.
    tapA = await tapStream(a, 'a');
  }, 60_000);
  afterAll(async () => {
    await b?.close();
    await a?.close();
    blackhole.close();
  });

  /** Applies what a wrote since the last call to b's copy (the mirror), then lets b deliver it. */
  const mirrorAtoB = () => tapA.into(b);

  it("a member connected to b sends to a's conversation: a numbers it, a retry in either region is the same message, and b delivers it live from its copy", async () => {
    const alice = await a.token();
    const bobInA = await a.token();
    const bobInB = { userId: bobInA.userId, token: (await b.token(bobInA.userId)).token };
    const conv = await createConversation(a, alice.token, [bobInA.userId]);
    expect(await mirrorAtoB()).toBeGreaterThan(0);
    const bob = await TestClient.connect(b.wsUrl, bobInB.token);
    try {
      const ack = await bob.sendMessage(conv, 'k1', { text: 'from b' });
      expect(ack).toMatchObject({ type: 'ack', sequence_number: 1, duplicate: false });
      // Stored in a, the home; b's copy has nothing until the mirror brings it.
      expect(await a.query(`SELECT sequence::int AS s, sender_id FROM messages WHERE conversation_id = $1`, [conv])).toEqual([
        { s: 1, sender_id: bobInA.userId },
      ]);
      expect(await b.query(`SELECT id FROM messages WHERE conversation_id = $1`, [conv])).toEqual([]);
      // The same key again, through b and straight at a: the same message.
      expect(await bob.sendMessage(conv, 'k1', { text: 'from b' })).toMatchObject({ message_id: ack.message_id, duplicate: true });
      const direct = await http(a, 'POST', `/v1/conversations/${conv}/messages`, {
        token: bobInA.token,
        body: { payload: { text: 'from b' } },
        headers: { 'idempotency-key': 'k1' },
      });
      expect([direct.status, direct.body.message_id]).toEqual([200, ack.message_id]);
      // Alice writes in a; the mirror brings both entries to b, which delivers them live to bob.
      await http(a, 'POST', `/v1/conversations/${conv}/messages`, {
        token: alice.token,
        body: { payload: { text: 'hi bob' } },
        headers: { 'idempotency-key': 'a1' },
      });
      expect(await mirrorAtoB()).toBeGreaterThanOrEqual(2);
      const live = await bob.waitForCount((f) => f.type === 'message' && f.message.conversation_id === conv, 2);
      expect(live.map((f) => [f.message.sequence_number, f.via])).toEqual([
        [1, 'live'],
        [2, 'live'],
      ]);
      expect(live[0]!.message.message_id).toBe(ack.message_id);

      // The other writes go home too: bob edits his message and adds carol through b; a refusal of
      // the home comes back as it is (bob may not restrict who adds: he is no owner).
      const carol = randomUUID();
      const edited = await http(b, 'PATCH', `/v1/conversations/${conv}/messages/${ack.message_id}`, {
        token: bobInB.token,
        body: { payload: { text: 'from b, edited' } },
        headers: { 'idempotency-key': 'e1' },
      });
      expect([edited.status, edited.body.kind, edited.body.sequence_number]).toEqual([201, 'edit', 3]);
      const added = await http(b, 'POST', `/v1/conversations/${conv}/members`, { token: bobInB.token, body: { user_ids: [carol] } });
      expect([added.status, added.body.added_user_ids, added.body.last_sequence], JSON.stringify(added.body)).toEqual([200, [carol], 4]);
      const restricted = await http(b, 'PATCH', `/v1/conversations/${conv}`, { token: bobInB.token, body: { who_can_add: 'admins' } });
      expect([restricted.status, restricted.body.error?.code]).toEqual([403, 'forbidden']);
      expect(await a.query(`SELECT payload FROM messages WHERE id = $1`, [ack.message_id])).toEqual([
        { payload: { text: 'from b, edited' } },
      ]);
      expect(await a.query(`SELECT user_id FROM members WHERE conversation_id = $1 AND user_id = $2`, [conv, carol])).toEqual([
        { user_id: carol },
      ]);
      // Mirrored back, b's copy and bob's connection have them.
      await mirrorAtoB();
      const entries = await bob.waitForCount((f) => f.type === 'message' && f.message.conversation_id === conv, 4);
      expect(entries.map((f) => f.message.kind ?? 'message')).toEqual(['message', 'message', 'edit', 'members_added']);
      expect(await b.query(`SELECT payload FROM messages WHERE id = $1`, [ack.message_id])).toEqual([
        { payload: { text: 'from b, edited' } },
      ]);
    } finally {
      bob.close();
    }
  });

  it('a conversation created in b with home_region a is created in a (forwarded); b has it once the mirror brings it', async () => {
    const bob = await b.token();
    const alice = randomUUID();
    const create = (home: string, key: string) =>
      http(b, 'POST', '/v1/conversations', {
        token: bob.token,
        body: { member_ids: [alice], title: 'homed in a', home_region: home },
        headers: { 'idempotency-key': key },
      });
    const created = await create('a', 'c1');
    expect([created.status, created.body.home_region, created.body.title], JSON.stringify(created.body)).toEqual([201, 'a', 'homed in a']);
    const conv = created.body.conversation_id as string;
    expect(await a.query(`SELECT home_region, created_by, title FROM conversations WHERE id = $1`, [conv])).toEqual([
      { home_region: null, created_by: bob.userId, title: 'homed in a' },
    ]);
    expect(await b.query(`SELECT id FROM conversations WHERE id = $1`, [conv])).toEqual([]);
    // The same key again through b: the same conversation, not a second one.
    const again = await create('a', 'c1');
    expect([again.status, again.body.conversation_id]).toEqual([200, conv]);
    // A region b does not know is refused.
    const unknown = await create('z', 'c2');
    expect([unknown.status, unknown.body.error?.code]).toEqual([400, 'invalid_request']);
    // The mirror brings it to b as a copy of a's; bob's send there goes home to a.
    await mirrorAtoB();
    expect(await b.query(`SELECT home_region, title FROM conversations WHERE id = $1`, [conv])).toEqual([
      { home_region: 'a', title: 'homed in a' },
    ]);
    const sent = await http(b, 'POST', `/v1/conversations/${conv}/messages`, {
      token: bob.token,
      body: { payload: { text: 'hi' } },
      headers: { 'idempotency-key': 'm1' },
    });
    expect([sent.status, sent.body.sequence_number]).toEqual([201, 1]);
    expect(await a.query(`SELECT count(*)::int AS n FROM messages WHERE conversation_id = $1`, [conv])).toEqual([{ n: 1 }]);
  });

  it('typing crosses regions both ways, best effort: delivered to members connected in the other region, from its copy; a non-member is refused there', async () => {
    const alice = await a.token();
    const bobId = randomUUID();
    const conv = await createConversation(a, alice.token, [bobId]);
    await mirrorAtoB();
    const inA = await TestClient.connect(a.wsUrl, alice.token);
    const inB = await TestClient.connect(b.wsUrl, (await b.token(bobId)).token);
    try {
      inA.send({ type: 'typing', conversation_id: conv });
      expect(await inB.waitFor((f) => f.type === 'typing', 5000)).toEqual({ type: 'typing', conversation_id: conv, user_id: alice.userId });
      // b's copy knows bob is a member; b offers his typing to a (and to c, which never answers: dropped)
      inB.send({ type: 'typing', conversation_id: conv });
      expect(await inA.waitFor((f) => f.type === 'typing', 5000)).toEqual({ type: 'typing', conversation_id: conv, user_id: bobId });
      // The receiving region checks its own copy: a stranger's typing, even with the secret, reaches nobody.
      const stranger = randomUUID();
      const refused = await http(b, 'POST', '/v1/regions/typing', {
        body: { conversation_id: conv, user_id: stranger },
        headers: { authorization: `Region ${SECRET}` },
      });
      expect([refused.status, refused.body.error?.code]).toEqual([403, 'forbidden']);
      const unsigned = await http(b, 'POST', '/v1/regions/typing', { body: { conversation_id: conv, user_id: alice.userId } });
      expect(unsigned.status).toBe(401);
      await new Promise((r) => setTimeout(r, 300));
      expect(inB.frames.filter((f) => f.type === 'typing')).toHaveLength(1);
      // Never stored in either region.
      for (const r of [a, b]) expect(await r.query(`SELECT id FROM messages WHERE conversation_id = $1`, [conv])).toEqual([]);
    } finally {
      inA.close();
      inB.close();
    }
  });

  it('presence crosses regions: a watcher in a sees a user connected only to b go online and offline; the user in b sees a watcher in a online; a stale offline is dropped', async () => {
    const alice = await a.token();
    const bobId = randomUUID();
    const carolToken = await a.token();
    await createConversation(a, alice.token, [bobId, carolToken.userId]);
    await mirrorAtoB();
    const inA = await TestClient.connect(a.wsUrl, alice.token);
    const carol = await TestClient.connect(a.wsUrl, carolToken.token);
    let inB: TestClient | null = null;
    const presenceOf = (user: string) => (f: Record<string, unknown>) => f.type === 'presence' && f.user_id === user;
    try {
      inA.send({ type: 'presence_subscribe', user_ids: [bobId] });
      expect(await inA.waitFor(presenceOf(bobId), 5000)).toMatchObject({ status: 'offline' });
      inB = await TestClient.connect(b.wsUrl, (await b.token(bobId)).token);
      // b tells its own watchers and offers the change to a (and to c, which never answers).
      expect(await inA.waitFor((f) => presenceOf(bobId)(f) && f.status === 'online', 5000)).toMatchObject({ last_seen_at: null });
      // REST in a: asks b, since bob holds no connection in a.
      const rest = await http(a, 'GET', `/v1/users/${bobId}/presence`, { token: alice.token });
      expect([rest.status, rest.body.status]).toEqual([200, 'online']);
      // From b: alice is connected only to a; b asks a (and c, counted as nobody when it does not answer).
      inB.send({ type: 'presence_subscribe', user_ids: [alice.userId] });
      expect(await inB.waitFor(presenceOf(alice.userId), 5000)).toMatchObject({ status: 'online' });
      // A stale offline about alice from another region: a knows she is connected here and drops it,
      // so carol, watching her in a, sees nothing.
      carol.send({ type: 'presence_subscribe', user_ids: [alice.userId] });
      expect(await carol.waitFor(presenceOf(alice.userId), 5000)).toMatchObject({ status: 'online' });
      const stale = await http(a, 'POST', '/v1/regions/presence', {
        body: { user_id: alice.userId, status: 'offline', last_seen_at: new Date().toISOString() },
        headers: { authorization: `Region ${SECRET}` },
      });
      expect(stale.status).toBe(200);
      // Bob leaves b: after b's grace period (300 ms) and its question to a and c, a's watcher sees him offline.
      inB.close();
      inB = null;
      const bobFrames = await inA.waitForCount(presenceOf(bobId), 3, 10_000);
      expect(bobFrames.map((f) => f.status)).toEqual(['offline', 'online', 'offline']);
      // b's time of his disconnect, carried with the change (a's database never saw him).
      expect(Date.parse(String(bobFrames[2]!.last_seen_at))).toBeGreaterThan(Date.now() - 10_000);
      expect(carol.frames.filter(presenceOf(alice.userId)).map((f) => f.status)).toEqual(['online']);
      const unsigned = await http(a, 'POST', '/v1/regions/presence/online', { body: { user_ids: [alice.userId] } });
      expect(unsigned.status).toBe(401);
      const asked = await http(a, 'POST', '/v1/regions/presence/online', {
        body: { user_ids: [alice.userId, bobId] },
        headers: { authorization: `Region ${SECRET}` },
      });
      expect([asked.status, asked.body.online]).toEqual([200, [alice.userId]]);
    } finally {
      inA.close();
      carol.close();
      inB?.close();
    }
  });

  it('the forwarded route takes only the regions\u2019 secret', async () => {
    const body = { sender_id: randomUUID(), conversation_id: randomUUID(), idempotency_key: 'x', payload: 1 };
    for (const authorization of ['', `Region ${SECRET}x`, `Bearer ${SECRET}`, (await a.token()).token]) {
      const r = await http(a, 'POST', '/v1/regions/messages', { body, headers: { authorization } });
      expect([authorization.slice(0, 12), r.status]).toEqual([authorization.slice(0, 12), 401]);
    }
    const ok = await http(a, 'POST', '/v1/regions/messages', { body, headers: { authorization: `Region ${SECRET}` } });
    expect([ok.status, ok.body.error?.code]).toEqual([404, 'not_found']);
  });

  it('with the home region not answering (a partition), a forwarded send is refused after the forward timeout: unavailable, home_unreachable; nothing is stored', async () => {
    // A copy in b of a conversation homed in c, whose gateway accepts connections and never answers.
    const bobId = randomUUID();
    const conv = await createConversation(b, (await b.token(bobId)).token, []);
    await makeCopyOf((t, p) => b.query(t, p), conv, 'c');
    const bob = await TestClient.connect(b.wsUrl, (await b.token(bobId)).token);
    try {
      const t0 = Date.now();
      const refused = await bob.sendMessage(conv, 'k-down', { text: 'anyone?' });
      const tookMs = Date.now() - t0;
      expect(refused, JSON.stringify(refused)).toMatchObject({ type: 'error', code: 'unavailable', reason: 'home_unreachable' });
      // REALCHAT_REGION_FORWARD_TIMEOUT_MS is 1000 here.
      expect(tookMs).toBeGreaterThanOrEqual(900);
      expect(tookMs).toBeLessThan(5000);
      expect(blackholed).toBeGreaterThan(0);
      expect(await b.query(`SELECT id FROM messages WHERE conversation_id = $1`, [conv])).toEqual([]);
      // A region no peer entry names: nowhere to forward, the copy refuses (home_elsewhere).
      await makeCopyOf((t, p) => b.query(t, p), conv, 'd');
      // (On a new connection: this one holds later sends of the conversation behind the refused one.)
      const again = await TestClient.connect(b.wsUrl, (await b.token(bobId)).token);
      try {
        expect(await again.sendMessage(conv, 'k-nowhere', { text: '?' })).toMatchObject({
          type: 'error',
          code: 'unavailable',
          reason: 'home_elsewhere',
        });
      } finally {
        again.close();
      }
    } finally {
      bob.close();
    }
  });
});
