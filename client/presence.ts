/**
 * Presence for clients in the SDK: `client.presence.subscribe(userIds, listener)`. One server
 * subscription per user however many listeners watch it; every watched user is subscribed again
 * after each reconnect (the server forgets a connection's subscriptions when it closes), and the
 * server then answers with the current status, so a change missed while disconnected is seen.
 * Bounded like the server: at most `maxWatched` users (the server's default cap, 1,000).
 */
import { RealChatError } from './errors.js';
import type { Presence } from './types.js';

export type PresenceListener = (p: Presence) => void;

/** User ids per frame (the server's limit). */
const IDS_PER_FRAME = 1000;

export interface PresenceDeps {
  /** Writes a frame on the welcomed connection; false while disconnected (sent again on welcome). */
  send(frame: { type: 'presence_subscribe' | 'presence_unsubscribe'; user_ids: string[] }): boolean;
  maxWatched: number;
  /** A listener that threw (the application's bug). */
  onListenerError(err: unknown): void;
}

export class PresenceSubscriptions {
  private readonly listeners = new Map<string, Set<PresenceListener>>();
  private readonly last = new Map<string, Presence>();

  constructor(private readonly deps: PresenceDeps) {}

  /**
   * Calls `listener` with each user's status (at once when known, else when the server answers),
   * then on every change. Returns the function that stops it. Users who share no conversation with
   * this user are refused by the server (the client's `error` event, code `forbidden`, `user_ids`).
   */
  subscribe(userIds: readonly string[], listener: PresenceListener): () => void {
    const ids = [...new Set(userIds.map((u) => u.toLowerCase()))];
    const fresh = ids.filter((u) => !this.listeners.has(u));
    if (this.listeners.size + fresh.length > this.deps.maxWatched)
      throw new RealChatError('queue_full', `at most ${this.deps.maxWatched} users watched at once`);
    for (const u of ids) {
      let set = this.listeners.get(u);
      if (!set) this.listeners.set(u, (set = new Set()));
      set.add(listener);
      const known = this.last.get(u);
      if (known) queueMicrotask(() => this.call(listener, known));
    }
    this.write('presence_subscribe', fresh);
    let active = true;
    return () => {
      if (!active) return;
      active = false;
      const gone: string[] = [];
      for (const u of ids) {
        const set = this.listeners.get(u);
        if (!set?.delete(listener) || set.size > 0) continue;
        this.listeners.delete(u);
        this.last.delete(u);
        gone.push(u);
      }
      this.write('presence_unsubscribe', gone);
    };
  }

  /** The last status the server sent for a watched user. */
  get(userId: string): Presence | undefined {
    return this.last.get(userId.toLowerCase());
  }

  /** Users watched now. */
  get size(): number {
    return this.listeners.size;
  }

  /** A `presence` frame. */
  accept(p: Presence): void {
    const set = this.listeners.get(p.user_id);
    if (!set) return;
    this.last.set(p.user_id, p);
    for (const l of [...set]) this.call(l, p);
  }

  /** The server refused these users (`forbidden`): stop watching them, so a reconnect does not ask again. */
  refused(userIds: readonly string[]): void {
    for (const u of userIds) {
      this.listeners.delete(u);
      this.last.delete(u);
    }
  }

  /** A new connection was welcomed: the server has no subscription of ours yet. */
  resubscribe(): void {
    this.write('presence_subscribe', [...this.listeners.keys()]);
  }

  private write(type: 'presence_subscribe' | 'presence_unsubscribe', ids: string[]): void {
    for (let i = 0; i < ids.length; i += IDS_PER_FRAME) if (!this.deps.send({ type, user_ids: ids.slice(i, i + IDS_PER_FRAME) })) return;
  }

  private call(l: PresenceListener, p: Presence): void {
    try {
      l(p);
    } catch (err) {
      this.deps.onListenerError(err);
    }
  }
}
