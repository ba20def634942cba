/**
 * Command deadlines on a real redis-server (common/redis-timeouts.ts): a reply that arrived while
 * the event loop was blocked past the deadline is a reply, not a timeout; a server that does not
 * answer still times the command out.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisPresence } from '../common/presence.js';
import { COMMAND_TIMED_OUT, deadlineAfterReads } from '../common/redis-timeouts.js';
import { startRedis, type RedisProcess } from './harness/redis.js';
import { blockLoop } from './harness/block-loop.js';

let redis: RedisProcess;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.kill();
});

async function client(deadline: 'ioredis' | 'after reads'): Promise<Redis> {
  const r = new Redis({
    port: redis.port,
    host: '127.0.0.1',
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    ...(deadline === 'ioredis' ? { commandTimeout: 200 } : {}),
  });
  if (deadline === 'after reads') deadlineAfterReads(r, 200);
  await new Promise((resolve) => r.once('ready', resolve));
  return r;
}

describe('redis command deadlines', () => {
  it("ioredis's own timeout reports a reply that waited behind a blocked loop as a timeout (why ours exists)", async () => {
    const r = await client('ioredis');
    const pending = r.ping();
    blockLoop(400);
    await expect(pending).rejects.toThrow(COMMAND_TIMED_OUT);
    r.disconnect();
  });

  it('ours settles it with the reply, for plain commands, scripts and pipelines', async () => {
    const r = await client('after reads');
    r.defineCommand('echoKey', { numberOfKeys: 1, lua: 'return KEYS[1]' });
    const ping = r.ping();
    const script = (r as unknown as { echoKey(k: string): Promise<string> }).echoKey('k');
    const pipeline = r.pipeline().set('deadline:a', '1').get('deadline:a').exec();
    blockLoop(400);
    expect(await ping).toBe('PONG');
    expect(await script).toBe('k');
    expect((await pipeline)?.map(([, v]) => v)).toEqual(['OK', '1']);
    r.disconnect();
  });

  it('a server that stopped answering still times the command out, near the deadline', async () => {
    const r = await client('after reads');
    redis.child.kill('SIGSTOP');
    try {
      const t0 = performance.now();
      await expect(r.ping()).rejects.toThrow(COMMAND_TIMED_OUT);
      const took = performance.now() - t0;
      expect(took).toBeGreaterThanOrEqual(195);
      expect(took).toBeLessThan(1000);
    } finally {
      redis.child.kill('SIGCONT');
    }
    expect(await r.ping()).toBe('PONG');
    r.disconnect();
  });

  it('the presence registry and its subscriber connection use it', async () => {
    const p = new RedisPresence({ url: `redis://127.0.0.1:${redis.port}`, commandTimeoutMs: 200, liveCacheMs: 0 });
    expect(await p.ready(5000)).toBe(true);
    const sub = p.subscriberConnection();
    await new Promise((resolve) => sub.once('ready', resolve));
    const beat = p.heartbeat('deadline-node', 5000);
    const subscribed = sub.subscribe('deadline:channel');
    blockLoop(400);
    expect(await beat).toBe(false);
    expect(await subscribed).toBe(1);
    sub.disconnect();
    await p.close();
  });
});
