/**
 * Presence for clients, the transport seam: who is online cluster-wide, and change notices that
 * reach only the nodes watching a user. Two implementations with one contract:
 * - local (embedded default, single node): online = this node's connection registry; notices are
 *   handed to this node's own watcher;
 * - Redis (a cluster): online = the presence registry (common/presence.ts, live nodes only);
 *   notices travel on one pub/sub channel per user (`rc:p:<user>`) that a node SUBSCRIBEs only while
 *   one of its connections watches that user, so a change costs one PUBLISH and reaches only the
 *   watching nodes, never every node.
 * Contract: notices are best effort (pub/sub is fire-and-forget: a node disconnected from Redis
 * misses them); `reconnected` says when some may have been missed, and the watcher then re-reads
 * every watched user's status. Every call rejects (never hangs) when Redis is unreachable.
 */
import type { Redis } from 'ioredis';
import { isPlainObject, isUuid } from '../common/validate.js';
import type { PresenceRegistry } from '../common/presence.js';
import type { Logger } from '../common/log.js';

export interface PresenceNotice {
  user_id: string;
  status: 'online' | 'offline';
  /** When the user's last connection closed (offline), null when online or never seen. */
  last_seen_at: string | null;
}

export interface PresenceFeedHandlers {
  notice(n: PresenceNotice): void;
  /** The transport reconnected (and re-subscribed): notices may have been lost meanwhile. */
  reconnected(): void;
  /** A notice that did not decode (dropped; counted). */
  invalid(): void;
}

export interface PresenceFeed {
  /** Those of `userIds` with a connection on some live node. */
  online(userIds: readonly string[]): Promise<Set<string>>;
  /** Tells the nodes watching the user (only them). */
  publish(n: PresenceNotice): Promise<void>;
  /** This node starts / stops receiving the user's notices. */
  watch(userId: string): Promise<void>;
  unwatch(userId: string): Promise<void>;
  start(handlers: PresenceFeedHandlers): void;
  close(): Promise<void>;
}

/** Validates a notice that came over the wire (another node's, through Redis). */
export function decodeNotice(text: string): PresenceNotice | null {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return null;
  }
  return noticeFrom(v);
}

/** Validates a parsed notice (another node's, or another region's: gateway/region-presence.ts). */
export function noticeFrom(v: unknown): PresenceNotice | null {
  if (!isPlainObject(v) || !isUuid(v.user_id) || (v.status !== 'online' && v.status !== 'offline')) return null;
  const seen = v.last_seen_at;
  if (seen !== null && (typeof seen !== 'string' || Number.isNaN(Date.parse(seen)))) return null;
  return { user_id: v.user_id.toLowerCase(), status: v.status, last_seen_at: seen };
}

/** One node: the connection registry is the whole truth, notices go straight to this node's watcher. */
export function createLocalPresenceFeed(countOf: (userId: string) => number): PresenceFeed {
  const watched = new Set<string>();
  let handlers: PresenceFeedHandlers | null = null;
  return {
    async online(userIds) {
      return new Set(userIds.filter((u) => countOf(u) > 0));
    },
    async publish(n) {
      // Asynchronous like a real transport: the publisher never runs watchers' code in its own frame.
      if (watched.has(n.user_id)) queueMicrotask(() => handlers?.notice(n));
    },
    async watch(userId) {
      watched.add(userId);
    },
    async unwatch(userId) {
      watched.delete(userId);
    },
    start(h) {
      handlers = h;
    },
    async close() {
      handlers = null;
    },
  };
}

export const presenceChannel = (userId: string) => `rc:p:${userId}`;
const CHANNEL_PREFIX = 'rc:p:';
/** Channels per SUBSCRIBE command when re-subscribing after a reconnect. */
const RESUBSCRIBE_BATCH = 500;

/**
 * A cluster: the registry answers who is online; `pub` is any client (the registry's own), `sub` a
 * dedicated connection (a subscribed connection can run nothing else), which this feed owns.
 */
export function createRedisPresenceFeed(deps: { registry: PresenceRegistry; pub: Redis; sub: Redis; log: Logger }): PresenceFeed {
  const { registry, pub, sub, log } = deps;
  const watched = new Set<string>();
  let handlers: PresenceFeedHandlers | null = null;
  let closed = false;
  let readies = 0;
  let restartTimer: NodeJS.Timeout | null = null;

  /** Subscriptions are ours to restore (autoResubscribe is off): a reconnect may be to a promoted replica. */
  async function resubscribeAll(): Promise<void> {
    const all = [...watched].map(presenceChannel);
    for (let i = 0; i < all.length; i += RESUBSCRIBE_BATCH) await sub.subscribe(...all.slice(i, i + RESUBSCRIBE_BATCH));
  }

  sub.on('error', () => {
    /* surfaced per command; the client reconnects by itself */
  });
  sub.on('ready', () => {
    const again = ++readies > 1;
    resubscribeAll().then(
      () => {
        if (again) {
          log.info({ channels: watched.size }, 'presence channels re-subscribed after a Redis reconnect');
          handlers?.reconnected();
        }
      },
      (err) => log.warn({ err }, 'presence channels not re-subscribed; retried on the next reconnect'),
    );
  });
  // As in common/presence.ts: ioredis gives up for good after a failover notice during its sentinel lookup.
  sub.on('end', () => {
    if (closed || restartTimer) return;
    restartTimer = setTimeout(() => {
      restartTimer = null;
      if (!closed && sub.status === 'end') sub.connect().catch(() => {});
    }, 500);
    restartTimer.unref();
  });
  sub.on('message', (channel: string, text: string) => {
    if (!channel.startsWith(CHANNEL_PREFIX)) return;
    const n = decodeNotice(text);
    if (!n || presenceChannel(n.user_id) !== channel) {
      log.debug({ channel }, 'undecodable presence notice dropped');
      handlers?.invalid();
      return;
    }
    if (watched.has(n.user_id)) handlers?.notice(n);
  });

  return {
    async online(userIds) {
      const out = new Set<string>();
      for (const users of (await registry.locate(userIds)).values()) for (const u of users) out.add(u);
      return out;
    },
    async publish(n) {
      await pub.publish(presenceChannel(n.user_id), JSON.stringify(n));
    },
    async watch(userId) {
      if (watched.has(userId)) return;
      watched.add(userId);
      // Not connected: kept in `watched`, subscribed by resubscribeAll on the next ready.
      if (sub.status === 'ready') await sub.subscribe(presenceChannel(userId));
    },
    async unwatch(userId) {
      if (!watched.delete(userId)) return;
      if (sub.status === 'ready') await sub.unsubscribe(presenceChannel(userId));
    },
    start(h) {
      handlers = h;
    },
    async close() {
      closed = true;
      handlers = null;
      if (restartTimer) clearTimeout(restartTimer);
      sub.disconnect();
    },
  };
}
