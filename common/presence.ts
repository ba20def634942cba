/**
 * The presence registry: which gateway nodes hold which users' connections, and which nodes are
 * alive. Contract (both implementations, one shared test suite):
 * - a node is live while its heartbeat is younger than its TTL; entries of dead nodes are ignored;
 * - a user may be on several nodes; counts go up per connection and down per close;
 * - every call rejects (never hangs) when the registry is unreachable, so callers can degrade.
 * Every liveness decision uses one clock, Redis's own (TIME, inside a script): a node whose clock is
 * skewed neither looks dead to the others (deliveries misrouted to the broadcast path, its topic
 * deleted by the janitor) nor sees live nodes as dead.
 * Redis layout: ZSET rc:nodes (node -> heartbeat expiry, ms on Redis's clock), HASH rc:u:<user> (node -> connections),
 * SET rc:n:<node> (users, for cleanup), SET rc:r:<conversation> (nodes with a subscriber of that large
 * room) and SET rc:nr:<node> (its rooms, for cleanup). Keys expire after a day without use.
 */
import { type ChainableCommander, Redis, type RedisOptions } from 'ioredis';
import type { Config } from './config.js';

export interface PresenceRegistry {
  heartbeat(nodeId: string, ttlMs: number): Promise<void>;
  addConnection(nodeId: string, userId: string): Promise<void>;
  removeConnection(nodeId: string, userId: string): Promise<void>;
  /** Re-asserts every user (and large-room interest) of a node (after the registry was unreachable). */
  resync(nodeId: string, users: ReadonlyMap<string, number>, rooms?: Iterable<string>): Promise<void>;
  /** Clean shutdown, or a restarted node clearing its previous life. */
  removeNode(nodeId: string): Promise<void>;
  liveNodes(): Promise<string[]>;
  /** Nodes that died at least `olderThanMs` ago (for topic cleanup). */
  deadNodes(olderThanMs: number): Promise<string[]>;
  forgetNode(nodeId: string): Promise<void>;
  /** live node -> those of `userIds` connected to it. */
  locate(userIds: Iterable<string>): Promise<Map<string, string[]>>;
  /** Large rooms: this node has (true) or no longer has (false) a subscriber of the room. */
  setRoomInterest(nodeId: string, conversationId: string, interested: boolean): Promise<void>;
  /** Live nodes with a subscriber of each room. */
  roomNodes(conversationIds: Iterable<string>): Promise<Map<string, string[]>>;
  close(): Promise<void>;
}

const DAY_S = 24 * 3600;

/** Redis's clock in ms, in a script (TIME is allowed in scripts that write since Redis 5: effects are replicated). */
const REDIS_NOW_MS = "local t = redis.call('TIME'); local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)";
const SCRIPTS = {
  /** KEYS[1] = rc:nodes; ARGV = node, ttl ms. */
  rcHeartbeat: { numberOfKeys: 1, lua: `${REDIS_NOW_MS}; redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1]); return now` },
  /** Nodes whose heartbeat expires after now. */
  rcLiveNodes: { numberOfKeys: 1, lua: `${REDIS_NOW_MS}; return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')` },
  /** Nodes whose heartbeat expired at least ARGV[1] ms ago. */
  rcDeadNodes: { numberOfKeys: 1, lua: `${REDIS_NOW_MS}; return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))` },
} as const;

type PresenceScripts = {
  rcHeartbeat(key: string, nodeId: string, ttlMs: number): Promise<number>;
  rcLiveNodes(key: string): Promise<string[]>;
  rcDeadNodes(key: string, olderThanMs: number): Promise<string[]>;
};

export class InMemoryPresence implements PresenceRegistry {
  private readonly nodes = new Map<string, number>();
  private readonly users = new Map<string, Map<string, number>>();
  private readonly rooms = new Map<string, Set<string>>();
  constructor(private readonly now: () => number = Date.now) {}

