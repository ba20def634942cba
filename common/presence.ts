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
 * room), SET rc:nr:<node> (its rooms, for cleanup) and STRING rc:m:<node> (set by resync: the node's
 * entries are all there). Keys expire after a day without use.
 *
 * Redis may lose what a node wrote without the node seeing an error (finding 8 in docs/chaos.md):
 * a failover to a replica that lacked the latest writes, a primary that restarted empty, keys that
 * expired. heartbeat() says so (false), and the node re-asserts everything with resync().
 */
import { type ChainableCommander, Redis, type RedisOptions } from 'ioredis';
import type { Config } from './config.js';
import { deadlineAfterReads } from './redis-timeouts.js';

export interface PresenceRegistry {
  /**
   * Renews the node's liveness. Resolves false when the registry may have lost entries of this node
   * since its last resync() (none yet, its marker is gone, or, for Redis, a new connection: possibly
   * to a promoted replica that lacked the latest writes, or to a server that restarted empty): the
   * caller then re-asserts them with resync().
   */
  heartbeat(nodeId: string, ttlMs: number): Promise<boolean>;
  addConnection(nodeId: string, userId: string): Promise<void>;
  removeConnection(nodeId: string, userId: string): Promise<void>;
  /** Re-asserts every user (and large-room interest) of a node (after the registry was unreachable or lost entries). */
  resync(nodeId: string, users: ReadonlyMap<string, number>, rooms?: Iterable<string>): Promise<void>;
  /**
   * Sets these users' connection counts on the node (0: none), for changes made while a resync()
   * ran; unlike resync() it does not claim the node's entries are complete (a reconnection to
   * another server in between must still make heartbeat() say false).
   */
  setConnections(nodeId: string, users: ReadonlyMap<string, number>): Promise<void>;
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
/**
 * A resync's marker lives an hour: when it expires the node re-asserts everything, which also
 * renews every key of its users and rooms (they expire a day after their last write, and a
 * connection can outlive that).
 */
const MARKER_S = 3600;

/** Redis's clock in ms, in a script (TIME is allowed in scripts that write since Redis 5: effects are replicated). */
const REDIS_NOW_MS = "local t = redis.call('TIME'); local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)";
const SCRIPTS = {
  /** KEYS[1] = rc:nodes, KEYS[2] = rc:m:<node>; ARGV = node, ttl ms. Returns 1 while the node's resync marker is there. */
  rcHeartbeat: {
    numberOfKeys: 2,
    lua: `${REDIS_NOW_MS}; redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1]); return redis.call('EXISTS', KEYS[2])`,
  },
  /**
   * KEYS[1] = rc:u:<user>, KEYS[2] = rc:n:<node>; ARGV = node, user. One connection fewer, and the
   * entry gone at zero, atomically: as two round trips, another connection of the user opened
   * between them (its +1) was wiped by the delete.
   */
  rcRemoveConnection: {
    numberOfKeys: 2,
    lua: `local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -1); if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]); redis.call('SREM', KEYS[2], ARGV[2]) end; return n`,
  },
  /**
   * KEYS[1] = rc:u:<user>, KEYS[2] = rc:n:<node>; ARGV = node, user, expiry s. One connection more.
   * A script, not MULTI: ioredis spends ~3x the CPU on a MULTI of four commands (a pipeline, six
   * commands and their replies) as on one script call (perf/presence-cost.ts), and every hello
   * writes this.
   */
  rcAddConnection: {
    numberOfKeys: 2,
    lua: `redis.call('HINCRBY', KEYS[1], ARGV[1], 1); redis.call('EXPIRE', KEYS[1], ARGV[3]); redis.call('SADD', KEYS[2], ARGV[2]); redis.call('EXPIRE', KEYS[2], ARGV[3]); return 1`,
  },
  /** Nodes whose heartbeat expires after now. */
  rcLiveNodes: { numberOfKeys: 1, lua: `${REDIS_NOW_MS}; return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')` },
  /** Nodes whose heartbeat expired at least ARGV[1] ms ago. */
  rcDeadNodes: { numberOfKeys: 1, lua: `${REDIS_NOW_MS}; return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))` },
} as const;

type PresenceScripts = {
  rcHeartbeat(nodesKey: string, markerKey: string, nodeId: string, ttlMs: number): Promise<number>;
  rcAddConnection(userKey: string, nodeUsersKey: string, nodeId: string, userId: string, expireS: number): Promise<number>;
  rcRemoveConnection(userKey: string, nodeUsersKey: string, nodeId: string, userId: string): Promise<number>;
  rcLiveNodes(key: string): Promise<string[]>;
  rcDeadNodes(key: string, olderThanMs: number): Promise<string[]>;
};

export class InMemoryPresence implements PresenceRegistry {
  private readonly nodes = new Map<string, number>();
  private readonly users = new Map<string, Map<string, number>>();
  private readonly rooms = new Map<string, Set<string>>();
  /** Nodes whose entries were re-asserted by resync() and not removed since. */
  private readonly synced = new Set<string>();
  constructor(private readonly now: () => number = Date.now) {}

