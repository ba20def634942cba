/** One behaviour suite for both presence registries (in-memory and Redis, real redis-server). */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InMemoryPresence, RedisPresence, type PresenceRegistry } from '../common/presence.js';
import { startRedis, type RedisProcess } from './harness/redis.js';

let redis: RedisProcess;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.kill();
});

const factories: Array<[string, () => Promise<PresenceRegistry>]> = [
  ['in-memory', async () => new InMemoryPresence()],
  [
    'redis',
    async () => {
      const p = new RedisPresence({ url: `redis://127.0.0.1:${redis.port}`, commandTimeoutMs: 1000, liveCacheMs: 0 });
      expect(await p.ready(5000)).toBe(true);
      return p;
    },
  ],
];

describe.each(factories)('presence registry (%s)', (_name, make) => {
  const uid = () => Math.random().toString(36).slice(2);

  it('locates users on live nodes only, counting connections', async () => {
    const p = await make();
    const [n1, n2, u1, u2] = [uid(), uid(), uid(), uid()];
    await p.heartbeat(n1, 5000);
    await p.heartbeat(n2, 5000);
    await p.addConnection(n1, u1);
    await p.addConnection(n1, u1);
    await p.addConnection(n2, u1);
    await p.addConnection(n2, u2);
    let at = await p.locate([u1, u2]);
    expect(at.get(n1)).toEqual([u1]);
    expect(new Set(at.get(n2))).toEqual(new Set([u1, u2]));
    await p.removeConnection(n1, u1);
    expect((await p.locate([u1])).get(n1)).toEqual([u1]);
    await p.removeConnection(n1, u1);
    at = await p.locate([u1]);
    expect(at.has(n1)).toBe(false);
    expect(at.get(n2)).toEqual([u1]);
    await p.close();
  });

  it('large rooms: nodes register interest; only live interested nodes are returned; leaving, re-sync and node removal clean up', async () => {
    const p = await make();
    const [n1, n2, r1, r2] = [uid(), uid(), uid(), uid()];
    await p.heartbeat(n1, 5000);
    await p.heartbeat(n2, 5000);
    await p.setRoomInterest(n1, r1, true);
    await p.setRoomInterest(n2, r1, true);
    await p.setRoomInterest(n2, r2, true);
    let rooms = await p.roomNodes([r1, r2, uid()]);
    expect(new Set(rooms.get(r1))).toEqual(new Set([n1, n2]));
    expect(rooms.get(r2)).toEqual([n2]);
    await p.setRoomInterest(n2, r1, false);
    expect((await p.roomNodes([r1])).get(r1)).toEqual([n1]);
    await p.removeNode(n2);
    rooms = await p.roomNodes([r1, r2]);
    expect([rooms.get(r1), rooms.get(r2)]).toEqual([[n1], []]);
    await p.heartbeat(n2, 5000);
    await p.resync(n2, new Map(), [r2]);
    expect((await p.roomNodes([r2])).get(r2)).toEqual([n2]);
    await p.close();
  });

  it('ignores nodes whose heartbeat expired, and reports them dead', async () => {
    const p = await make();
    const [n, u] = [uid(), uid()];
    await p.heartbeat(n, 50);
    await p.addConnection(n, u);
    expect((await p.locate([u])).get(n)).toEqual([u]);
    await new Promise((r) => setTimeout(r, 120));
    expect((await p.locate([u])).has(n)).toBe(false);
    expect(await p.liveNodes()).not.toContain(n);
    expect(await p.deadNodes(10)).toContain(n);
    await p.forgetNode(n);
    expect(await p.deadNodes(0)).not.toContain(n);
    await p.close();
  });

  it("heartbeat says whether the node's entries are intact: not before a resync, nor after the node was removed or forgotten", async () => {
    const p = await make();
    const [n, u] = [uid(), uid()];
    expect(await p.heartbeat(n, 5000)).toBe(false);
    await p.resync(n, new Map([[u, 1]]));
    expect(await p.heartbeat(n, 5000)).toBe(true);
    await p.addConnection(n, u);
    expect(await p.heartbeat(n, 5000)).toBe(true);
    await p.removeNode(n);
    expect(await p.heartbeat(n, 5000)).toBe(false);
    await p.resync(n, new Map([[u, 1]]));
    expect(await p.heartbeat(n, 5000)).toBe(true);
    await p.forgetNode(n);
    expect(await p.heartbeat(n, 5000)).toBe(false);
    await p.close();
  });

  it('removeNode clears its users; resync restores them', async () => {
    const p = await make();
    const [n, u1, u2] = [uid(), uid(), uid()];
    await p.heartbeat(n, 5000);
    await p.addConnection(n, u1);
    await p.removeNode(n);
    await p.heartbeat(n, 5000);
    expect((await p.locate([u1])).has(n)).toBe(false);
    await p.resync(
      n,
      new Map([
        [u1, 1],
        [u2, 2],
      ]),
    );
    expect(new Set((await p.locate([u1, u2])).get(n))).toEqual(new Set([u1, u2]));
    await p.close();
  });

  it("a user's connection closing while another opens on the same node leaves the user located there", async () => {
    const p = await make();
    const [n, u] = [uid(), uid()];
    await p.heartbeat(n, 5000);
    await p.addConnection(n, u);
    // Both issued before either answers: a decrement-then-delete in two round trips let the new
    // connection's increment fall between them, and the delete wiped it.
    await Promise.all([p.removeConnection(n, u), p.addConnection(n, u)]);
    expect((await p.locate([u])).get(n)).toEqual([u]);
    await p.removeConnection(n, u);
    expect((await p.locate([u])).has(n)).toBe(false);
    await p.close();
  });

  it('setConnections sets counts (0 removes) without claiming the node is complete', async () => {
    const p = await make();
    const [n, u1, u2] = [uid(), uid(), uid()];
    await p.addConnection(n, u1);
    await p.setConnections(
      n,
      new Map([
        [u1, 0],
        [u2, 2],
      ]),
    );
    expect(await p.heartbeat(n, 5000)).toBe(false);
    const at = await p.locate([u1, u2]);
    expect(at.get(n)).toEqual([u2]);
    await p.removeConnection(n, u2);
    expect((await p.locate([u2])).get(n)).toEqual([u2]);
    await p.close();
  });
});

