/**
 * Conversation -> member set, loaded from the database and kept current by the members_added events
 * that flow through the same ordered stream. Bounded (LRU); concurrent loads of one conversation share
 * one query. Members are never removed in v1, so a cached set can only be missing members that an
 * event not yet processed will add. Shared by gateway nodes (typing, broadcast deliveries) and
 * delivery workers (routing).
 */
import { mapDbError, type Sql } from './db.js';
import { LruMap } from './lru.js';
import { withTimeout } from './timeout.js';

export interface MembershipSource {
  membersOf(conversationId: string): Promise<string[]>;
}

export function createMembershipSource(sql: Sql, timeoutMs: number): MembershipSource {
  return {
    async membersOf(conversationId) {
      try {
        const rows = await withTimeout(
          sql<{ user_id: string }[]>`SELECT user_id FROM members WHERE conversation_id = ${conversationId}`,
          timeoutMs,
          'membersOf',
        );
        return rows.map((r) => r.user_id);
      } catch (err) {
        throw mapDbError(err);
      }
    },
  };
}

export class MembershipCache {
  private readonly sets: LruMap<string, Set<string>>;
  private readonly loading = new Map<string, Promise<Set<string>>>();

  constructor(
    private readonly source: MembershipSource,
    maxEntries: number,
  ) {
    this.sets = new LruMap(maxEntries);
  }

  async members(conversationId: string): Promise<ReadonlySet<string>> {
    const hit = this.sets.get(conversationId);
    if (hit) return hit;
    let p = this.loading.get(conversationId);
    if (!p) {
      p = this.source.membersOf(conversationId).then((list) => new Set(list));
      this.loading.set(conversationId, p);
      const load = p;
      load.then(
        (set) => {
          // add() may have superseded this load (it read before the insert committed): then drop it.
          if (this.loading.get(conversationId) !== load) return;
          this.loading.delete(conversationId);
          this.sets.set(conversationId, set);
        },
        () => {
          if (this.loading.get(conversationId) === load) this.loading.delete(conversationId);
        },
      );
    }
    return p;
  }

  /**
   * Membership of one user, re-reading the conversation once when the cached set lacks the user
   * (this node may not have seen the members_added event: it is only routed to the added users' nodes).
   */
  async isMember(conversationId: string, userId: string): Promise<ReadonlySet<string>> {
    const set = await this.members(conversationId);
    if (set.has(userId)) return set;
    this.sets.delete(conversationId);
    return this.members(conversationId);
  }

  /** Applies a members_added event to a cached set (an uncached one loads fresh later). */
  add(conversationId: string, userIds: readonly string[]): void {
    const set = this.sets.peek(conversationId);
    if (set) for (const u of userIds) set.add(u);
    // A load in flight may have read before the insert committed; drop it so the next read reloads.
    if (this.loading.has(conversationId)) this.loading.delete(conversationId);
  }

  get size(): number {
    return this.sets.size;
  }
}
