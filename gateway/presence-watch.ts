/**
 * Presence for clients on one gateway node (docs/architecture.md, "Presence for clients"):
 * - announces this node's users: the first connection here publishes `online`; when the last one
 *   closes, last_seen_at is written and, after the grace period, if the user holds no connection on
 *   any live node, `offline` is published (a reconnect within the grace period, here or on another
 *   node, is no change: flapping is coalesced);
 * - serves watchers: connections that sent presence_subscribe get one `presence` frame per user at
 *   once and one per change after. Per watched user the node keeps one state and one channel
 *   subscription however many of its connections watch it, and writes a frame only when the status
 *   changes (notices from several nodes about one transition collapse into one frame);
 * - repairs: every `recheckMs`, and after the transport reconnected, it re-reads the status of
 *   every user it watches (a lost notice, a node killed before it could publish).
 * Bounds: `maxWatchedPerConnection` users per connection; state only for watched users and for
 * users in their grace period.
 */
import { AppError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { Metrics } from '../common/metrics.js';
import { encodeFrame } from '../common/protocol.js';
import type { PresenceSummary } from '../common/wire.js';
import type { ChatStore } from './chat-store.js';
import type { PresenceFeed, PresenceNotice } from './presence-feed.js';

/** A connection as presence sees it. */
export interface PresenceWatcher {
  readonly userId: string;
  /** Closed: disconnected() ran, so nothing may be registered for it any more. */
  readonly closed: boolean;
  sendFrame(frame: string): void;
}

export interface PresenceServiceDeps {
  feed: PresenceFeed;
  store: Pick<ChatStore, 'sharedWith' | 'recordLastSeen' | 'lastSeen'>;
  graceMs: number;
  maxWatchedPerConnection: number;
  recheckMs: number;
  log: Logger;
  metrics: Metrics;
}

export interface PresenceService {
  /** A connection finished hello (after the registry knows it). */
  connected(conn: PresenceWatcher): void;
  /** A connection closed: its watches end; if it was the user's last here, the grace period starts. */
  disconnected(conn: PresenceWatcher): void;
  /** Throws `forbidden` (with the refused user ids) after serving the allowed ones, `invalid_frame`/`watch_limit` past the cap. */
  subscribe(conn: PresenceWatcher, userIds: readonly string[]): Promise<void>;
  unsubscribe(conn: PresenceWatcher, userIds: readonly string[]): Promise<void>;
  /** GET /v1/users/{id}/presence. */
  status(caller: string, userId: string): Promise<PresenceSummary>;
  stop(): Promise<void>;
}

type Status = PresenceSummary['status'];

interface Watch {
  /** null until first read. */
  status: Status | null;
  lastSeenAt: string | null;
  watchers: Set<PresenceWatcher>;
  /** Bumped by every notice: a read that started before one is older than it. */
  version: number;
}

/** Users per registry / database read. */
const READ_BATCH = 1000;

export function createPresenceService(deps: PresenceServiceDeps): PresenceService {
  const { feed, store, log, metrics } = deps;
  const watches = new Map<string, Watch>();
  const byConn = new Map<PresenceWatcher, Set<string>>();
  /** Connections announced online, per user (this node). */
  const announced = new Set<PresenceWatcher>();
  const connsHere = new Map<string, number>();
  /** Users whose last connection here closed less than graceMs ago: the timer that decides offline. */
  const grace = new Map<string, NodeJS.Timeout>();
  let stopped = false;
  let rechecking: Promise<void> | null = null;

  feed.start({
    notice: (n) => {
      metrics.presenceNotices.inc({ result: 'received' });
      const w = watches.get(n.user_id);
      if (!w) return;
      w.version++;
      apply(n.user_id, w, n.status, n.last_seen_at);
    },
    reconnected: () => void recheck(),
    invalid: () => metrics.presenceNotices.inc({ result: 'invalid' }),
  });
  const timer = setInterval(() => void recheck(), deps.recheckMs);
  timer.unref();

  const frameOf = (userId: string, status: Status, lastSeenAt: string | null) =>
    encodeFrame({ type: 'presence', user_id: userId, status, last_seen_at: status === 'online' ? null : lastSeenAt });

  /** Updates the node's state of a watched user; on a status change, one frame to every watcher (encoded once). */
  function apply(userId: string, w: Watch, status: Status, lastSeenAt: string | null, except?: PresenceWatcher): void {
    const changed = w.status !== status;
    w.status = status;
    if (status === 'offline') w.lastSeenAt = lastSeenAt;
    if (!changed) return;
    const frame = frameOf(userId, status, w.lastSeenAt);
    for (const c of w.watchers) {
      if (c === except) continue;
      c.sendFrame(frame);
      metrics.presenceFrames.inc();
    }
  }

  function publish(n: PresenceNotice): void {
    feed.publish(n).then(
      () => metrics.presenceNotices.inc({ result: 'published' }),
      (err) => {
        metrics.presenceNotices.inc({ result: 'failed' });
        log.debug({ err, user_id: n.user_id }, 'presence notice not published; watchers repair it at their recheck');
      },
    );
  }

  /**
   * Status now, cluster-wide. A user with no connection anywhere whose last one closed less than
   * graceMs ago (database clock) is still online: the node it closed on decides at the end of the
   * grace period, so a reconnect meanwhile is no change.
   */
  async function read(userIds: readonly string[]): Promise<Map<string, PresenceSummary>> {
    const out = new Map<string, PresenceSummary>();
    for (let i = 0; i < userIds.length; i += READ_BATCH) {
      const slice = userIds.slice(i, i + READ_BATCH);
      const online = await feed.online(slice);
      const rest = slice.filter((u) => !online.has(u) && !grace.has(u));
      const seen = await store.lastSeen(rest);
      const unseen = new Set(rest);
      for (const u of slice) {
        const s = seen.get(u);
        const on = !unseen.has(u) || (s !== undefined && s.ageMs < deps.graceMs);
        out.set(u, { user_id: u, status: on ? 'online' : 'offline', last_seen_at: on ? null : (s?.lastSeenAt ?? null) });
      }
    }
    return out;
  }

  async function recheck(): Promise<void> {
    if (rechecking || stopped || watches.size === 0) return;
    rechecking = (async () => {
      const users = [...watches.keys()];
      const versions = new Map(users.map((u) => [u, watches.get(u)!.version]));
      try {
        for (const [u, s] of await read(users)) {
          const w = watches.get(u);
          // A notice that arrived during the read is newer than it.
          if (w && w.version === versions.get(u)) apply(u, w, s.status, s.last_seen_at);
        }
      } catch (err) {
        metrics.presenceNotices.inc({ result: 'failed' });
        log.debug({ err }, 'presence recheck failed; next one in recheckMs');
      }
    })().finally(() => (rechecking = null));
    await rechecking;
  }

  async function offlineAfterGrace(userId: string, lastSeen: Promise<string | null>): Promise<void> {
    grace.delete(userId);
    try {
      if ((await feed.online([userId])).has(userId)) return;
      // Reconnected here while the lookup ran.
      if ((connsHere.get(userId) ?? 0) > 0) return;
      // The user's last connection may have closed later on another node (both times are the
      // database's): that node's grace period ends later, and it decides then.
      const mine = await lastSeen;
      const stored = (await store.lastSeen([userId])).get(userId)?.lastSeenAt ?? null;
      if (mine !== null && stored !== null && Date.parse(stored) > Date.parse(mine)) return;
      publish({ user_id: userId, status: 'offline', last_seen_at: stored ?? mine });
    } catch (err) {
      metrics.presenceNotices.inc({ result: 'failed' });
      log.debug({ err, user_id: userId }, 'presence not decided after the grace period; watchers repair it at their recheck');
    }
  }

  function unwatch(conn: PresenceWatcher, userId: string): void {
    const w = watches.get(userId);
    if (!w?.watchers.delete(conn) || w.watchers.size > 0) return;
    watches.delete(userId);
    feed.unwatch(userId).catch((err) => log.debug({ err, user_id: userId }, 'presence channel not unsubscribed'));
  }

  function gauge(): void {
    metrics.presenceChannels.set(watches.size);
  }

  return {
    connected(conn) {
      if (stopped) return;
      announced.add(conn);
      const n = (connsHere.get(conn.userId) ?? 0) + 1;
      connsHere.set(conn.userId, n);
      const t = grace.get(conn.userId);
      if (t) {
        clearTimeout(t);
        grace.delete(conn.userId);
      }
      // Watchers that already think the user online write nothing: publishing again is harmless.
      if (n === 1) publish({ user_id: conn.userId, status: 'online', last_seen_at: null });
    },

    disconnected(conn) {
      const mine = byConn.get(conn);
      if (mine) {
        byConn.delete(conn);
        for (const u of mine) unwatch(conn, u);
        gauge();
      }
      if (!announced.delete(conn)) return;
      const n = (connsHere.get(conn.userId) ?? 1) - 1;
      if (n > 0) {
        connsHere.set(conn.userId, n);
        return;
      }
      connsHere.delete(conn.userId);
      const userId = conn.userId;
      const lastSeen = store.recordLastSeen(userId).catch((err) => {
        log.debug({ err, user_id: userId }, 'last_seen_at not recorded');
        return null;
      });
      if (stopped) return;
      const t = setTimeout(() => void offlineAfterGrace(userId, lastSeen), deps.graceMs);
      t.unref();
      grace.set(userId, t);
    },

    async subscribe(conn, userIds) {
      let mine = byConn.get(conn);
      const fresh = userIds.filter((u) => !mine?.has(u));
      if ((mine?.size ?? 0) + fresh.length > deps.maxWatchedPerConnection)
        throw new AppError(
          'invalid_frame',
          `a connection watches at most ${deps.maxWatchedPerConnection} users (${mine?.size ?? 0} now); unsubscribe some first`,
          { reason: 'watch_limit' },
        );
      const allowed = fresh.length > 0 ? await store.sharedWith(conn.userId, fresh) : new Set<string>();
      // Closed during the lookup: its disconnected() has run and would not undo what follows.
      if (conn.closed) return;
      mine = byConn.get(conn);
      const refused = fresh.filter((u) => !allowed.has(u));
      const serve = userIds.filter((u) => allowed.has(u) || mine?.has(u));
      if (serve.length > 0) {
        if (!mine) byConn.set(conn, (mine = new Set()));
        // Watch first, then read: a change after the read arrives as a notice.
        const added: string[] = [];
        const subscribing: Array<Promise<void>> = [];
        for (const u of serve) {
          if (mine.has(u)) continue;
          mine.add(u);
          added.push(u);
          let w = watches.get(u);
          if (!w) {
            watches.set(u, (w = { status: null, lastSeenAt: null, watchers: new Set(), version: 0 }));
            subscribing.push(feed.watch(u));
          }
          w.watchers.add(conn);
        }
        gauge();
        const versions = new Map(serve.map((u) => [u, watches.get(u)!.version]));
        let now: Map<string, PresenceSummary>;
        try {
          await Promise.all(subscribing);
          now = await read(serve);
        } catch (err) {
          for (const u of added) {
            mine.delete(u);
            unwatch(conn, u);
          }
          gauge();
          log.debug({ err }, 'presence_subscribe failed');
          throw new AppError('unavailable', 'presence is not available right now; subscribe again', { retryAfterS: 1 });
        }
        for (const u of serve) {
          const w = watches.get(u);
          if (!w) continue;
          const s = now.get(u)!;
          // A notice during the read is newer than the read: the frame says what the node now holds.
          if (w.version === versions.get(u)) apply(u, w, s.status, s.last_seen_at, conn);
          conn.sendFrame(frameOf(u, w.status ?? s.status, w.lastSeenAt));
          metrics.presenceFrames.inc();
        }
      }
      if (refused.length > 0)
        throw new AppError('forbidden', 'presence only of users who share a conversation with you', { userIds: refused });
    },

    async unsubscribe(conn, userIds) {
      const mine = byConn.get(conn);
      if (!mine) return;
      for (const u of userIds) if (mine.delete(u)) unwatch(conn, u);
      if (mine.size === 0) byConn.delete(conn);
      gauge();
    },

    async status(caller, userId) {
      if (!(await store.sharedWith(caller, [userId])).has(userId))
        throw new AppError('forbidden', 'presence only of users who share a conversation with you');
      try {
        return (await read([userId])).get(userId)!;
      } catch (err) {
        if (err instanceof AppError) throw err;
        throw new AppError('unavailable', 'presence is not available right now', { retryAfterS: 1, cause: err });
      }
    },

    async stop() {
      stopped = true;
      clearInterval(timer);
      // A user whose grace period runs here is decided by the nodes watching it (their recheck).
      for (const t of grace.values()) clearTimeout(t);
      grace.clear();
      await rechecking;
      await feed.close();
    },
  };
}
