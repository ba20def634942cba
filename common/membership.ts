/**
 * Who a conversation's deliveries go to, loaded from the database and kept current by the
 * members_added events that flow through the same ordered stream: its member list, or for a large
 * room (past REALCHAT_LARGE_ROOM_MEMBERS) just that: large rooms are delivered by room interest
 * (the nodes and connections that subscribed), never by member list. Bounded (LRU); concurrent
 * loads of one conversation share one query. Members are never removed in v1, so a cached list can
 * only be missing members that an event not yet processed will add. Shared by gateway nodes
 * (typing, broadcast deliveries) and delivery workers (routing).
 */
import { mapDbError, type Sql } from './db.js';
import { LruMap } from './lru.js';
import { withTimeout } from './timeout.js';

export type Audience = { readonly large: false; readonly members: ReadonlySet<string> } | { readonly large: true };

const LARGE: Audience = Object.freeze({ large: true });

export interface MembershipSource {
  /** A large room's members are not read (there may be a million). */
  audienceOf(conversationId: string): Promise<{ large: boolean; members: string[] }>;
}

export function createMembershipSource(sql: Sql, timeoutMs: number): MembershipSource {
  return {
    async audienceOf(conversationId) {
      try {
        const [row] = await withTimeout(
          sql<{ large: boolean; members: string[] }[]>`
            SELECT c.large, CASE WHEN c.large THEN '{}'::uuid[] ELSE ARRAY(SELECT m.user_id FROM members m WHERE m.conversation_id = c.id) END AS members
            FROM conversations c WHERE c.id = ${conversationId}`,
          timeoutMs,
          'audienceOf',
        );
        return row ?? { large: false, members: [] };
      } catch (err) {
        throw mapDbError(err);
      }
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
    let p = this.loading.get(conversationId);
    if (!p) {
      p = this.source.audienceOf(conversationId).then((a) => (a.large ? LARGE : { large: false, members: new Set(a.members) }));
      this.loading.set(conversationId, p);
      const load = p;
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
    }
    return p;
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

  /** Applies a members_added event to a cached entry (an uncached one loads fresh later). */
  add(conversationId: string, userIds: readonly string[], large = false): void {
    const a = this.entries.peek(conversationId);
    if (large) this.entries.set(conversationId, LARGE);
    else if (a && !a.large) for (const u of userIds) (a.members as Set<string>).add(u);
    // A load in flight may have read before the insert committed; drop it so the next read reloads.
    if (this.loading.has(conversationId)) this.loading.delete(conversationId);
  }

  get size(): number {
    return this.entries.size;
  }
}

const EMPTY: ReadonlySet<string> = new Set();
