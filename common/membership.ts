/**
 * Who a conversation's deliveries go to, loaded from the database and kept current by the
 * members_added events that flow through the same ordered stream: its member list, or for a large
 * room (past REALCHAT_LARGE_ROOM_MEMBERS) just that: large rooms are delivered by room interest
 * (the nodes and connections that subscribed), never by member list. Bounded (LRU); concurrent
 * loads of one conversation share one query. Kept current by members_added and members_removed
 * in stream order by whoever sees them: a delivery worker sees every event of its partitions (and
 * forgets everything when its partitions move); a gateway node only those routed to it, so its
 * list can be stale, and connections, which learn their own removal in order, are the last gate
 * (gateway/connection.ts). Shared by gateway nodes (typing, broadcast deliveries) and delivery
 * workers (routing).
 */
import { timedQuery, type Sql } from './db.js';
import { LruMap } from './lru.js';

/**
 * `seq`: the conversation's last sequence the membership reflects (read with it, then moved by the
 * membership entries applied): a membership event at or below it is already in (a replay, a
 * redelivery) and must not change it again: a re-delivered old members_added would otherwise put a
 * removed member back.
 */
export type Audience = ({ readonly large: false; readonly members: ReadonlySet<string> } | { readonly large: true }) & { seq: number };

export interface MembershipSource {
  /**
   * A large room's members are not read (there may be a million). `seq`: the conversation's last
   * sequence in the same read (-1: no such conversation; absent: unknown, every event applies).
   */
  audienceOf(conversationId: string): Promise<{ large: boolean; members: string[]; seq?: number }>;
  /** Which of these users are members now (read from the database, never cached). */
  membersNow?(conversationId: string, userIds: readonly string[]): Promise<string[]>;
  /** audienceOf for several conversations in one read (absent: one audienceOf each). */
  audiencesOf?(conversationIds: readonly string[]): Promise<Map<string, { large: boolean; members: string[]; seq?: number }>>;
}

/** Conversations per batched membership read (the statement's array parameter stays small). */
const MAX_BATCH_READ = 500;

export function createMembershipSource(sql: Sql, timeoutMs: number): MembershipSource {
  async function audiencesOf(conversationIds: readonly string[]) {
    const rows = await timedQuery(
      sql<{ id: string; large: boolean; members: string[]; seq: number }[]>`
        SELECT c.id, c.large, c.last_seq AS seq,
               CASE WHEN c.large THEN '{}'::uuid[] ELSE ARRAY(SELECT m.user_id FROM members m WHERE m.conversation_id = c.id) END AS members
        FROM conversations c WHERE c.id = ANY(${conversationIds as string[]}::uuid[])`,
      timeoutMs,
      'audiencesOf',
    );
    // Keyed by the ids asked for: the database answers a uuid in its own (lower-case) spelling.
    const read = new Map(rows.map((r) => [r.id, { large: r.large, members: r.members, seq: r.seq }]));
    return new Map(conversationIds.map((id) => [id, read.get(id.toLowerCase()) ?? { large: false, members: [], seq: -1 }]));
  }
  return {
    audiencesOf,
    audienceOf: async (conversationId) => (await audiencesOf([conversationId])).get(conversationId)!,
    async membersNow(conversationId, userIds) {
      if (userIds.length === 0) return [];
      const rows = await timedQuery(
        sql<{ user_id: string }[]>`
          SELECT user_id FROM members WHERE conversation_id = ${conversationId} AND user_id = ANY(${userIds as string[]}::uuid[])`,
        timeoutMs,
        'membersNow',
      );
      return rows.map((r) => r.user_id);
    },
  };
}

export class MembershipCache {
  private readonly entries: LruMap<string, Audience>;
  private readonly loading = new Map<string, Promise<Audience>>();

  constructor(
    private readonly source: MembershipSource,
    maxEntries: number,
  ) {
    this.entries = new LruMap(maxEntries);
  }

  async audience(conversationId: string): Promise<Audience> {
    const hit = this.entries.get(conversationId);
    if (hit) return hit;
    return this.loading.get(conversationId) ?? this.track(conversationId, this.source.audienceOf(conversationId).then(toAudience));
  }