  async heartbeat(nodeId: string, ttlMs: number) {
    this.nodes.set(nodeId, this.now() + ttlMs);
  }
  async addConnection(nodeId: string, userId: string) {
    let m = this.users.get(userId);
    if (!m) this.users.set(userId, (m = new Map()));
    m.set(nodeId, (m.get(nodeId) ?? 0) + 1);
  }
  async removeConnection(nodeId: string, userId: string) {
    const m = this.users.get(userId);
    if (!m) return;
    const n = (m.get(nodeId) ?? 0) - 1;
    if (n > 0) m.set(nodeId, n);
    else m.delete(nodeId);
    if (m.size === 0) this.users.delete(userId);
  }
  async setRoomInterest(nodeId: string, conversationId: string, interested: boolean) {
    let nodes = this.rooms.get(conversationId);
    if (!nodes) this.rooms.set(conversationId, (nodes = new Set()));
    if (interested) nodes.add(nodeId);
    else nodes.delete(nodeId);
    if (nodes.size === 0) this.rooms.delete(conversationId);
  }
  async roomNodes(conversationIds: Iterable<string>) {
    const live = new Set(await this.liveNodes());
    const out = new Map<string, string[]>();
    for (const c of conversationIds)
      out.set(
        c,
        [...(this.rooms.get(c) ?? [])].filter((n) => live.has(n)),
      );
    return out;
  }
  async resync(nodeId: string, users: ReadonlyMap<string, number>, rooms: Iterable<string> = []) {
    for (const r of rooms) await this.setRoomInterest(nodeId, r, true);
    for (const [u, n] of users) {
      let m = this.users.get(u);
      if (!m) this.users.set(u, (m = new Map()));
      m.set(nodeId, n);
    }
  }
  async removeNode(nodeId: string) {
    this.nodes.delete(nodeId);
    for (const m of this.users.values()) m.delete(nodeId);
    for (const [c, nodes] of this.rooms) if (nodes.delete(nodeId) && nodes.size === 0) this.rooms.delete(c);
  }
  async liveNodes() {
    const t = this.now();
    return [...this.nodes].filter(([, exp]) => exp > t).map(([n]) => n);
  }
  async deadNodes(olderThanMs: number) {
    const t = this.now() - olderThanMs;
    return [...this.nodes].filter(([, exp]) => exp <= t).map(([n]) => n);
  }
  async forgetNode(nodeId: string) {
    this.nodes.delete(nodeId);
  }
  async locate(userIds: Iterable<string>) {
    const live = new Set(await this.liveNodes());
    const out = new Map<string, string[]>();
    for (const u of userIds) {
      for (const node of this.users.get(u)?.keys() ?? []) {
        if (!live.has(node)) continue;
        const list = out.get(node) ?? [];
        list.push(u);
        out.set(node, list);
      }
    }
    return out;
  }
  async close() {}
}

export interface RedisPresenceOptions {
  /** host:port of a plain Redis, or sentinels (host:port,...) with `sentinelName`. */
  url?: string;
  sentinels?: Array<{ host: string; port: number }>;
  sentinelName?: string;
  commandTimeoutMs: number;
  /** Live-node list is cached this long by locate(). */
  liveCacheMs?: number;
}

export class RedisPresence implements PresenceRegistry {
  readonly redis: Redis;
  private liveCache: { at: number; nodes: Set<string> } | null = null;

  constructor(private readonly opts: RedisPresenceOptions) {
    const base: RedisOptions = {
      commandTimeout: opts.commandTimeoutMs,
      connectTimeout: opts.commandTimeoutMs,
      // Fail fast while disconnected instead of queueing commands without bound.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      retryStrategy: (times) => Math.min(100 * 2 ** times, 2000),
      lazyConnect: false,
    };
    this.redis = opts.sentinels
      ? new Redis({
          ...base,
          sentinels: opts.sentinels,
          name: opts.sentinelName ?? 'realchat',
          sentinelRetryStrategy: (t) => Math.min(100 * 2 ** t, 2000),
          failoverDetector: true,
        })
      : new Redis(opts.url ?? 'redis://127.0.0.1:6379', base);
    this.redis.on('error', () => {
      /* surfaced per command; the client reconnects by itself */
    });
    for (const [name, def] of Object.entries(SCRIPTS)) this.redis.defineCommand(name, def);
  }

  private get scripts(): PresenceScripts {
    return this.redis as unknown as PresenceScripts;
  }

