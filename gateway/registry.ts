import type { Connection } from './connection.js';
import type { Envelope } from '../common/protocol.js';
import { encodeFrame } from '../common/protocol.js';

/**
 * user -> connections on this node. A user may hold any number of connections; most hold one, which
 * is stored as is: a Set per user would cost every connection ~180 bytes more.
 */
export class ConnectionRegistry {
  private readonly byUser = new Map<string, Connection | Set<Connection>>();
  private count = 0;

  add(conn: Connection): void {
    const held = this.byUser.get(conn.userId);
    if (held === conn || (held instanceof Set && held.has(conn))) return;
    if (held === undefined) this.byUser.set(conn.userId, conn);
    else if (held instanceof Set) held.add(conn);
    else this.byUser.set(conn.userId, new Set([held, conn]));
    this.count++;
  }

  remove(conn: Connection): void {
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
      frame ??= encodeFrame({ type: 'message', message: env });
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

  join(userIds: Iterable<string>, conversationId: string, lastSequence: number): void {
    const join = (c: Connection) => c.join(conversationId, lastSequence);
    for (const u of userIds) this.each(u, join);
  }

  *all(): Iterable<Connection> {
    for (const held of this.byUser.values()) {
      if (held instanceof Set) yield* held;
      else yield held;
    }
  }

  private each(userId: string, fn: (c: Connection) => void): void {
    const held = this.byUser.get(userId);
    if (held === undefined) return;
    if (held instanceof Set) for (const c of held) fn(c);
    else fn(held);
  }
}
