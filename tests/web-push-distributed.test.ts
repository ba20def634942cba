/**
 * The notifier as its own process in the distributed stack (tests/harness/inproc-stack.ts: real
 * Kafka, Redis and PostgreSQL), spawned from the build and killed with SIGKILL while notifications
 * are in flight (the push service answers slowly). After a restart every conversation is notified
 * (nothing lost), and the only duplicates are the documented at-least-once ones: a notification
 * whose request was in flight when the process died may be sent again, so at most
 * REALCHAT_PUSH_CONCURRENCY of them. Also: an offline member is notified, an online one who reads is not.
 */
import { createECDH, randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rest, startInProcStack, type InProcStack } from './harness/inproc-stack.js';
import { startPushService, type BrowserSubscription, type PushService } from './harness/push-service.js';
import { spawnRole, type RoleProcess } from './harness/stack.js';
import { freePort } from './harness/postgres.js';
import { TestClient } from './harness/ws-client.js';
import { until } from './harness/until.js';

const CONCURRENCY = 4;
const UNREAD_DELAY_MS = 1500;

function vapidKeys(): { publicKey: string; privateKey: string } {
  const ecdh = createECDH('prime256v1');
  const pub = ecdh.generateKeys();
  const priv = Buffer.alloc(32);
  const raw = ecdh.getPrivateKey();
  raw.copy(priv, 32 - raw.length);
  return { publicKey: pub.toString('base64url'), privateKey: priv.toString('base64url') };
}

describe('web push notifier (distributed, killed mid-stream)', () => {
  let s: InProcStack;
  let push: PushService;
  let notifier: RoleProcess | null = null;
  const keys = vapidKeys();
  const open: TestClient[] = [];

  const startNotifier = async (n: number) =>
    spawnRole('notifier', {
      ...s.env,
      LOG_LEVEL: 'info',
      REDIS_URL: `redis://127.0.0.1:${s.redis.port}`,
      REALCHAT_NODE_ID: `notifier-${n}`,
      METRICS_PORT: String(await freePort()),
    });
  const subscribe = async (token: string): Promise<BrowserSubscription> => {
    const sub = push.subscribe();
    const r = await rest(s.http(0), token, 'POST', '/v1/push/subscriptions', sub.json);
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    return sub;
  };
  const conversation = async (token: string, members: string[]) => {
    const r = await rest(s.http(0), token, 'POST', '/v1/conversations', { member_ids: members });
    expect(r.status).toBe(201);
    return r.body.conversation_id as string;
  };
  const say = async (token: string, conv: string, text: string) => {
    const r = await rest(s.http(0), token, 'POST', `/v1/conversations/${conv}/messages`, {
      idempotency_key: randomUUID(),
      payload: { text },
    });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    return r.body.sequence_number as number;
  };

  beforeAll(async () => {
    s = await startInProcStack({
      gateways: 1,
      env: {
        REALCHAT_VAPID_PUBLIC_KEY: keys.publicKey,
        REALCHAT_VAPID_PRIVATE_KEY: keys.privateKey,
        REALCHAT_PUSH_ALLOW_HTTP_LOOPBACK: '1',
        REALCHAT_PUSH_POLL_MS: '50',
        REALCHAT_PUSH_CONCURRENCY: String(CONCURRENCY),
        REALCHAT_PUSH_TIMEOUT_MS: '2000',
        REALCHAT_PUSH_LEASE_MS: '3000',
        REALCHAT_PUSH_UNREAD_DELAY_MS: String(UNREAD_DELAY_MS),
      },
    });
    push = await startPushService(keys.publicKey);
    notifier = await startNotifier(1);
  }, 240_000);
  afterAll(async () => {
    for (const c of open) c.close();
    await notifier?.terminate();
    await s?.close();
    await push?.close();
  }, 120_000);

  it('serves the configured VAPID key; an offline member is notified, an online member who reads is not', async () => {
    const key = await rest(s.http(0), await s.token(), 'GET', '/v1/push/vapid-public-key');
    expect(key.body.public_key).toBe(keys.publicKey);
    const a = randomUUID();
    const off = randomUUID();
    const on = randomUUID();
    const offSub = await subscribe(await s.token(off));
    const onSub = await subscribe(await s.token(on));
    const aToken = await s.token(a);
    const conv = await conversation(aToken, [off, on]);
    const c = await TestClient.connect(s.ws(0), await s.token(on));
    open.push(c);
    // The registry knows the connection before the message is written.
    const redis = new Redis({ port: s.redis.port, host: '127.0.0.1', maxRetriesPerRequest: 1 });
    try {
      await until('presence entry in Redis', async () => Boolean(await redis.hget(`rc:u:${on}`, 'gateway-0')), 10_000, 50);
    } finally {
      redis.disconnect();
    }
    const seq = await say(aToken, conv, 'hi both');
    await c.waitFor((f) => f.type === 'message' && f.message.sequence_number === seq, 10_000);
    c.send({ type: 'read', conversation_id: conv, sequence_number: seq });
    await until('offline member notified', () => push.received.some((r) => r.subscriptionId === offSub.id), 30_000);
    expect(push.received.find((r) => r.subscriptionId === offSub.id)!.payload).toMatchObject({
      conversation_id: conv,
      sequence_number: seq,
      body: 'hi both',
    });
    // Past the unread delay, with the notifier polling every 50 ms: the reader was not notified.
    await new Promise((r) => setTimeout(r, UNREAD_DELAY_MS + 1500));
    expect(push.received.filter((r) => r.subscriptionId === onSub.id)).toHaveLength(0);
    expect(push.rejected).toEqual([]);
  });

  it('killed with SIGKILL mid-stream: no notification lost, duplicates only for requests in flight', async () => {
    const a = randomUUID();
    const b = randomUUID();
    const aToken = await s.token(a);
    const sub = await subscribe(await s.token(b));
    push.setLatency(150);
    const convs: string[] = [];
    for (let i = 0; i < 30; i++) convs.push(await conversation(aToken, [b]));
    const mine = () => push.received.filter((r) => r.subscriptionId === sub.id);
    for (const [i, conv] of convs.slice(0, 20).entries()) await say(aToken, conv, `before ${i}`);
    await until('some notifications arrived', () => mine().length >= 5, 30_000);
    await notifier!.crash();
    const inFlightAtKill = push.requests.length;
    for (const [i, conv] of convs.slice(20).entries()) await say(aToken, conv, `after ${i}`);
    notifier = await startNotifier(2);
    await until('every conversation notified', () => new Set(mine().map((r) => r.payload.conversation_id)).size === convs.length, 60_000);
    // Let a redelivery that would come late arrive before counting.
    await new Promise((r) => setTimeout(r, 4000));
    const perConv = new Map<string, number>();
    for (const r of mine()) perConv.set(r.payload.conversation_id, (perConv.get(r.payload.conversation_id) ?? 0) + 1);
    expect([...perConv.keys()].sort()).toEqual([...convs].sort());
    const duplicates = mine().length - convs.length;
    expect(duplicates, `requests before the kill: ${inFlightAtKill}`).toBeLessThanOrEqual(CONCURRENCY);
    expect(Math.max(...perConv.values())).toBeLessThanOrEqual(2);
  }, 180_000);
});
