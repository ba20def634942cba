/**
 * Web Push on the embedded default (PGlite, in-process notifier), against a local push service
 * that verifies the VAPID JWT and decrypts each payload for real (tests/harness/push-service.ts):
 * the REST routes and their validation; an offline member gets one notification; an online member
 * who reads gets none, one who does not gets one after the unread delay; one notification per
 * conversation until it is read; muted gets none; 410 removes the subscription; 500 and timeouts
 * are retried with backoff, then dead-lettered. "None" is asserted after a barrier: a later
 * notification to another subscription has arrived, so the notifier has passed the message.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createConversation, http, startTestServer, type TestServer } from './harness/server.js';
import { startPushService, type BrowserSubscription, type PushService } from './harness/push-service.js';
import { TestClient } from './harness/ws-client.js';
import { until } from './harness/until.js';

const UNREAD_DELAY_MS = 1500;
const RETRY_BASE_MS = 150;
const MAX_ATTEMPTS = 3;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('web push (embedded)', () => {
  let s: TestServer;
  let push: PushService;
  const users = new Map<string, { userId: string; token: string }>();
  const clients: TestClient[] = [];

  const user = async (name: string) => {
    const u = await s.token();
    users.set(name, u);
    return u;
  };
  const subscribe = async (token: string): Promise<BrowserSubscription> => {
    const sub = push.subscribe();
    const r = await http(s, 'POST', '/v1/push/subscriptions', { token, body: sub.json });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    return sub;
  };
  const say = async (token: string, conv: string, text: string): Promise<number> => {
    const r = await http(s, 'POST', `/v1/conversations/${conv}/messages`, {
      token,
      body: { idempotency_key: randomUUID(), payload: { text } },
    });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    return r.body.sequence_number;
  };
  const receivedBy = (sub: BrowserSubscription) => push.received.filter((r) => r.subscriptionId === sub.id);
  const waitReceived = (sub: BrowserSubscription, n: number, timeoutMs = 10_000) =>
    until(`${n} notification(s) for ${sub.id}`, () => receivedBy(sub).length >= n, timeoutMs);
  /** A notification to a fresh subscriber: once it arrived, the notifier has handled what was sent before it. */
  const barrier = async () => {
    const a = await user(`barrier-a-${randomUUID()}`);
    const b = await user(`barrier-b-${randomUUID()}`);
    const sub = await subscribe(b.token);
    const conv = await createConversation(s, a.token, [b.userId]);
    await say(a.token, conv, 'barrier');
    await waitReceived(sub, 1);
  };
  const readUpTo = async (token: string, userId: string, conv: string, seq: number) => {
    const c = await TestClient.connect(s.wsUrl, token);
    c.send({ type: 'read', conversation_id: conv, sequence_number: seq });
    await until('read position stored', async () => {
      const [row] = await s.query<{ r: number }>(
        'SELECT last_read_sequence::int AS r FROM user_conversation_state WHERE user_id = $1 AND conversation_id = $2',
        [userId, conv],
      );
      return (row?.r ?? 0) >= seq;
    });
    c.close();
    // The connection is gone from the registry once the close is handled.
    await sleep(100);
  };

  beforeAll(async () => {
    s = await startTestServer('pglite', {
      REALCHAT_PUSH_ALLOW_HTTP_LOOPBACK: '1',
      REALCHAT_PUSH_POLL_MS: '50',
      REALCHAT_PUSH_UNREAD_DELAY_MS: String(UNREAD_DELAY_MS),
      REALCHAT_PUSH_RETRY_BASE_MS: String(RETRY_BASE_MS),
      REALCHAT_PUSH_RETRY_MAX_MS: '600',
      REALCHAT_PUSH_MAX_ATTEMPTS: String(MAX_ATTEMPTS),
      REALCHAT_PUSH_TIMEOUT_MS: '400',
      REALCHAT_PUSH_LEASE_MS: '3000',
    });
    const key = await http(s, 'GET', '/v1/push/vapid-public-key');
    expect(key.status).toBe(200);
    push = await startPushService(key.body.public_key);
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    await s?.close();
    await push?.close();
  });

  it('serves a VAPID public key and validates subscriptions strictly', async () => {
    const key = await http(s, 'GET', '/v1/push/vapid-public-key');
    expect(Buffer.from(key.body.public_key, 'base64url')).toHaveLength(65);
    const { token } = await user('v');
    const good = push.subscribe().json;
    const bad = [
      { ...good, endpoint: 'http://push.example.com/x' },
      { ...good, endpoint: 'https://10.0.0.1/x' },
      { ...good, endpoint: 'https://push.example.com:8443/x' },
      { ...good, endpoint: 'ftp://push.example.com/x' },
      { ...good, keys: { ...good.keys, auth: Buffer.alloc(15).toString('base64url') } },
      { ...good, keys: { ...good.keys, p256dh: Buffer.alloc(65, 4).toString('base64url') } },
      { ...good, keys: { ...good.keys, p256dh: `${good.keys.p256dh}=` } },
      { ...good, extra: 1 },
      { endpoint: good.endpoint },
    ];
    for (const body of bad)
      expect((await http(s, 'POST', '/v1/push/subscriptions', { token, body })).status, JSON.stringify(body)).toBe(400);
    expect((await http(s, 'POST', '/v1/push/subscriptions', { body: good })).status).toBe(401);
    expect((await http(s, 'POST', '/v1/push/subscriptions', { token, body: good })).status).toBe(201);
    expect((await http(s, 'POST', '/v1/push/subscriptions', { token, body: { ...good, expirationTime: null } })).status).toBe(200);
    const del = await http(s, 'DELETE', '/v1/push/subscriptions', { token, body: { endpoint: good.endpoint } });
    expect(del).toMatchObject({ status: 200, body: { removed: true } });
    expect((await http(s, 'DELETE', '/v1/push/subscriptions', { token, body: { endpoint: good.endpoint } })).body.removed).toBe(false);
  });

  it('an offline member gets one notification, encrypted for its subscription and collapsible by conversation', async () => {
    const a = await user('a1');
    const b = await user('b1');
    const sub = await subscribe(b.token);
    const conv = await createConversation(s, a.token, [b.userId], 'Team');
    const seq = await say(a.token, conv, 'hello there');
    await waitReceived(sub, 1);
    const [n] = receivedBy(sub);
    expect(n!.payload).toMatchObject({ type: 'message', conversation_id: conv, sequence_number: seq, sender_id: a.userId, title: 'Team' });
    expect(n!.payload.body).toContain('hello there');
    expect(n!.topic).toBe(conv.replace(/-/g, ''));
    expect(Number(n!.ttl)).toBeGreaterThan(0);
    // The sender is not notified of its own message, nor anyone without a subscription.
    expect(push.rejected).toEqual([]);
    await barrier();
    expect(receivedBy(sub)).toHaveLength(1);
  });

  it('one notification per conversation until it is read, then the next message notifies again', async () => {
    const a = await user('a2');
    const b = await user('b2');
    const sub = await subscribe(b.token);
    const conv = await createConversation(s, a.token, [b.userId]);
    await say(a.token, conv, 'one');
    await waitReceived(sub, 1);
    await say(a.token, conv, 'two');
    const three = await say(a.token, conv, 'three');
    await barrier();
    expect(receivedBy(sub)).toHaveLength(1);
    await readUpTo(b.token, b.userId, conv, three);
    const four = await say(a.token, conv, 'four');
    await waitReceived(sub, 2);
    expect(receivedBy(sub)[1]!.payload).toMatchObject({ sequence_number: four, body: 'four' });
  });

  it('an online member who reads gets none; one who does not read gets one after the unread delay', async () => {
    const a = await user('a3');
    const reader = await user('reader');
    const idle = await user('idle');
    const readerSub = await subscribe(reader.token);
    const idleSub = await subscribe(idle.token);
    const conv = await createConversation(s, a.token, [reader.userId, idle.userId]);
    const rc = await TestClient.connect(s.wsUrl, reader.token);
    const ic = await TestClient.connect(s.wsUrl, idle.token);
    clients.push(rc, ic);
    const sentAt = Date.now();
    const seq = await say(a.token, conv, 'are you there?');
    await rc.waitFor((f) => f.type === 'message' && f.message.sequence_number === seq, 5000);
    rc.send({ type: 'read', conversation_id: conv, sequence_number: seq });
    await waitReceived(idleSub, 1, 10_000);
    expect(receivedBy(idleSub)[0]!.at - sentAt).toBeGreaterThanOrEqual(UNREAD_DELAY_MS - 100);
    await barrier();
    expect(receivedBy(readerSub)).toHaveLength(0);
  });

  it('a muted conversation gets none; unmuted, it notifies again', async () => {
    const a = await user('a4');
    const b = await user('b4');
    const sub = await subscribe(b.token);
    const conv = await createConversation(s, a.token, [b.userId]);
    const mute = await http(s, 'PUT', `/v1/conversations/${conv}/notifications`, { token: b.token, body: { muted: true } });
    expect(mute).toMatchObject({ status: 200, body: { conversation_id: conv, muted: true } });
    const stranger = await user('stranger');
    expect((await http(s, 'PUT', `/v1/conversations/${conv}/notifications`, { token: stranger.token, body: { muted: true } })).status).toBe(
      403,
    );
    expect((await http(s, 'PUT', `/v1/conversations/${conv}/notifications`, { token: b.token, body: { muted: 'yes' } })).status).toBe(400);
    await say(a.token, conv, 'psst');
    await barrier();
    expect(receivedBy(sub)).toHaveLength(0);
    expect((await http(s, 'PUT', `/v1/conversations/${conv}/notifications`, { token: b.token, body: { muted: false } })).status).toBe(200);
    await say(a.token, conv, 'now?');
    await waitReceived(sub, 1);
  });

  it('410 from the push service removes the subscription', async () => {
    const a = await user('a5');
    const b = await user('b5');
    const sub = await subscribe(b.token);
    push.setMode(sub.id, 410);
    const conv = await createConversation(s, a.token, [b.userId]);
    await say(a.token, conv, 'gone?');
    await until('subscription removed', () => push.requests.some((r) => r.subscriptionId === sub.id && r.status === 410));
    for (let i = 0; i < 100; i++) {
      const rows = await s.query('SELECT 1 FROM push_subscriptions WHERE endpoint = $1', [sub.json.endpoint]);
      if (rows.length === 0) break;
      await sleep(25);
    }
    expect(await s.query('SELECT 1 FROM push_subscriptions WHERE endpoint = $1', [sub.json.endpoint])).toHaveLength(0);
    await say(a.token, conv, 'still there?');
    await barrier();
    expect(push.requests.filter((r) => r.subscriptionId === sub.id)).toHaveLength(1);
  });

  it.each([
    [500, 'status_5xx'],
    ['hang', 'timeout'],
  ] as const)('%s is retried with backoff, then dead-lettered', async (mode, reason) => {
    const a = await user(`a6-${mode}`);
    const b = await user(`b6-${mode}`);
    const sub = await subscribe(b.token);
    push.setMode(sub.id, mode);
    const conv = await createConversation(s, a.token, [b.userId]);
    const seq = await say(a.token, conv, 'retry me');
    let dead: Array<Record<string, any>> = [];
    for (let i = 0; i < 400 && dead.length === 0; i++) {
      dead = await s.query('SELECT * FROM push_dead_letters WHERE conversation_id = $1', [conv]);
      if (dead.length === 0) await sleep(25);
    }
    expect(dead).toHaveLength(1);
    expect(dead[0]).toMatchObject({ user_id: b.userId, sequence_number: seq, endpoint: sub.json.endpoint, attempts: MAX_ATTEMPTS, reason });
    const tries = push.requests.filter((r) => r.subscriptionId === sub.id);
    expect(tries).toHaveLength(MAX_ATTEMPTS);
    for (let i = 1; i < tries.length; i++) expect(tries[i]!.at - tries[i - 1]!.at).toBeGreaterThanOrEqual(RETRY_BASE_MS);
    expect(await s.query('SELECT 1 FROM push_notifications WHERE conversation_id = $1', [conv])).toHaveLength(0);
    const metrics = await http(s, 'GET', '/metrics');
    expect(metrics.body).toMatch(/realchat_push_dead_lettered_total\{[^}]*reason="attempts"/);
  });
});
