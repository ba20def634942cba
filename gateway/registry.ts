import type { Connection } from './connection.js';
import type { Envelope } from '../common/protocol.js';
import { encodeFrame } from '../common/protocol.js';

/** user -> connections on this node. A user may hold any number of connections. */
export class ConnectionRegistry {
  private readonly byUser = new Map<string, Set<Connection>>();
  private count = 0;

  add(conn: Connection): void {
    let set = this.byUser.get(conn.userId);
    if (!set) this.byUser.set(conn.userId, (set = new Set()));
    if (!set.has(conn)) {
      set.add(conn);
      this.count++;
    }
  }

  remove(conn: Connection): void {
    const set = this.byUser.get(conn.userId);
    if (!set || !set.delete(conn)) return;
    this.count--;
    if (set.size === 0) this.byUser.delete(conn.userId);
  }

  get size(): number {
    return this.count;
  }

  hasUser(userId: string): boolean {
    return this.byUser.has(userId);
  }

  /** Encodes the frame once for every recipient. */
  deliverMessage(userIds: Iterable<string>, env: Envelope): number {
    let frame: string | null = null;
    let n = 0;
    for (const u of userIds) {
      const set = this.byUser.get(u);
      if (!set) continue;
      frame ??= encodeFrame({ type: 'message', message: env });
      for (const c of set) {
        c.deliverMessage(env, frame);
        n++;
      }
    }
    return n;
  }

  deliverFrame(userIds: Iterable<string>, frame: string, opts: { exceptUser?: string; conversationId?: string } = {}): void {
    for (const u of userIds) {
      if (u === opts.exceptUser) continue;
      const set = this.byUser.get(u);
      if (!set) continue;
      for (const c of set) {
        if (opts.conversationId && !c.isSubscribed(opts.conversationId)) continue;
        c.sendFrame(frame);
      }
    }
  }

  join(userIds: Iterable<string>, conversationId: string, lastSequence: number): void {
    for (const u of userIds) {
      const set = this.byUser.get(u);
      if (set) for (const c of set) c.join(conversationId, lastSequence);
    }
  }

  *all(): Iterable<Connection> {
    for (const set of this.byUser.values()) yield* set;
  }
}