  async heartbeat(nodeId: string, ttlMs: number) {
    this.nodes.set(nodeId, this.now() + ttlMs);
    return this.synced.has(nodeId);
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
    await this.setConnections(nodeId, users);
    this.synced.add(nodeId);
  }
  async setConnections(nodeId: string, users: ReadonlyMap<string, number>) {
    for (const [u, n] of users) {
      let m = this.users.get(u);
      if (!m) this.users.set(u, (m = new Map()));
      if (n > 0) m.set(nodeId, n);
      else m.delete(nodeId);
      if (m.size === 0) this.users.delete(u);
    }
  }
  async removeNode(nodeId: string) {
    this.nodes.delete(nodeId);
    this.synced.delete(nodeId);
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
    this.synced.delete(nodeId);
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
  /** Redis addresses Sentinel hands out (`host:port`) to connect to elsewhere (REALCHAT_ADDRESS_MAP). */
  addressMap?: ReadonlyMap<string, { host: string; port: number }>;
  commandTimeoutMs: number;
  /** Live-node list is cached this long by locate(). */
  liveCacheMs?: number;
  /**
   * After the client reconnects (not its first connection), locate() and roomNodes() reject for
   * this long, so callers broadcast: the server may be a promoted replica or a restarted one whose
   * heartbeats expired or are gone until every node has heartbeated and re-synced there; until then
   * "no live node holds this user" is not an answer (finding 8 in docs/chaos.md). Default 0.
   */
  settleMs?: number;
}

export class RedisPresence implements PresenceRegistry {
  readonly redis: Redis;
  private liveCache: { at: number; nodes: Set<string> } | null = null;
  private closed = false;
  private restartTimer: NodeJS.Timeout | null = null;
  /** Bumped on every (re)connection: a new connection may be to another server than the last one. */
  private connection = 0;
  /** node -> the connection its last resync() went over. */
  private readonly synced = new Map<string, number>();
  /** When the client last reconnected (monotonic ms), for settleMs. */
  private reconnectedAt: number | null = null;

  constructor(private readonly opts: RedisPresenceOptions) {
    const base: RedisOptions = {
      // No commandTimeout: deadlineAfterReads sets each command's, one a blocked event loop cannot fake.
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
          // ioredis applies it to the primary, the replicas and the sentinels the others name.
          ...(opts.addressMap && opts.addressMap.size > 0 ? { natMap: Object.fromEntries(opts.addressMap) } : {}),
        })
      : new Redis(opts.url ?? 'redis://127.0.0.1:6379', base);
    deadlineAfterReads(this.redis, opts.commandTimeoutMs);
    this.redis.on('error', () => {
      /* surfaced per command; the client reconnects by itself */
    });
    this.redis.on('ready', () => {
      this.connection++;
      this.liveCache = null;
      if (this.connection > 1) this.reconnectedAt = performance.now();
    });
    // ioredis gives up for good in one case: a failover notice (+switch-master) that arrives while
    // it is asking a sentinel for the primary ends the connection attempt with "Connection is
    // closed." and status "end", and it never reconnects (finding 8 in docs/chaos.md: a gateway's
    // heartbeat stopped for good and its users were routed to no node). Start it again.
    this.redis.on('end', () => {
      if (this.closed || this.restartTimer) return;
      this.restartTimer = setTimeout(() => {
        this.restartTimer = null;
        if (!this.closed && this.redis.status === 'end') this.redis.connect().catch(() => {});
      }, 500);
      this.restartTimer.unref();
    });
    for (const [name, def] of Object.entries(SCRIPTS)) this.redis.defineCommand(name, def);
  }

