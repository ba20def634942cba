/**
 * Presence for clients on one node (the embedded default on PGlite, and one PostgreSQL): the
 * presence_subscribe / presence_unsubscribe frames, the sharing rule, the per-connection cap,
 * coalesced flapping, last_seen_at across a restart, and GET /v1/users/{id}/presence.
 * tests/presence-for-clients-distributed.test.ts covers several nodes over Redis.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../common/config.js';
import { createAuthenticator } from '../gateway/auth.js';
import { startRealChat, type RealChat } from '../standalone/realchat.js';
import { BACKENDS, createConversation, freshDatabase, http, startTestServer, type Backend, type TestServer } from './harness/server.js';
import { TestClient, type Frame } from './harness/ws-client.js';
import { OpenApiValidator } from './harness/openapi.js';

const GRACE_MS = 700;
const ENV = { REALCHAT_PRESENCE_GRACE_MS: String(GRACE_MS), REALCHAT_PRESENCE_MAX_WATCHED: '3' };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const presenceOf = (c: TestClient, userId: string) => c.frames.filter((f) => f.type === 'presence' && f.user_id === userId);

describe.each(BACKENDS)('presence for clients (%s)', (backend) => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer(backend, ENV);
  });
  afterAll(async () => s?.close());

  /** alice and bob share a conversation; carol shares none with alice. */
  async function trio() {
    const alice = await s.token();
    const bob = await s.token();
    const carol = await s.token();
    await createConversation(s, alice.token, [bob.userId]);
    return { alice, bob, carol };
  }

  it('answers at once per user, then once per change; a quick reconnect is no change', async () => {
    const { alice, bob } = await trio();
    const a = await TestClient.connect(s.wsUrl, alice.token);
    a.send({ type: 'presence_subscribe', user_ids: [bob.userId], ref: 'p1' });
    expect(await a.waitFor((f) => f.type === 'presence')).toEqual({
      type: 'presence',
      user_id: bob.userId,
      status: 'offline',
      last_seen_at: null,
    });

    const b = await TestClient.connect(s.wsUrl, bob.token);
    await a.waitFor((f) => f.type === 'presence' && f.status === 'online');
    // A second connection of a user already online changes nothing.
    const b2 = await TestClient.connect(s.wsUrl, bob.token);
    b2.close();
    await b2.waitClosed();

    // Flapping: closed and back within the grace period.
    b.close();
    await b.waitClosed();
    await sleep(100);
    const b3 = await TestClient.connect(s.wsUrl, bob.token);
    await sleep(GRACE_MS + 500);
    expect(presenceOf(a, bob.userId).map((f) => f.status)).toEqual(['offline', 'online']);

    // Gone for longer than the grace period: offline, with the time the last connection closed.
    const closedAt = Date.now();
    b3.close();
    await b3.waitClosed();
    const off = (await a.waitForCount((f) => f.type === 'presence' && f.user_id === bob.userId && f.status === 'offline', 2, 5000))[1]!;
    expect(Date.now() - closedAt).toBeGreaterThanOrEqual(GRACE_MS - 50);
    expect(typeof off.last_seen_at).toBe('string');
    expect(Math.abs(Date.parse(off.last_seen_at) - closedAt)).toBeLessThan(2000);
    const stored = await s.query<{ t: Date }>('SELECT last_seen_at AS t FROM users WHERE id = $1', [bob.userId]);
    expect(stored[0]!.t.toISOString()).toBe(off.last_seen_at);

    // Unsubscribed: no more frames about bob.
    a.send({ type: 'presence_unsubscribe', user_ids: [bob.userId] });
    a.send({ type: 'ping' });
    await a.waitFor((f) => f.type === 'pong');
    const before = presenceOf(a, bob.userId).length;
    const b4 = await TestClient.connect(s.wsUrl, bob.token);
    await sleep(300);
    expect(presenceOf(a, bob.userId)).toHaveLength(before);
    b4.close();
    a.close();
  });

  it('refuses users who share no conversation (forbidden, with ref and user ids), serves the rest', async () => {
    const { alice, bob, carol } = await trio();
    const a = await TestClient.connect(s.wsUrl, alice.token);
    const c = await TestClient.connect(s.wsUrl, carol.token);
    a.send({ type: 'presence_subscribe', user_ids: [carol.userId, bob.userId], ref: 'mixed' });
    const err = await a.waitFor((f) => f.type === 'error');
    expect(err).toMatchObject({ code: 'forbidden', ref: 'mixed', user_ids: [carol.userId] });
    expect(presenceOf(a, bob.userId)).toHaveLength(1);
    expect(presenceOf(a, carol.userId)).toHaveLength(0);
    // Nothing about carol reaches alice afterwards either.
    c.close();
    await sleep(GRACE_MS + 300);
    expect(presenceOf(a, carol.userId)).toHaveLength(0);
    // Oneself is always allowed.
    a.send({ type: 'presence_subscribe', user_ids: [alice.userId] });
    expect(await a.waitFor((f) => f.type === 'presence' && f.user_id === alice.userId)).toMatchObject({ status: 'online' });
    a.close();
  });

  it('caps the users one connection watches', async () => {
    const alice = await s.token();
    const others = await Promise.all([1, 2, 3, 4].map(() => s.token()));
    await createConversation(
      s,
      alice.token,
      others.map((o) => o.userId),
    );
    const a = await TestClient.connect(s.wsUrl, alice.token);
    a.send({ type: 'presence_subscribe', user_ids: others.slice(0, 3).map((o) => o.userId), ref: 'three' });
    await a.waitForCount((f) => f.type === 'presence', 3);
    a.send({ type: 'presence_subscribe', user_ids: [others[3]!.userId], ref: 'fourth' });
    expect(await a.waitFor((f) => f.type === 'error')).toMatchObject({ code: 'invalid_frame', reason: 'watch_limit', ref: 'fourth' });
    // Room again after an unsubscribe.
    a.send({ type: 'presence_unsubscribe', user_ids: [others[0]!.userId] });
    a.send({ type: 'presence_subscribe', user_ids: [others[3]!.userId] });
    expect(await a.waitFor((f) => f.type === 'presence' && f.user_id === others[3]!.userId)).toMatchObject({ status: 'offline' });
    a.close();
  });

  it('GET /v1/users/{id}/presence follows the same rule', async () => {
    const { alice, bob, carol } = await trio();
    const b = await TestClient.connect(s.wsUrl, bob.token);
    const on = await http(s, 'GET', `/v1/users/${bob.userId}/presence`, { token: alice.token });
    expect(on).toMatchObject({ status: 200, body: { user_id: bob.userId, status: 'online', last_seen_at: null } });
    expect((await http(s, 'GET', `/v1/users/${bob.userId}/presence`, { token: carol.token })).status).toBe(403);
    expect((await http(s, 'GET', `/v1/users/${randomUUID()}/presence`, { token: alice.token })).status).toBe(403);
    expect((await http(s, 'GET', `/v1/users/${bob.userId}/presence`)).status).toBe(401);
    b.close();
    await b.waitClosed();
    // Within the grace period still online; after it offline with last_seen_at.
    expect((await http(s, 'GET', `/v1/users/${bob.userId}/presence`, { token: alice.token })).body.status).toBe('online');
    await sleep(GRACE_MS + 300);
    const off = await http(s, 'GET', `/v1/users/${bob.userId}/presence`, { token: alice.token });
    expect(off.body).toMatchObject({ status: 'offline', last_seen_at: expect.any(String) });
    // Both answers as docs/openapi.yaml documents them.
    const schema = new OpenApiValidator().schemaAt('#/components/schemas/Presence');
    for (const body of [on.body, off.body]) expect(schema(body), JSON.stringify(schema.errors)).toBe(true);
    expect((await http(s, 'GET', '/v1/users/not-a-uuid/presence', { token: alice.token })).status).toBe(404);
  });
});

