/**
 * Presence liveness is decided on Redis's clock alone (common/presence.ts), against a real Redis:
 * a node whose process clock is an hour off neither looks dead to the others (misrouted
 * deliveries, its topic deleted by the janitor) nor sees live nodes as dead. The skew is applied to
 * this process's Date while one registry instance acts (vitest fake Date; timers stay real).
 */
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { RedisPresence } from '../common/presence.js';
import { startRedis, type RedisProcess } from './harness/redis.js';

const HOUR = 3600_000;
const TEN_MINUTES = 600_000;

describe('presence liveness on one clock (real Redis)', () => {
  let redis: RedisProcess;
  const registries: RedisPresence[] = [];
  const registry = () => {
    const r = new RedisPresence({ url: `redis://127.0.0.1:${redis.port}`, commandTimeoutMs: 2000, liveCacheMs: 0 });
    registries.push(r);
    return r;
  };

  beforeAll(async () => {
    redis = await startRedis();
  });
  afterEach(() => {
    vi.useRealTimers();
  });
  afterAll(async () => {
    for (const r of registries) await r.close();
    await redis.kill();
  });

  /** Runs `fn` with this process's wall clock shifted by `skewMs`. */
  async function skewed<T>(skewMs: number, fn: () => Promise<T>): Promise<T> {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(new Date(Date.now() + skewMs));
    try {
      return await fn();
    } finally {
      vi.useRealTimers();
    }
  }

  it('a node whose clock runs an hour behind is live to the others, routed to, and not a dead-topic candidate', async () => {
    const behind = registry();
    const other = registry();
    await behind.ready(5000);
    await other.ready(5000);
    await skewed(-HOUR, async () => {
      await behind.heartbeat('node-behind', 5000);
      await behind.addConnection('node-behind', 'user-1');
    });
    expect(await other.liveNodes()).toContain('node-behind');
    expect(await other.locate(['user-1'])).toEqual(new Map([['node-behind', ['user-1']]]));
    // The janitor (delivery/worker.ts) deletes the topics of nodes deadNodes() returns.
    expect(await other.deadNodes(TEN_MINUTES)).not.toContain('node-behind');
  });

  it('a node whose clock runs an hour ahead does not outlive its TTL, and a reader an hour ahead still sees live nodes', async () => {
    const ahead = registry();
    const reader = registry();
    await ahead.ready(5000);
    await reader.ready(5000);
    await skewed(HOUR, () => ahead.heartbeat('node-ahead', 300));
    expect(await reader.liveNodes()).toContain('node-ahead');
    await new Promise((r) => setTimeout(r, 400));
    // Its heartbeat expired on Redis's clock, whatever its own clock said.
    expect(await reader.liveNodes()).not.toContain('node-ahead');

    await reader.heartbeat('node-normal', 5000);
    expect(await skewed(HOUR, () => reader.liveNodes())).toContain('node-normal');
    expect(await skewed(HOUR, () => reader.deadNodes(TEN_MINUTES))).not.toContain('node-normal');
  });
});