  /** A second connection with the same settings and deadlines, for subscriptions (a subscribed connection can run nothing else). */
  subscriberConnection(): Redis {
    const sub = this.redis.duplicate({ autoResubscribe: false });
    deadlineAfterReads(sub, this.opts.commandTimeoutMs);
    return sub;
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
    const connection = this.connection;
    const marked = await this.scripts.rcHeartbeat('rc:nodes', `rc:m:${nodeId}`, nodeId, ttlMs);
    return marked === 1 && this.synced.get(nodeId) === connection && this.connection === connection;
  }
  async addConnection(nodeId: string, userId: string) {
    await this.scripts.rcAddConnection(`rc:u:${userId}`, `rc:n:${nodeId}`, nodeId, userId, DAY_S);
  }
  async removeConnection(nodeId: string, userId: string) {
    await this.scripts.rcRemoveConnection(`rc:u:${userId}`, `rc:n:${nodeId}`, nodeId, userId);
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
    const connection = this.connection;
    let pipe = this.redis.pipeline();
    for (const r of rooms) pipe.sadd(`rc:r:${r}`, nodeId).expire(`rc:r:${r}`, DAY_S).sadd(`rc:nr:${nodeId}`, r);
    pipe = await this.writeConnections(pipe, nodeId, users);
    // The marker last: it says every entry before it is there.
    pipe.expire(`rc:n:${nodeId}`, DAY_S).expire(`rc:nr:${nodeId}`, DAY_S).set(`rc:m:${nodeId}`, '1', 'EX', MARKER_S);
    await execAll(pipe);
    this.synced.set(nodeId, connection);
  }
  async setConnections(nodeId: string, users: ReadonlyMap<string, number>) {
    await execAll(await this.writeConnections(this.redis.pipeline(), nodeId, users));
  }
  /** Adds the users' counts to `pipe`, sending it every 1,000 users; returns the pipeline left to send. */
  private async writeConnections(pipe: ChainableCommander, nodeId: string, users: ReadonlyMap<string, number>) {
    let n = 0;
    for (const [u, count] of users) {
      if (count > 0) pipe.hset(`rc:u:${u}`, nodeId, count).expire(`rc:u:${u}`, DAY_S).sadd(`rc:n:${nodeId}`, u);
      else pipe.hdel(`rc:u:${u}`, nodeId).srem(`rc:n:${nodeId}`, u);
      if (++n % 1000 === 0) {
        await execAll(pipe);
        pipe = this.redis.pipeline();
      }
    }
    return pipe;
  }
  async removeNode(nodeId: string) {
    this.synced.delete(nodeId);
    await this.redis.del(`rc:m:${nodeId}`);
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
    const settle = this.opts.settleMs ?? 0;
    if (this.reconnectedAt !== null && now - this.reconnectedAt < settle) {
      throw new Error(`presence registry reconnected ${Math.round(now - this.reconnectedAt)} ms ago: nodes may not have re-registered yet`);
    }
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
    this.closed = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.redis.disconnect();
  }
}

/** A pipeline's exec() resolves with per-command errors: reject on the first one instead. */
async function execAll(pipe: ChainableCommander): Promise<void> {
  for (const [err] of (await pipe.exec()) ?? []) if (err) throw err;
}

export function presenceFromConfig(config: Config): RedisPresence | null {
  if (!config.redis) return null;
  return new RedisPresence({
    url: config.redis.url ?? undefined,
    sentinels: config.redis.sentinels ?? undefined,
    sentinelName: config.redis.sentinelName,
    addressMap: config.addressMap,
    commandTimeoutMs: config.redis.commandTimeoutMs,
    liveCacheMs: config.presence.liveCacheMs,
    // Every live node heartbeats (and so re-syncs if needed) several times within one TTL.
    settleMs: config.presence.ttlMs,
  });
}
