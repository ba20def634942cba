/**
 * gateway/presence-watch.ts with a fake feed and store (fake timers): what the integration tests
 * reach only by luck of timing: notices about one transition from several nodes collapse into one
 * frame, a notice that arrives during a subscribe's read wins over the read, a connection that
 * closes during the sharing lookup leaves nothing behind, the grace period, and the recheck.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createLogger } from '../common/log.js';
import { createMetrics } from '../common/metrics.js';
import type { PresenceFeed, PresenceFeedHandlers, PresenceNotice } from '../gateway/presence-feed.js';
import { createPresenceService, type PresenceService, type PresenceWatcher } from '../gateway/presence-watch.js';

const A = '00000000-0000-4000-8000-00000000000a';
const B = '00000000-0000-4000-8000-00000000000b';
const GRACE = 5000;
const RECHECK = 30_000;

class FakeFeed implements PresenceFeed {
  online_ = new Set<string>();
  published: PresenceNotice[] = [];
  watched = new Set<string>();
  handlers: PresenceFeedHandlers | null = null;
  /** When set, online() waits for it (a read in flight). */
  gate: Promise<void> | null = null;
  async online(ids: readonly string[]) {
    if (this.gate) await this.gate;
    return new Set(ids.filter((u) => this.online_.has(u)));
  }
  async publish(n: PresenceNotice) {
    this.published.push(n);
  }
  async watch(u: string) {
    this.watched.add(u);
  }
  async unwatch(u: string) {
    this.watched.delete(u);
  }
  start(h: PresenceFeedHandlers) {
    this.handlers = h;
  }
  async close() {}
}

class Watcher implements PresenceWatcher {
  frames: Array<Record<string, unknown>> = [];
  closed = false;
  constructor(readonly userId: string) {}
  sendFrame(f: string) {
    this.frames.push(JSON.parse(f));
  }
}