describe("redis presence when Redis loses a node's entries", () => {
  it('heartbeat reports it (marker gone, or a new connection) until the node re-asserts them', async () => {
    const p = new RedisPresence({ url: `redis://127.0.0.1:${redis.port}`, commandTimeoutMs: 1000, liveCacheMs: 0 });
    expect(await p.ready(5000)).toBe(true);
    const n = `lost-${Math.random().toString(36).slice(2)}`;
    await p.resync(n, new Map([['u', 1]]));
    expect(await p.heartbeat(n, 5000)).toBe(true);
    await p.redis.del(`rc:m:${n}`, 'rc:u:u'); // e.g. a primary that came back empty
    expect(await p.heartbeat(n, 5000)).toBe(false);
    await p.resync(n, new Map([['u', 1]]));
    expect(await p.heartbeat(n, 5000)).toBe(true);
    // A new connection may be to a promoted replica that lacks the latest writes.
    const reconnected = new Promise((r) => p.redis.once('ready', r));
    const other = new Redis({ port: redis.port, host: '127.0.0.1' });
    await other.call('CLIENT', 'KILL', 'TYPE', 'normal', 'SKIPME', 'yes');
    other.disconnect();
    await reconnected;
    expect(await p.heartbeat(n, 5000)).toBe(false);
    await p.resync(n, new Map([['u', 1]]));
    expect(await p.heartbeat(n, 5000)).toBe(true);
    await p.close();
  });
});

describe('redis presence right after a reconnection', () => {
  it('locate() and roomNodes() reject for settleMs after a reconnection (not after the first connection), so callers broadcast', async () => {
    const p = new RedisPresence({ url: `redis://127.0.0.1:${redis.port}`, commandTimeoutMs: 1000, liveCacheMs: 0, settleMs: 1500 });
    expect(await p.ready(5000)).toBe(true);
    const n = `settle-${Math.random().toString(36).slice(2)}`;
    await p.heartbeat(n, 10_000);
    await p.addConnection(n, 'u');
    expect((await p.locate(['u'])).get(n)).toEqual(['u']);
    const reconnected = new Promise((r) => p.redis.once('ready', r));
    const other = new Redis({ port: redis.port, host: '127.0.0.1' });
    await other.call('CLIENT', 'KILL', 'TYPE', 'normal', 'SKIPME', 'yes');
    other.disconnect();
    await reconnected;
    await expect(p.locate(['u'])).rejects.toThrow(/reconnected/);
    await expect(p.roomNodes(['r'])).rejects.toThrow(/reconnected/);
    await new Promise((r) => setTimeout(r, 1600));
    expect((await p.locate(['u'])).get(n)).toEqual(['u']);
    await p.close();
  });
});

describe('redis presence when Redis is down', () => {
  it('rejects quickly instead of hanging or queueing', async () => {
    const r = await startRedis();
    const p = new RedisPresence({ url: `redis://127.0.0.1:${r.port}`, commandTimeoutMs: 500 });
    expect(await p.ready(5000)).toBe(true);
    await p.heartbeat('n', 1000);
    await r.kill();
    const t0 = Date.now();
    await expect(p.locate(['u'])).rejects.toBeTruthy();
    expect(Date.now() - t0).toBeLessThan(3000);
    await p.close();
  });
});

describe('redis presence keys', () => {
  it('a connection renews its user and node entries for a day, and removeNode still finds the user', async () => {
    const p = new RedisPresence({ url: `redis://127.0.0.1:${redis.port}`, commandTimeoutMs: 1000, liveCacheMs: 0 });
    expect(await p.ready(5000)).toBe(true);
    const [n, u] = [`keys-${Math.random().toString(36).slice(2)}`, `u-${Math.random().toString(36).slice(2)}`];
    await p.addConnection(n, u);
    await p.addConnection(n, u);
    expect(await p.redis.hget(`rc:u:${u}`, n)).toBe('2');
    expect(await p.redis.sismember(`rc:n:${n}`, u)).toBe(1);
    for (const key of [`rc:u:${u}`, `rc:n:${n}`]) {
      const ttl = await p.redis.ttl(key);
      expect(ttl).toBeGreaterThan(86_400 - 60);
      expect(ttl).toBeLessThanOrEqual(86_400);
    }
    await p.removeNode(n);
    expect(await p.redis.hget(`rc:u:${u}`, n)).toBeNull();
    await p.close();
  });
});
