/**
 * Chaos finding 8 (docs/chaos.md): after Redis failovers a gateway's users were routed to no node
 * for good. A gateway node must keep its presence entries (heartbeat, user -> node) in the registry
 * through whatever Redis does, with real redis-server / redis-sentinel processes:
 * - a failover notice that reaches the registry's client while it is asking a (slow) sentinel for
 *   the primary: ioredis then gives up for good (status "end", every command "Connection is
 *   closed."), the node's heartbeat stops and it looks dead to every delivery worker;
 * - a server that comes back empty (no persistence) before the node missed a heartbeat;
 * - a new connection to a server that lacks the node's latest writes (a promoted replica).
 */
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { RedisPresence } from '../common/presence.js';
import { createLogger } from '../common/log.js';
import { PresenceAgent } from '../gateway/presence-agent.js';
import { redisNowMs, startRedis, startSentinelCluster, type RedisProcess, type SentinelCluster } from './harness/redis.js';

const log = createLogger({ level: 'silent', nodeId: 't', role: 'test' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!().catch(() => {});
});

/** A direct connection (no Sentinel) that reads what the registry holds. */
function inspect(port: number): Redis {
  const r = new Redis({ port, host: '127.0.0.1', lazyConnect: false, maxRetriesPerRequest: 1 });
  r.on('error', () => {});
  cleanups.push(async () => r.disconnect());
  return r;
}

/** Is `user` registered on `node`, and `node` live (heartbeat expiry after Redis's now)? */
async function registered(r: Redis, node: string, user: string): Promise<boolean> {
  const [now, score, count] = await Promise.all([redisNowMs(r), r.zscore('rc:nodes', node), r.hget(`rc:u:${user}`, node)]);
  return score !== null && Number(score) > now && Number(count) > 0;
}

async function eventually(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown = null;
  for (;;) {
    try {
      if (await check()) return;
      last = 'false';
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms (last: ${String(last)})`);
    await sleep(100);
  }
}

function startAgent(registry: RedisPresence, node: string, users: Map<string, number>, heartbeatMs: number): PresenceAgent {
  const agent = new PresenceAgent(
    registry,
    node,
    heartbeatMs,
    3000,
    log,
    () => users,
    () => [],
  );
  cleanups.push(async () => {
    await agent.stop();
    await registry.close();
  });
  return agent;
}

/** Resolves right after the registry's next successful heartbeat (so a fault lands between two). */
function afterNextBeat(registry: RedisPresence): Promise<void> {
  const original = registry.heartbeat;
  return new Promise((resolve) => {
    registry.heartbeat = (async (nodeId: string, ttlMs: number) => {
      const out = await original.call(registry, nodeId, ttlMs);
      registry.heartbeat = original;
      resolve();
      return out;
    }) as typeof registry.heartbeat;
  });
}

describe('presence entries survive Redis failovers and restarts (finding 8)', () => {
  it('a failover notice while the client asks a slow sentinel for the primary: the node comes back', async () => {
    const cluster: SentinelCluster = await startSentinelCluster();
    cleanups.push(() => cluster.stop());
    const [s0, s1] = cluster.sentinels as [RedisProcess, RedisProcess, RedisProcess];
    const registry = new RedisPresence({
      sentinels: cluster.sentinels.map((s) => ({ host: '127.0.0.1', port: s.port })),
      sentinelName: cluster.name,
      commandTimeoutMs: 500,
    });
    expect(await registry.ready(5000)).toBe(true);
    const users = new Map([['alice', 1]]);
    const agent = startAgent(registry, 'gw-a', users, 200);
    await agent.start();
    await agent.connected('alice');
    const before = inspect(cluster.primary.port);
    await eventually('registered on the first primary', () => registered(before, 'gw-a', 'alice'), 5000);

    // The client asks sentinel-0 first (the one it resolved the primary from); it is slow (paused),
    // so the client is still waiting on it when the other two announce +switch-master.
    s0.child.kill('SIGSTOP');
    cleanups.push(async () => s0.child.kill('SIGCONT'));
    await cluster.primary.kill();
    const sentinel1 = inspect(s1.port);
    await eventually(
      'sentinels promote the replica',
      async () =>
        ((await sentinel1.call('SENTINEL', 'get-master-addr-by-name', cluster.name)) as string[])[1] === String(cluster.replica.port),
      20_000,
    );
    await sleep(500);
    s0.child.kill('SIGCONT');

    const after = inspect(cluster.replica.port);
    await eventually(
      'the node and its user registered on the new primary',
      async () =>
        (await registered(after, 'gw-a', 'alice')) || Promise.reject(new Error(`registry client status ${registry.redis.status}`)),
      10_000,
    );
    expect(registry.redis.status).toBe('ready');
  });

  it('a server that comes back empty between two heartbeats: the node re-registers its users', async () => {
    const first = await startRedis();
    const port = first.port;
    const registry = new RedisPresence({ url: `redis://127.0.0.1:${port}`, commandTimeoutMs: 500 });
    expect(await registry.ready(5000)).toBe(true);
    const agent = startAgent(registry, 'gw-b', new Map([['bob', 1]]), 1000);
    await agent.start();
    await agent.connected('bob');
    const r = inspect(port);
    await eventually('registered', () => registered(r, 'gw-b', 'bob'), 5000);

    await afterNextBeat(registry);
    await first.kill();
    const second = await startRedis({ port });
    cleanups.push(() => second.kill());
    await eventually('bob registered again on the restarted (empty) server', () => registered(r, 'gw-b', 'bob'), 6000);
  });

  it('a new connection to a server that lacks the latest writes (a promoted replica): the node re-asserts them', async () => {
    const server = await startRedis();
    cleanups.push(() => server.kill());
    const registry = new RedisPresence({ url: `redis://127.0.0.1:${server.port}`, commandTimeoutMs: 500 });
    expect(await registry.ready(5000)).toBe(true);
    const users = new Map([['carol', 1]]);
    const agent = startAgent(registry, 'gw-c', users, 1000);
    await agent.start();
    await agent.connected('carol');
    users.set('dave', 1);
    await agent.connected('dave');
    const r = inspect(server.port);
    await eventually('registered', async () => (await registered(r, 'gw-c', 'carol')) && (await registered(r, 'gw-c', 'dave')), 5000);

    // What a failover to a replica that had not received the last write looks like to the node:
    // that write is gone, and its connection was closed (Sentinel kills the clients of a demoted
    // primary; a dead one closes them itself). No heartbeat fails.
    await afterNextBeat(registry);
    await r.hdel('rc:u:dave', 'gw-c');
    await r.call('CLIENT', 'KILL', 'TYPE', 'normal', 'SKIPME', 'yes');
    await eventually('dave registered again', () => registered(r, 'gw-c', 'dave'), 6000);
    expect(await registered(r, 'gw-c', 'carol')).toBe(true);
  });
});