  /**
   * audience() for several conversations, the ones neither cached nor loading read together (one
   * query per MAX_BATCH_READ instead of one per conversation: a worker that just took over
   * partitions, or the single embedded connection, would otherwise queue a read per conversation).
   */
  async audiences(conversationIds: Iterable<string>): Promise<Map<string, Audience>> {
    const pending = new Map<string, Promise<Audience>>();
    const missing: string[] = [];
    for (const id of new Set(conversationIds)) {
      const hit = this.entries.get(id);
      const p = hit ? Promise.resolve(hit) : this.loading.get(id);
      if (p) pending.set(id, p);
      else missing.push(id);
    }
    const readMany = this.source.audiencesOf?.bind(this.source);
    for (let i = 0; i < missing.length; i += MAX_BATCH_READ) {
      const chunk = missing.slice(i, i + MAX_BATCH_READ);
      if (!readMany || chunk.length === 1) {
        for (const id of chunk) pending.set(id, this.audience(id));
        continue;
      }
      const read = readMany(chunk);
      for (const id of chunk)
        pending.set(
          id,
          this.track(
            id,
            read.then((m) => toAudience(m.get(id)!)),
          ),
        );
    }
    const resolved = new Map<string, Audience>();
    for (const [id, p] of pending) resolved.set(id, await p);
    return resolved;
  }

  /** Registers a load in flight; it fills the cache unless add() or remove() superseded it meanwhile. */
  private track(conversationId: string, load: Promise<Audience>): Promise<Audience> {
    this.loading.set(conversationId, load);
    load.then(
      (a) => {
        // add() may have superseded this load (it read before the insert committed): then drop it.
        if (this.loading.get(conversationId) !== load) return;
        this.loading.delete(conversationId);
        this.entries.set(conversationId, a);
      },
      () => {
        if (this.loading.get(conversationId) === load) this.loading.delete(conversationId);
      },
    );
    return load;
  }

  /**
   * Which of these users are members now, from the database (the cached list may be stale): for
   * subscribing users, which must never follow a replayed or redelivered old addition.
   */
  async membersNow(conversationId: string, userIds: readonly string[]): Promise<string[]> {
    if (this.source.membersNow) return this.source.membersNow(conversationId, userIds);
    const a = await this.source.audienceOf(conversationId);
    return a.large ? [...userIds] : userIds.filter((u) => a.members.includes(u));
  }

  /** The member list of a small room (empty for a large one: address those by room instead). */
  async members(conversationId: string): Promise<ReadonlySet<string>> {
    const a = await this.audience(conversationId);
    return a.large ? EMPTY : a.members;
  }

  /**
   * Membership of one user in a small room, re-reading the conversation once when the cached list
   * lacks the user (this node may not have seen the members_added event: it is only routed to the
   * added users' nodes). Null for a large room: ask the database.
   */
  async isMember(conversationId: string, userId: string): Promise<ReadonlySet<string> | null> {
    const a = await this.audience(conversationId);
    if (a.large) return null;
    if (a.members.has(userId)) return a.members;
    this.entries.delete(conversationId);
    const again = await this.audience(conversationId);
    return again.large ? null : again.members;
  }

  /**
   * Applies a members_removed event (its entry's sequence). A load in flight may have read before
   * the delete committed: it is dropped, so the next read reloads.
   */
  remove(conversationId: string, userIds: readonly string[], seq: number): void {
    const a = this.entries.peek(conversationId);
    if (a && !a.large && seq > a.seq) {
      for (const u of userIds) (a.members as Set<string>).delete(u);
      a.seq = seq;
    }
    if (this.loading.has(conversationId)) this.loading.delete(conversationId);
  }

  /** Forgets every entry (a worker that lost and regained a partition may have missed its removals). */
  clear(): void {
    this.entries.clear();
    this.loading.clear();
  }

  /**
   * Applies a members_added event to a cached entry (an uncached one loads fresh later). `seq`: its
   * entry's sequence, or the creation's 0.
   */
  add(conversationId: string, userIds: readonly string[], large: boolean, seq: number): void {
    const a = this.entries.peek(conversationId);
    if (a && seq <= a.seq) {
      // Already reflected (a replay or a redelivery).
    } else if (large) this.entries.set(conversationId, { large: true, seq });
    else if (a && !a.large) {
      for (const u of userIds) (a.members as Set<string>).add(u);
      a.seq = seq;
    }
    // A load in flight may have read before the insert committed; drop it so the next read reloads.
    if (this.loading.has(conversationId)) this.loading.delete(conversationId);
  }

  get size(): number {
    return this.entries.size;
  }
}

const EMPTY: ReadonlySet<string> = new Set();

function toAudience(a: { large: boolean; members: string[]; seq?: number }): Audience {
  const seq = a.seq ?? Number.NEGATIVE_INFINITY;
  return a.large ? { large: true, seq } : { large: false, members: new Set(a.members), seq };
}
