/**
 * Conversation -> member set, loaded from the database and kept current by the members_added events
 * that flow through the same ordered stream. Bounded (LRU); concurrent loads of one conversation share
 * one query. Members are never removed in v1, so a cached set can only be missing members that an
 * event not yet processed will add.
 */
export interface MembershipSource {
  membersOf(conversationId: string): Promise<string[]>;
}

export class MembershipCache {
  private readonly sets = new Map<string, Set<string>>();
  private readonly loading = new Map<string, Promise<Set<string>>>();

  constructor(
    private readonly source: MembershipSource,
    private readonly maxEntries: number,
  ) {}

  async members(conversationId: string): Promise<ReadonlySet<string>> {
    const hit = this.sets.get(conversationId);
    if (hit) {
      this.sets.delete(conversationId);
      this.sets.set(conversationId, hit);
      return hit;
    }
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
          this.store(conversationId, set);
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
    const set = this.sets.get(conversationId);
    if (set) for (const u of userIds) set.add(u);
    // A load in flight may have read before the insert committed; drop it so the next read reloads.
    if (this.loading.has(conversationId)) this.loading.delete(conversationId);
  }

  get size(): number {
    return this.sets.size;
  }

  private store(conversationId: string, set: Set<string>): void {
    if (this.maxEntries === 0) return;
    this.sets.delete(conversationId);
    this.sets.set(conversationId, set);
    while (this.sets.size > this.maxEntries) {
      const oldest = this.sets.keys().next().value;
      if (oldest === undefined) break;
      this.sets.delete(oldest);
    }
  }
}
