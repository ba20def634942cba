/**
 * A sender's own order under refusals (docs/protocol.md, "Order of one connection's sends").
 *
 * A connection's requests run one after another, so its sends are sequenced in the order they
 * arrive. A send refused with a retriable code (unavailable, rate_limited, internal) and sent again
 * arrives after the sends that followed it, and would be stored after them. So, like Kafka's
 * idempotent producer refusing a batch that skips a sequence, once a send is refused retriably,
 * every later send of the same connection and conversation is refused too (`unavailable`, reason
 * `after_refused`) until the refused keys arrive again, in the order they were refused: the fence
 * keeps the queue of keys it refused (the first refused send, then each send it turned away) and
 * admits only the head. Lifting the fence when the first key alone came back let a new send
 * overtake the ones refused after it. The client retries in its own order and the stored order is
 * the send order.
 *
 * A fence also lifts when the connection closes (the next connection starts unfenced), and after
 * FENCE_TTL_MS without the head key coming back (the client gave that message up; the SDK's
 * send deadline is 60 s, its retries come within 5 s). State per connection is bounded: at most
 * MAX_FENCES conversations are fenced at once; beyond, the oldest fence is dropped (its
 * conversation is then unprotected, which takes that many conversations refused at once); a fence
 * queues at most MAX_FENCED_KEYS keys (a connection has at most 64 requests in flight, so only a
 * client that keeps sending new messages while refused fills it; those beyond are still refused,
 * but not remembered).
 */
import { AppError, toAppError } from '../common/errors.js';

export const MAX_FENCES = 64;
export const FENCE_TTL_MS = 30_000;
export const MAX_FENCED_KEYS = 1024;

/** A send's place in its connection's arrival order. */
export interface SendTicket {
  readonly conversationId: string;
  readonly key: string;
  readonly n: number;
}

interface Fence {
  /** Keys to be sent again, in the order they were refused; the head is the one admitted next. */
  keys: string[];
  /** Arrival number of the refused send: sends that arrived before it are not fenced. */
  n: number;
  /** When the fence was set or its head last advanced. */
  atMs: number;
}

export class SendFences {
  private arrivals = 0;
  // Created on the first refusal: most connections never see one.
  private fences: Map<string, Fence> | null = null;

  constructor(private readonly now: () => number = Date.now) {}

  /** Called when a send frame arrives, before anything can refuse it. */
  ticket(conversationId: string, key: string): SendTicket {
    return { conversationId, key, n: ++this.arrivals };
  }

  /** Before the send runs: throws `unavailable`/`after_refused` unless it is the next key the fence waits for. */
  admit(t: SendTicket): void {
    const f = this.fences?.get(t.conversationId);
    // A fence set by a send that arrived after this one (refused at arrival: too many in flight).
    if (!f || f.n > t.n) return;
    if (this.expired(f)) {
      this.lift(t.conversationId);
      return;
    }
    if (f.keys[0] === t.key) {
      f.keys.shift();
      f.atMs = this.now();
      if (f.keys.length === 0) this.lift(t.conversationId);
      return;
    }
    if (f.keys.length < MAX_FENCED_KEYS && !f.keys.includes(t.key)) f.keys.push(t.key);
    throw new AppError(
      'unavailable',
      `an earlier send to this conversation (idempotency_key ${JSON.stringify(f.keys[0]!.slice(0, 128))}) was refused: send that one again first`,
      { reason: 'after_refused', retryAfterS: 0 },
    );
  }

  /** The send was refused with `err`: a retriable refusal fences the sends that arrived after it. */
  refused(t: SendTicket, err: unknown): void {
    const e = toAppError(err);
    if (!e.retriable || e.reason === 'after_refused') return;
    const fences = (this.fences ??= new Map());
    const f = fences.get(t.conversationId);
    if (f && !this.expired(f)) {
      // Admitted as the fence's head and refused again: it stays first. (Or an earlier arrival
      // refused after a later one that was refused at arrival: it goes first too.)
      if (!f.keys.includes(t.key)) f.keys.unshift(t.key);
      f.n = Math.min(f.n, t.n);
      f.atMs = this.now();
      return;
    }
    if (f) fences.delete(t.conversationId);
    if (fences.size >= MAX_FENCES) this.evict(fences);
    fences.set(t.conversationId, { keys: [t.key], n: t.n, atMs: this.now() });
  }

  /** Conversations fenced now (tests, metrics). */
  get size(): number {
    return this.fences?.size ?? 0;
  }

  private expired(f: Fence): boolean {
    return this.now() - f.atMs > FENCE_TTL_MS;
  }

  private lift(conversationId: string): void {
    this.fences!.delete(conversationId);
    if (this.fences!.size === 0) this.fences = null;
  }

  private evict(fences: Map<string, Fence>): void {
    for (const [conv, f] of fences) if (this.expired(f)) fences.delete(conv);
    // Insertion order: the first is the oldest fence.
    if (fences.size >= MAX_FENCES) fences.delete(fences.keys().next().value!);
  }
}