/** A server whose database outlives it: PGlite in a data dir, or a PostgreSQL database. */
async function durableServer(backend: Backend, place: string, secret: string): Promise<RealChat> {
  return startRealChat(
    loadConfig({
      PORT: '0',
      REALCHAT_JWT_SECRET: secret,
      LOG_LEVEL: 'silent',
      ...ENV,
      ...(backend === 'postgres' ? { DATABASE_URL: place } : { REALCHAT_DATA_DIR: place }),
    }),
  );
}

describe.each(BACKENDS)('last_seen_at across a restart (%s)', (backend) => {
  it('is read back from the database by the next process', async () => {
    const secret = randomBytes(32).toString('hex');
    const auth = createAuthenticator({ secret });
    const dir = backend === 'pglite' ? await mkdtemp(join(tmpdir(), 'rc-presence-')) : null;
    const place = dir ?? (await freshDatabase());
    const alice = randomUUID();
    const bob = randomUUID();
    const [ta, tb] = [await auth.issue(alice), await auth.issue(bob)];
    try {
      let app = await durableServer(backend, place, secret);
      const url = () => `http://127.0.0.1:${app.port}`;
      const get = async (path: string, token: string) =>
        fetch(url() + path, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(10_000) });
      const created = await fetch(`${url()}/v1/conversations`, {
        method: 'POST',
        headers: { authorization: `Bearer ${ta}`, 'content-type': 'application/json' },
        body: JSON.stringify({ member_ids: [bob] }),
        signal: AbortSignal.timeout(10_000),
      });
      expect(created.status).toBe(201);
      const b = await TestClient.connect(`ws://127.0.0.1:${app.port}/v1/ws`, tb);
      b.close();
      await b.waitClosed();
      await sleep(GRACE_MS + 300);
      const first = (await (await get(`/v1/users/${bob}/presence`, ta)).json()) as Frame;
      expect(first).toMatchObject({ status: 'offline', last_seen_at: expect.any(String) });
      await app.close();

      app = await durableServer(backend, place, secret);
      const again = (await (await get(`/v1/users/${bob}/presence`, ta)).json()) as Frame;
      expect(again).toEqual(first);
      // And in the frame a new subscriber gets at once.
      const a = await TestClient.connect(`ws://127.0.0.1:${app.port}/v1/ws`, ta);
      a.send({ type: 'presence_subscribe', user_ids: [bob] });
      expect(await a.waitFor((f) => f.type === 'presence')).toEqual({
        type: 'presence',
        user_id: bob,
        status: first.status,
        last_seen_at: first.last_seen_at,
      });
      a.close();
      await app.close();
    } finally {
      if (dir) await rm(dir, { recursive: true, force: true });
    }
  });
});