  /** Waits (bounded) for the first connection; false if Redis is not reachable yet (callers degrade). */
  ready(timeoutMs: number): Promise<boolean> {
    if (this.redis.status === 'ready') return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (ok: boolean) => {
        clearTimeout(timer);
        this.redis.off('ready', onReady);
        resolve(ok);
      };
      const onReady = () => done(true);
      const timer = setTimeout(() => done(false), timeoutMs);
      timer.unref();
      this.redis.on('ready', onReady);
    });
  }

  async heartbeat(nodeId: string, ttlMs: number) {
    await this.scripts.rcHeartbeat('rc:nodes', nodeId, ttlMs);
  }
  async addConnection(nodeId: string, userId: string) {
    await this.redis
      .multi()
      .hincrby(`rc:u:${userId}`, nodeId, 1)
      .expire(`rc:u:${userId}`, DAY_S)
      .sadd(`rc:n:${nodeId}`, userId)
      .expire(`rc:n:${nodeId}`, DAY_S)
      .exec();
  }
  async removeConnection(nodeId: string, userId: string) {
    const n = await this.redis.hincrby(`rc:u:${userId}`, nodeId, -1);
    if (n <= 0) {
      await this.redis.multi().hdel(`rc:u:${userId}`, nodeId).srem(`rc:n:${nodeId}`, userId).exec();
    }
  }
  async setRoomInterest(nodeId: string, conversationId: string, interested: boolean) {
    if (interested) {
      await this.redis
        .multi()
        .sadd(`rc:r:${conversationId}`, nodeId)
        .expire(`rc:r:${conversationId}`, DAY_S)
        .sadd(`rc:nr:${nodeId}`, conversationId)
        .expire(`rc:nr:${nodeId}`, DAY_S)
        .exec();
    } else {
      await this.redis.multi().srem(`rc:r:${conversationId}`, nodeId).srem(`rc:nr:${nodeId}`, conversationId).exec();
    }
  }
  async roomNodes(conversationIds: Iterable<string>) {
    const live = await this.live();
    const list = [...conversationIds];
    const out = new Map<string, string[]>();
    if (list.length === 0) return out;
    const pipe = this.redis.pipeline();
    for (const c of list) pipe.smembers(`rc:r:${c}`);
    const res = (await pipe.exec()) ?? [];
    res.forEach(([err, nodes], i) => {
      if (err) throw err;
      out.set(
        list[i]!,
        (nodes as string[]).filter((n) => live.has(n)),
      );
    });
    return out;
  }
  async resync(nodeId: string, users: ReadonlyMap<string, number>, rooms: Iterable<string> = []) {
    let pipe = this.redis.pipeline();
    let n = 0;
    for (const r of rooms) pipe.sadd(`rc:r:${r}`, nodeId).expire(`rc:r:${r}`, DAY_S).sadd(`rc:nr:${nodeId}`, r);
    for (const [u, count] of users) {
      pipe.hset(`rc:u:${u}`, nodeId, count).expire(`rc:u:${u}`, DAY_S).sadd(`rc:n:${nodeId}`, u);
      if (++n % 1000 === 0) {
        await pipe.exec();
        pipe = this.redis.pipeline();
      }
    }
    pipe.expire(`rc:n:${nodeId}`, DAY_S);
    await pipe.exec();
  }
  async removeNode(nodeId: string) {
    await this.drainSet(`rc:n:${nodeId}`, (pipe, u) => pipe.hdel(`rc:u:${u}`, nodeId));
    await this.drainSet(`rc:nr:${nodeId}`, (pipe, r) => pipe.srem(`rc:r:${r}`, nodeId));
    await this.redis.zrem('rc:nodes', nodeId);
  }
  /** Pops `key`'s members 1,000 at a time, one pipeline of `each` per batch, until it is empty. */
  private async drainSet(key: string, each: (pipe: ChainableCommander, member: string) => void) {
    for (;;) {
      const members = await this.redis.spop(key, 1000);
      if (members.length === 0) return;
      const pipe = this.redis.pipeline();
      for (const m of members) each(pipe, m);
      await pipe.exec();
    }
  }
  async liveNodes() {
    return this.scripts.rcLiveNodes('rc:nodes');
  }
  async deadNodes(olderThanMs: number) {
    return this.scripts.rcDeadNodes('rc:nodes', olderThanMs);
  }
  async forgetNode(nodeId: string) {
    await this.removeNode(nodeId);
  }
  /**
   * Live nodes, cached for liveCacheMs (lookups happen per batch; node liveness changes per second).
   * The cache's age is a local duration (monotonic), not a liveness decision.
   */
  private async live(): Promise<Set<string>> {
    const now = performance.now();
    if (!this.liveCache || now - this.liveCache.at > (this.opts.liveCacheMs ?? 1000)) {
      this.liveCache = { at: now, nodes: new Set(await this.liveNodes()) };
    }
    return this.liveCache.nodes;
  }
  async locate(userIds: Iterable<string>) {
    const live = await this.live();
    const list = [...userIds];
    const out = new Map<string, string[]>();
    for (let i = 0; i < list.length; i += 1000) {
      const slice = list.slice(i, i + 1000);
      const pipe = this.redis.pipeline();
      for (const u of slice) pipe.hgetall(`rc:u:${u}`);
      const res = (await pipe.exec()) ?? [];
      res.forEach(([err, value], k) => {
        if (err) throw err;
        for (const [node, count] of Object.entries(value as Record<string, string>)) {
          if (Number(count) <= 0 || !live.has(node)) continue;
          const l = out.get(node) ?? [];
          l.push(slice[k]!);
          out.set(node, l);
        }
      });
    }
    return out;
  }
  async close() {
    this.redis.disconnect();
  }
}

export function presenceFromConfig(config: Config): RedisPresence | null {
  if (!config.redis) return null;
  return new RedisPresence({
    url: config.redis.url ?? undefined,
    sentinels: config.redis.sentinels ?? undefined,
    sentinelName: config.redis.sentinelName,
    commandTimeoutMs: config.redis.commandTimeoutMs,
  });
}