describe('presence service (unit)', () => {
  let feed: FakeFeed;
  let seen: Map<string, { lastSeenAt: string; ageMs: number }>;
  let shared: (caller: string, ids: readonly string[]) => Promise<Set<string>>;
  let svc: PresenceService;
  let metrics: ReturnType<typeof createMetrics>;

  beforeEach(() => {
    vi.useFakeTimers();
    metrics = createMetrics({ nodeId: 'unit', defaultMetrics: false });
    feed = new FakeFeed();
    seen = new Map();
    shared = async (_c, ids) => new Set(ids);
    svc = createPresenceService({
      feed,
      store: {
        sharedWith: (c, ids) => shared(c, ids),
        recordLastSeen: async () => '2026-11-30T08:00:00.000Z',
        lastSeen: async (ids) => new Map([...seen].filter(([u]) => ids.includes(u))),
      },
      graceMs: GRACE,
      maxWatchedPerConnection: 10,
      recheckMs: RECHECK,
      log: createLogger({ level: 'silent', nodeId: 'unit', role: 'gateway' }),
      metrics,
    });
  });
  afterEach(async () => {
    await svc.stop();
    vi.useRealTimers();
  });

  it('notices of one transition from several nodes are one frame', async () => {
    const w = new Watcher(A);
    await svc.subscribe(w, [B]);
    expect(w.frames).toEqual([{ type: 'presence', user_id: B, status: 'offline', last_seen_at: null }]);
    for (let i = 0; i < 3; i++) feed.handlers!.notice({ user_id: B, status: 'online', last_seen_at: null });
    feed.handlers!.notice({ user_id: B, status: 'offline', last_seen_at: '2026-11-30T08:00:00.000Z' });
    feed.handlers!.notice({ user_id: B, status: 'offline', last_seen_at: '2026-11-30T08:00:01.000Z' });
    expect(w.frames.map((f) => f.status)).toEqual(['offline', 'online', 'offline']);
    expect(w.frames[2]!.last_seen_at).toBe('2026-11-30T08:00:00.000Z');
  });

  it('a notice during the subscribe read is newer than the read', async () => {
    const w = new Watcher(A);
    let open!: () => void;
    feed.gate = new Promise((r) => (open = r));
    const sub = svc.subscribe(w, [B]);
    await vi.advanceTimersByTimeAsync(0);
    // The read started when B was offline; B comes online before it answers.
    feed.handlers!.notice({ user_id: B, status: 'online', last_seen_at: null });
    open();
    await sub;
    expect(w.frames.at(-1)).toEqual({ type: 'presence', user_id: B, status: 'online', last_seen_at: null });
  });

  it('a connection closed during the sharing lookup leaves no watch behind', async () => {
    const w = new Watcher(A);
    let allow!: () => void;
    shared = (_c, ids) => new Promise((r) => (allow = () => r(new Set(ids))));
    const sub = svc.subscribe(w, [B]);
    w.closed = true;
    svc.disconnected(w);
    allow();
    await sub;
    expect(feed.watched.size).toBe(0);
    expect((await metrics.presenceChannels.get()).values[0]?.value ?? 0).toBe(0);
  });

  it('publishes offline only after the grace period, and not after a reconnect within it', async () => {
    const b1 = new Watcher(B);
    svc.connected(b1);
    expect(feed.published).toEqual([{ user_id: B, status: 'online', last_seen_at: null }]);
    feed.online_.add(B);
    // Closed, back within the grace period: nothing more.
    feed.online_.delete(B);
    svc.disconnected(b1);
    await vi.advanceTimersByTimeAsync(GRACE / 2);
    const b2 = new Watcher(B);
    svc.connected(b2);
    feed.online_.add(B);
    await vi.advanceTimersByTimeAsync(GRACE * 2);
    expect(feed.published.map((n) => n.status)).toEqual(['online', 'online']);
    // Closed here while still on another node at the end of the grace period: nothing.
    svc.disconnected(b2);
    await vi.advanceTimersByTimeAsync(GRACE + 1);
    expect(feed.published.map((n) => n.status)).toEqual(['online', 'online']);
    // Closed for good.
    const b3 = new Watcher(B);
    svc.connected(b3);
    feed.online_.delete(B);
    svc.disconnected(b3);
    await vi.advanceTimersByTimeAsync(GRACE - 10);
    expect(feed.published.at(-1)!.status).toBe('online');
    await vi.advanceTimersByTimeAsync(20);
    expect(feed.published.at(-1)).toEqual({ user_id: B, status: 'offline', last_seen_at: '2026-11-30T08:00:00.000Z' });
  });

  it('leaves the decision to the node where the user closed last', async () => {
    const b = new Watcher(B);
    svc.connected(b);
    svc.disconnected(b);
    // Meanwhile the user's connection on another node closed later (recordLastSeen here said 08:00:00).
    seen.set(B, { lastSeenAt: '2026-11-30T08:00:03.000Z', ageMs: 1 });
    await vi.advanceTimersByTimeAsync(GRACE + 1);
    expect(feed.published.map((n) => n.status)).toEqual(['online']);
  });

  it('the recheck repairs a lost notice, but not within the grace period', async () => {
    const w = new Watcher(A);
    feed.online_.add(B);
    await svc.subscribe(w, [B]);
    expect(w.frames.at(-1)!.status).toBe('online');
    // B's node died: no notice. Its last close is recent at first (within the grace period).
    feed.online_.delete(B);
    seen.set(B, { lastSeenAt: '2026-11-30T08:00:00.000Z', ageMs: GRACE / 2 });
    await vi.advanceTimersByTimeAsync(RECHECK);
    expect(w.frames.at(-1)!.status).toBe('online');
    seen.set(B, { lastSeenAt: '2026-11-30T08:00:00.000Z', ageMs: GRACE * 2 });
    await vi.advanceTimersByTimeAsync(RECHECK);
    expect(w.frames.at(-1)).toEqual({ type: 'presence', user_id: B, status: 'offline', last_seen_at: '2026-11-30T08:00:00.000Z' });
    expect(w.frames).toHaveLength(2);
  });

  it('caps the users a connection watches and names refused users', async () => {
    const w = new Watcher(A);
    const ids = Array.from({ length: 11 }, (_, i) => `00000000-0000-4000-8000-0000000001${String(i).padStart(2, '0')}`);
    await expect(svc.subscribe(w, ids)).rejects.toMatchObject({ code: 'invalid_frame', reason: 'watch_limit' });
    expect(feed.watched.size).toBe(0);
    shared = async () => new Set([ids[0]!]);
    await expect(svc.subscribe(w, ids.slice(0, 3))).rejects.toMatchObject({ code: 'forbidden', userIds: ids.slice(1, 3) });
    expect([...feed.watched]).toEqual([ids[0]]);
  });
});
