/**
 * Presence across regions (gateway/region-presence.ts, and the forwarder's two presence calls)
 * with fakes of our own interfaces: who is online is the union of the regions; a region that does
 * not answer counts as nobody online there; a burst of questions becomes one request per region;
 * a change goes to this region's watchers and is offered to the others; another region's stale
 * `offline` for a user connected here is dropped. The two real regions are in
 * tests/region-forwarding.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { createLogger } from '../common/log.js';
import type { PresenceFeed, PresenceFeedHandlers, PresenceNotice } from '../gateway/presence-feed.js';
import { createRegionForwarder } from '../gateway/region-forwarder.js';
import { presenceFromOtherRegion, withRegionPresence } from '../gateway/region-presence.js';

const log = createLogger({ level: 'silent', nodeId: 'test', role: 'gateway' });
const U = (n: number) => `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`;

class FakeFeed implements PresenceFeed {
  constructor(readonly here: Set<string> = new Set()) {}
  published: PresenceNotice[] = [];
  async online(ids: readonly string[]) {
    return new Set(ids.filter((u) => this.here.has(u)));
  }
  async publish(n: PresenceNotice) {
    this.published.push(n);
  }
  async watch() {}
  async unwatch() {}
  start(_h: PresenceFeedHandlers) {}
  async close() {}
}

/** Other regions as the forwarder would show them: each region's connected users, or `null` (not answering). */
function fakePeers(regions: Record<string, Set<string> | null>) {
  const p = {
    asked: [] as Array<{ region: string; users: string[] }>,
    offered: [] as PresenceNotice[],
    regions: () => Object.keys(regions),
    async presenceOnline(region: string, users: readonly string[]) {
      p.asked.push({ region, users: [...users] });
      await new Promise((r) => setTimeout(r, 5));
      const there = regions[region];
      if (!there) throw new Error(`${region} does not answer`);
      return new Set(users.filter((u) => there.has(u)));
    },
    presenceNotice(n: PresenceNotice) {
      p.offered.push(n);
    },
  };
  return p;
}

describe('presence across regions (unit)', () => {
  it('online is the union of the regions; only users not online here are asked about; a region that does not answer counts as nobody online', async () => {
    const local = new FakeFeed(new Set([U(1)]));
    const peers = fakePeers({ b: new Set([U(2), U(1)]), c: null });
    const feed = withRegionPresence(local, peers, log);
    expect(await feed.online([U(1), U(2), U(3)])).toEqual(new Set([U(1), U(2)]));
    expect(peers.asked).toEqual([
      { region: 'b', users: [U(2), U(3)] },
      { region: 'c', users: [U(2), U(3)] },
    ]);
    peers.asked.length = 0;
    // Everyone online here: nobody else is asked.
    expect(await feed.online([U(1)])).toEqual(new Set([U(1)]));
    expect(peers.asked).toEqual([]);
  });

  it('a burst of questions (grace periods ending together) is one request per region, not one per user', async () => {
    const peers = fakePeers({ b: new Set([U(7)]) });
    const feed = withRegionPresence(new FakeFeed(), peers, log);
    const answers = await Promise.all(Array.from({ length: 50 }, (_, i) => feed.online([U(i)])));
    expect(answers.map((s) => s.size)).toEqual(Array.from({ length: 50 }, (_, i) => (i === 7 ? 1 : 0)));
    // Two questions start at once (at most two in flight); the 48 asked meanwhile share the next request.
    expect(peers.asked.map((a) => a.users.length)).toEqual([1, 1, 48]);
  });

  it('a change is published here first, then offered to the other regions', async () => {
    const local = new FakeFeed();
    const peers = fakePeers({ b: new Set() });
    const feed = withRegionPresence(local, peers, log);
    const n: PresenceNotice = { user_id: U(1), status: 'online', last_seen_at: null };
    await feed.publish(n);
    expect([local.published, peers.offered]).toEqual([[n], [n]]);
  });

  it("another region's offline for a user connected here is dropped; its online, and an offline for a user not here, are published here (and go no further)", async () => {
    const local = new FakeFeed(new Set([U(1)]));
    const offline = (u: string): PresenceNotice => ({ user_id: u, status: 'offline', last_seen_at: '2026-12-01T10:00:00.000Z' });
    expect(await presenceFromOtherRegion(local, offline(U(1)))).toBe('dropped');
    expect(await presenceFromOtherRegion(local, offline(U(2)))).toBe('published');
    expect(await presenceFromOtherRegion(local, { user_id: U(1), status: 'online', last_seen_at: null })).toBe('published');
    expect(local.published.map((n) => [n.user_id, n.status])).toEqual([
      [U(2), 'offline'],
      [U(1), 'online'],
    ]);
  });
});

describe('the forwarder’s presence calls (unit)', () => {
  const forwarder = (fetch: typeof globalThis.fetch) =>
    createRegionForwarder({
      peers: new Map([['a', 'http://a.invalid']]),
      secret: 'x'.repeat(32),
      forwardTimeoutMs: 200,
      failoverAfterMs: 0,
      fetch,
    })!;
  const answering = (body: unknown, status = 200) => {
    const calls: Array<{ url: string; body: unknown; auth: string | null }> = [];
    const fetch = (async (url: string, init: RequestInit) => {
      calls.push({ url, body: JSON.parse(String(init.body)), auth: new Headers(init.headers).get('authorization') });
      return new Response(JSON.stringify(body), { status });
    }) as unknown as typeof globalThis.fetch;
    return { fetch, calls };
  };

  it('asks the region with the secret and believes only names it asked about', async () => {
    const { fetch, calls } = answering({ online: [U(1), U(9), 42] });
    expect(await forwarder(fetch).presenceOnline('a', [U(1), U(2)])).toEqual(new Set([U(1)]));
    expect(calls).toEqual([
      { url: 'http://a.invalid/v1/regions/presence/online', body: { user_ids: [U(1), U(2)] }, auth: `Region ${'x'.repeat(32)}` },
    ]);
  });

  it('rejects on a refusal, a malformed answer, no answer in time, and at once while the sends have opened the breaker', async () => {
    await expect(forwarder(answering({ error: { code: 'unauthorized' } }, 401).fetch).presenceOnline('a', [U(1)])).rejects.toThrow();
    await expect(forwarder(answering({ nobody: [] }).fetch).presenceOnline('a', [U(1)])).rejects.toMatchObject({
      reason: 'home_unreachable',
    });
    let started = 0;
    const hanging = ((_u: string, init: RequestInit) =>
      new Promise((_, reject) => {
        started++;
        init.signal?.addEventListener('abort', () => reject(init.signal!.reason));
      })) as unknown as typeof globalThis.fetch;
    const f = forwarder(hanging);
    await expect(f.presenceOnline('a', [U(1)])).rejects.toMatchObject({ code: 'unavailable' });
    // A question neither trips nor probes the breaker: three of them, then a send still goes out.
    for (let i = 0; i < 3; i++) await f.presenceOnline('a', [U(1)]).catch(() => {});
    const before = started;
    for (const k of ['k1', 'k2', 'k3']) await f.send('a', U(1), U(2), k, {}, null).catch(() => {});
    expect(started).toBe(before + 3);
    await expect(f.presenceOnline('a', [U(1)])).rejects.toMatchObject({ code: 'unavailable' });
    expect(started).toBe(before + 3);
    // Changes are dropped too while it is open.
    f.presenceNotice({ user_id: U(1), status: 'online', last_seen_at: null });
    expect(started).toBe(before + 3);
  });
});
