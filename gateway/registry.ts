import type { Connection } from './connection.js';
import type { Envelope } from '../common/protocol.js';
import { encodeMessageFrame } from '../common/protocol.js';

/**
 * user -> connections on this node. A user may hold any number of connections; most hold one, which
 * is stored as is: a Set per user would cost every connection ~180 bytes more.
 */
export class ConnectionRegistry {
  private readonly byUser = new Map<string, Connection | Set<Connection>>();
  private count = 0;
  /**
   * Large rooms: conversation -> the connections here subscribed to it. A large room is delivered
   * to whoever subscribed, never by member list (docs/architecture.md, "Large rooms").
   */
  private readonly rooms = new Map<string, Set<Connection>>();
  /** The registration of this node's interest in each room it has subscribers of. */
  private readonly interest = new Map<string, Promise<void>>();
  /** Large rooms this node has seen (rooms never become small again). */
  private readonly knownLarge = new Set<string>();

  /**
   * Told when this node gains its first subscriber of a large room (true) or loses its last
   * (false); resolves once the interest is registered (hello waits for it).
   */
  constructor(private readonly onRoomInterest: (conversationId: string, interested: boolean) => Promise<void> = async () => {}) {}

  add(conn: Connection): void {
    const held = this.byUser.get(conn.userId);
    if (held === conn || (held instanceof Set && held.has(conn))) return;
    if (held === undefined) this.byUser.set(conn.userId, conn);
    else if (held instanceof Set) held.add(conn);
    else this.byUser.set(conn.userId, new Set([held, conn]));
    this.count++;
  }

  /** Indexes a connection in a large room it is subscribed to; resolves once this node's interest is registered. */
  enterRoom(conn: Connection, conversationId: string): Promise<void> {
    this.knownLarge.add(conversationId);
    let set = this.rooms.get(conversationId);
    if (!set) {
      set = new Set();
      this.rooms.set(conversationId, set);
      this.interest.set(
        conversationId,
        this.onRoomInterest(conversationId, true).catch(() => {}),
      );
    }
    if (!set.has(conn)) {
      set.add(conn);
      (conn.rooms ??= []).push(conversationId);
    }
    return this.interest.get(conversationId) ?? Promise.resolve();
  }

  /** Large rooms with at least one subscriber on this node. */
  roomsHere(): string[] {
    return [...this.rooms.keys()];
  }

  /** A message of a large room to every connection here subscribed to it (the frame encoded once). */
  deliverToRoom(conversationId: string, env: Envelope): number {
    const set = this.rooms.get(conversationId);
    if (!set) return 0;
    const frame = encodeMessageFrame(env, 'live');
    for (const c of set) c.deliverMessage(env, frame);
    return set.size;
  }

  roomFrame(conversationId: string, frame: string, exceptUser?: string): void {
    for (const c of this.rooms.get(conversationId) ?? []) if (c.userId !== exceptUser) c.sendFrame(frame);
  }

  /** The connection left a large room (its user was removed); a no-op for any other conversation. */
  leaveRoom(conn: Connection, conversationId: string): void {
    if (!conn.rooms?.includes(conversationId)) return;
    this.dropFromRoom(conn, conversationId);
    conn.rooms = conn.rooms.filter((c) => c !== conversationId);
  }

  private dropFromRoom(conn: Connection, conv: string): void {
    const set = this.rooms.get(conv);
    if (set?.delete(conn) && set.size === 0) {
      this.rooms.delete(conv);
      this.interest.delete(conv);
      void this.onRoomInterest(conv, false).catch(() => {});
    }
  }

  remove(conn: Connection): void {
    for (const conv of conn.rooms ?? []) this.dropFromRoom(conn, conv);
    conn.rooms = null;
    const held = this.byUser.get(conn.userId);
    if (held === conn) this.byUser.delete(conn.userId);
    else if (held instanceof Set && held.delete(conn)) {
      if (held.size === 1) this.byUser.set(conn.userId, held.values().next().value!);
    } else return;
    this.count--;
  }

  get size(): number {
    return this.count;
  }

  hasUser(userId: string): boolean {
    return this.byUser.has(userId);
  }

  /** Every user on this node with its connection count (presence re-sync). */
  userCounts(): Map<string, number> {
    const out = new Map<string, number>();
    for (const [u, held] of this.byUser) out.set(u, held instanceof Set ? held.size : 1);
    return out;
  }

  /** Connections this user holds on this node. */
  countOf(userId: string): number {
    const held = this.byUser.get(userId);
    return held === undefined ? 0 : held instanceof Set ? held.size : 1;
  }

  /** Encodes the frame once for every recipient. */
  deliverMessage(userIds: Iterable<string>, env: Envelope): number {
    let frame: string | null = null;
    let n = 0;
    const deliver = (c: Connection) => {
      frame ??= encodeMessageFrame(env, 'live');
      c.deliverMessage(env, frame);
      n++;
    };
    for (const u of userIds) this.each(u, deliver);
    return n;
  }

  deliverFrame(userIds: Iterable<string>, frame: string, opts: { exceptUser?: string; conversationId?: string } = {}): void {
    const send = (c: Connection) => {
      if (!opts.conversationId || c.isSubscribed(opts.conversationId)) c.sendFrame(frame);
    };
    for (const u of userIds) if (u !== opts.exceptUser) this.each(u, send);
  }

  join(userIds: Iterable<string>, conversationId: string, lastSequence: number, large = false): void {
    const join = (c: Connection) => {
      c.join(conversationId, lastSequence);
      if (large) void this.enterRoom(c, conversationId);
    };
    for (const u of userIds) this.each(u, join);
  }

  /**
   * A room is large: the first time this node learns it, index the connections here already
   * subscribed to it (once per room: it walks every connection).
   */
  knowLarge(conversationId: string): void {
    if (this.knownLarge.has(conversationId)) return;
    this.knownLarge.add(conversationId);
    for (const c of this.all()) if (c.isSubscribed(conversationId)) void this.enterRoom(c, conversationId);
  }

  *all(): Iterable<Connection> {
    for (const held of this.byUser.values()) {
      if (held instanceof Set) yield* held;
      else yield held;
    }
  }

  /** A regional failover re-homed the conversation at `takeover` (Connection.rehome); null users: a large room's subscribers. */
  rehome(userIds: Iterable<string> | null, conversationId: string, takeover: number): void {
    if (userIds === null) {
      for (const c of this.rooms.get(conversationId) ?? []) c.rehome(conversationId, takeover);
      return;
    }
    for (const u of userIds) this.each(u, (c) => c.rehome(conversationId, takeover));
  }

  private each(userId: string, fn: (c: Connection) => void): void {
    const held = this.byUser.get(userId);
    if (held === undefined) return;
    if (held instanceof Set) for (const c of held) fn(c);
    else fn(held);
  }
}
