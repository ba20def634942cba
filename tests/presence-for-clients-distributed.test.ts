/**
 * Presence for clients across gateway nodes (tests/harness/inproc-stack.ts: 2 nodes, real Kafka,
 * Redis and PostgreSQL): a watcher on node 0 sees a user on node 1 go online, and offline after the
 * grace period, not when the user moves to another node within it; notices travel only to the
 * watching node (one Redis channel per watched user, subscribed only there); the sharing rule,
 * the cap and REST on another node than the user's; a Redis restart: channels re-subscribed, the
 * state re-read, later changes still arrive.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rest, startInProcStack, type InProcStack } from './harness/inproc-stack.js';
import { startRedis, type RedisProcess } from './harness/redis.js';
import { TestClient } from './harness/ws-client.js';
import { until } from './harness/until.js';

// The move below (close on one node, hello on the other) must finish within the grace period; on a
// loaded CI machine 800 ms was once not enough (a second 'offline' arrived), so it is 2 s.
const GRACE_MS = 2000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('presence for clients across nodes (distributed)', () => {
  let s: InProcStack;
  let redis: Redis;
  let restarted: RedisProcess | null = null;
  const open: TestClient[] = [];
  const connect = async (node: number, userId: string) => {
    const c = await TestClient.connect(s.ws(node), await s.token(userId));
    open.push(c);
    return c;
  };
  const presence = (c: TestClient, userId: string) => c.frames.filter((f) => f.type === 'presence' && f.user_id === userId);
  const channels = async (node: number) => (await s.gateways[node]!.metrics.presenceChannels.get()).values[0]?.value ?? 0;
  /** Two users sharing a conversation (created over REST on node 0). */
  async function pair(): Promise<[string, string]> {
    const a = crypto.randomUUID();
    const b = crypto.randomUUID();
    const r = await rest(s.http(0), await s.token(a), 'POST', '/v1/conversations', { member_ids: [b] });
    expect(r.status).toBe(201);
    return [a, b];
  }

  beforeAll(async () => {
    s = await startInProcStack({
      gateways: 2,
      env: { REALCHAT_PRESENCE_GRACE_MS: String(GRACE_MS), REALCHAT_PRESENCE_RECHECK_MS: '1000', REALCHAT_PRESENCE_MAX_WATCHED: '2' },
    });
    redis = new Redis({ port: s.redis.port, host: '127.0.0.1', maxRetriesPerRequest: 1 });
  }, 240_000);
  afterAll(async () => {
    for (const c of open) c.close();
    redis?.disconnect();
    await s?.close();
    await restarted?.kill();
  }, 120_000);

  it('a watcher on one node sees a user on another go online and offline; a move within the grace period is no change', async () => {
    const [alice, bob] = await pair();
    const a = await connect(0, alice);
    a.send({ type: 'presence_subscribe', user_ids: [bob], ref: 'w' });
    expect(await a.waitFor((f) => f.type === 'presence')).toEqual({
      type: 'presence',
      user_id: bob,
      status: 'offline',
      last_seen_at: null,
    });
    // Only the watching node subscribes to bob's channel: a change is no broadcast to every node.
    expect(await redis.pubsub('NUMSUB', `rc:p:${bob}`)).toEqual([`rc:p:${bob}`, 1]);
    expect(await channels(0)).toBe(1);
    expect(await channels(1)).toBe(0);

    const b1 = await connect(1, bob);
    await a.waitFor((f) => f.type === 'presence' && f.status === 'online');

    // Bob moves from node 1 to node 0 within the grace period: no offline/online pair.
    b1.close();
    await b1.waitClosed();
    await sleep(150);
    const b0 = await connect(0, bob);
    await sleep(GRACE_MS + 700);
    expect(presence(a, bob).map((f) => f.status)).toEqual(['offline', 'online']);

    // Gone for longer than the grace period: offline, with its last_seen_at as stored.
    b0.close();
    await b0.waitClosed();
    const off = (await a.waitForCount((f) => f.type === 'presence' && f.user_id === bob && f.status === 'offline', 2, 10_000))[1]!;
    // Another node answers from the registry, which converges a moment later on a busy machine.
    const ask = async () => rest(s.http(1), await s.token(alice), 'GET', `/v1/users/${bob}/presence`);
    await until('node 1 reports bob offline', async () => (await ask()).body.status === 'offline', 10_000, 100);
    expect(await ask()).toEqual({ status: 200, body: { user_id: bob, status: 'offline', last_seen_at: off.last_seen_at } });
    expect(typeof off.last_seen_at).toBe('string');

    // Unsubscribed: the node leaves the channel.
    a.send({ type: 'presence_unsubscribe', user_ids: [bob] });
    await until('channel left', async () => ((await redis.pubsub('NUMSUB', `rc:p:${bob}`)) as unknown[])[1] === 0);
    expect(await channels(0)).toBe(0);
  });

  it('REST and WS on another node than the user: online, forbidden for strangers, capped', async () => {
    const [alice, bob] = await pair();
    const carol = crypto.randomUUID();
    const b = await connect(1, bob);
    const on = await rest(s.http(0), await s.token(alice), 'GET', `/v1/users/${bob}/presence`);
    expect(on).toEqual({ status: 200, body: { user_id: bob, status: 'online', last_seen_at: null } });
    expect((await rest(s.http(0), await s.token(carol), 'GET', `/v1/users/${bob}/presence`)).status).toBe(403);

    const c = await connect(0, carol);
    c.send({ type: 'presence_subscribe', user_ids: [bob], ref: 'stranger' });
    expect(await c.waitFor((f) => f.type === 'error')).toMatchObject({ code: 'forbidden', ref: 'stranger', user_ids: [bob] });
    expect(presence(c, bob)).toHaveLength(0);

    const a = await connect(0, alice);
    a.send({ type: 'presence_subscribe', user_ids: [bob, alice] });
    await a.waitForCount((f) => f.type === 'presence', 2);
    a.send({ type: 'presence_subscribe', user_ids: [crypto.randomUUID()], ref: 'over' });
    expect(await a.waitFor((f) => f.type === 'error')).toMatchObject({ code: 'invalid_frame', reason: 'watch_limit', ref: 'over' });
    b.close();
  });

  it('after a Redis restart the channels are subscribed again and changes still arrive', async () => {
    const [alice, bob] = await pair();
    const a = await connect(0, alice);
    a.send({ type: 'presence_subscribe', user_ids: [bob] });
    await a.waitFor((f) => f.type === 'presence' && f.status === 'offline');

    const port = s.redis.port;
    await s.redis.kill();
    restarted = await startRedis({ port });
    await until(
      'node 0 back on its channel',
      async () => {
        const n = await redis.pubsub('NUMSUB', `rc:p:${bob}`).catch(() => null);
        return Array.isArray(n) && n[1] === 1;
      },
      30_000,
      100,
    );

    const b = await connect(1, bob);
    await a.waitFor((f) => f.type === 'presence' && f.user_id === bob && f.status === 'online', 20_000);
    b.close();
    await b.waitClosed();
    await a.waitFor((f) => f.type === 'presence' && f.user_id === bob && f.status === 'offline', 20_000, a.frames.length);
  }, 90_000);
});