describe.each(BACKENDS)('a storm of closes (%s)', (backend) => {
  // A queue of 8 database operations per node: one write per closing user (its last_seen_at, and
  // its delivery positions) overflowed it, lost most of those writes and refused the hellos that
  // arrived meanwhile.
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer(backend, { REALCHAT_PRESENCE_GRACE_MS: '300', REALCHAT_DB_MAX_QUEUED: '8' });
  });
  afterAll(async () => s?.close());

  it("records every user's last_seen_at and delivery positions, and keeps answering hellos", async () => {
    const users = await Promise.all(Array.from({ length: 200 }, () => s.token()));
    const clients: TestClient[] = [];
    for (let i = 0; i < users.length; i += 50)
      clients.push(...(await Promise.all(users.slice(i, i + 50).map((u) => TestClient.connect(s.wsUrl, u.token)))));
    // Half of them in 50 conversations of 2 with one message each: each of those 100 connections
    // has a delivery position to record as it closes.
    for (let i = 0; i < 100; i += 2) {
      const conv = await createConversation(s, users[i]!.token, [users[i + 1]!.userId]);
      const sent = await http(s, 'POST', `/v1/conversations/${conv}/messages`, {
        token: users[i]!.token,
        body: { idempotency_key: `k${i}`, payload: { n: i } },
      });
      expect(sent.status).toBe(201);
    }
    await Promise.all(clients.slice(0, 100).map((c) => c.waitFor((f) => f.type === 'message')));
    for (const c of clients) c.close();
    const newcomers = await Promise.allSettled(
      Array.from({ length: 50 }, async () => TestClient.connect(s.wsUrl, (await s.token()).token)),
    );
    expect(newcomers.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason))).toEqual([]);
    const ids = users.map((u) => u.userId);
    const count = async (sql: string) => Number((await s.query<{ n: string }>(sql, [ids]))[0]!.n);
    const seen = () => count('SELECT count(*) AS n FROM users WHERE id = ANY($1::uuid[]) AND last_seen_at IS NOT NULL');
    const positions = () =>
      count('SELECT count(*) AS n FROM user_conversation_state WHERE user_id = ANY($1::uuid[]) AND last_delivered_sequence = 1');
    const deadline = Date.now() + 10_000;
    while (((await seen()) < 200 || (await positions()) < 100) && Date.now() < deadline) await sleep(100);
    expect(await seen()).toBe(200);
    expect(await positions()).toBe(100);
    for (const r of newcomers) if (r.status === 'fulfilled') r.value.close();
  });
});
