/**
 * Per-conversation ordering: messages are handed to `deliver` strictly in sequence order, each once.
 * A message beyond the next expected sequence is buffered (bounded) and a gap fill is requested; a
 * message at or below the delivered position is a duplicate and dropped.
 */
import { LruMap } from '../common/lru.js';
import type { Envelope, Via } from './types.js';

export interface StreamOptions {
  maxBufferedPerConversation: number;
  /** Conversations remembered; the least recently active is forgotten beyond this. */
  maxConversations: number;
  /** `via`: how the message reached this client: the frame's `via`, or for a `sync` page `fill` (a gap) / `resume` (after track()). */
  deliver(env: Envelope, via: Via | undefined): void;
  /** Ask for the messages after `afterSequence` (one request at a time per conversation). */
  requestFill(conversationId: string, afterSequence: number): void;
}

/** Message ids remembered per conversation, for a rewind after a regional failover. */
const RECENT_IDS = 32;

interface State {
  /** Last sequence delivered. */
  last: number;
  /** The message id delivered at `last` (sent with the resume position, v1.4), when known. */
  lastId?: string;
  /** The last RECENT_IDS delivered, oldest first. */
  recent?: Array<{ seq: number; id: string }>;
  /** After a rewind: ids already shown, skipped when they come again under new numbers. */
  skip?: Set<string>;
  /** Out-of-order messages waiting for the gap before them. */
  buffer: Map<number, Arrived>;
  filling: boolean;
}

interface Arrived {
  env: Envelope;
  via: Via | undefined;
}

export interface StreamStats {
  delivered: number;
  duplicates: number;
  gapsDetected: number;
}

export class ConversationStreams {
  /** LRU order: the most recently active conversation is last (only touch() changes it). */
  private readonly convs: LruMap<string, State>;
  readonly stats: StreamStats = { delivered: 0, duplicates: 0, gapsDetected: 0 };

  constructor(private readonly o: StreamOptions) {
    this.convs = new LruMap(o.maxConversations);
  }

  position(conversationId: string): number | undefined {
    return this.convs.peek(conversationId)?.last;
  }

  /** Resume positions, most recently active first, at most `max`. */
  positions(max: number): Record<string, number> {
    const out: Record<string, number> = {};
    const keys = [...this.convs.keys()].reverse().slice(0, max);
    for (const k of keys) out[k] = this.convs.peek(k)!.last;
    return out;
  }

  /** The message id at each of those positions, where known (hello's `resume_last_ids`, v1.4). */
  lastIds(max: number): Record<string, string> {
    const out: Record<string, string> = {};
    const keys = [...this.convs.keys()].reverse().slice(0, max);
    for (const k of keys) {
      const id = this.convs.peek(k)!.lastId;
      if (id) out[k] = id;
    }
    return out;
  }

  /**
   * A `rewind` frame (v1.4, a regional failover): entries after `afterSequence` are numbered anew
   * by the conversation's new home. The position moves back there; entries this client already
   * delivered above it are skipped when they come again (by message id, among the last 32).
   * Returns true when the position moved.
   */
  rewind(conversationId: string, afterSequence: number): boolean {
    const st = this.convs.peek(conversationId);
    if (!st || st.last <= afterSequence) return false;
    const recent = st.recent ?? [];
    st.skip = new Set([...(st.skip ?? []), ...recent.filter((r) => r.seq > afterSequence).map((r) => r.id)]);
    st.recent = recent.filter((r) => r.seq <= afterSequence);
    st.lastId = st.recent.at(-1)?.seq === afterSequence ? st.recent.at(-1)!.id : undefined;
    st.last = afterSequence;
    st.buffer.clear();
    st.filling = false;
    return true;
  }

  /**
   * Declares that everything up to `afterSequence` is known to the application. Returns true when
   * this moved the position (the caller should then fill from it).
   */
  track(conversationId: string, afterSequence: number): boolean {
    const st = this.convs.peek(conversationId);
    if (st && st.last >= afterSequence) return false;
    if (st) {
      st.last = afterSequence;
      for (const k of st.buffer.keys()) if (k <= afterSequence) st.buffer.delete(k);
      this.drain(conversationId, st);
      return true;
    }
    this.touch(conversationId, { last: afterSequence, buffer: new Map(), filling: false });
    return true;
  }

  /** A message from the live stream, a resume or a fill, with the `via` it came with. */
  accept(env: Envelope, via?: Via): void {
    const conv = env.conversation_id;
    const seq = env.sequence_number;
    let st = this.convs.peek(conv);
    // Untracked conversation: its first message is the baseline (history is the application's, via REST).
    if (!st) st = { last: seq - 1, buffer: new Map(), filling: false };
    this.touch(conv, st);
    if (seq <= st.last) {
      this.stats.duplicates++;
      return;
    }
    if (seq === st.last + 1) {
      this.deliverOne(st, { env, via });
      this.drain(conv, st);
      return;
    }
    if (st.buffer.has(seq)) {
      this.stats.duplicates++;
    } else if (st.buffer.size < this.o.maxBufferedPerConversation) {
      st.buffer.set(seq, { env, via });
    } // else dropped: the fill fetches it again
    this.stats.gapsDetected++;
    this.fill(conv, st);
  }

  /** The answer to a requestFill. Returns true when delivery advanced. */
  fillDone(conversationId: string, messages: Envelope[]): boolean {
    const st = this.convs.peek(conversationId);
    if (!st) return false;
    st.filling = false;
    const before = st.last;
    // With later messages buffered, the page closes a gap the live stream left; without, it is the
    // catch-up after track() (history the application asked for).
    const via = st.buffer.size > 0 ? 'fill' : 'resume';
    for (const m of [...messages].sort((a, b) => a.sequence_number - b.sequence_number)) {
      // A delivered entry may have ended the conversation for this user (untrack): the rest is not ours.
      if (this.convs.peek(conversationId) !== st) return false;
      this.accept(m, via);
    }
    return st.last > before;
  }

  /** A fill failed or was lost with the connection; `needsFill` tells whether a gap remains. */
  fillAborted(conversationId: string): void {
    const st = this.convs.peek(conversationId);
    if (st) st.filling = false;
  }

  /** True while the conversation waits for earlier messages. */
  hasGap(conversationId: string): boolean {
    return (this.convs.peek(conversationId)?.buffer.size ?? 0) > 0;
  }

  /** After a reconnect: fills in flight were lost. */
  resetFills(): void {
    for (const st of this.convs.values()) st.filling = false;
  }

  /** Re-requests fills for conversations with a gap (e.g. after a failed fill). */
  refill(conversationId: string): void {
    const st = this.convs.peek(conversationId);
    if (st && st.buffer.size > 0) this.fill(conversationId, st);
  }

  /**
   * Stops tracking a conversation (the user left or was removed): no resume position, no gap fill,
   * buffered entries dropped. Safe to call from inside `deliver`.
   */
  untrack(conversationId: string): void {
    const st = this.convs.peek(conversationId);
    if (!st) return;
    st.buffer.clear();
    st.filling = false;
    this.convs.delete(conversationId);
  }

  /** Asks for everything after the current position (after track() while connected). */
  requestFrom(conversationId: string): void {
    const st = this.convs.peek(conversationId);
    if (st) this.fill(conversationId, st);
  }

  private fill(conv: string, st: State): void {
    if (st.filling) return;
    st.filling = true;
    this.o.requestFill(conv, st.last);
  }

  private deliverOne(st: State, m: Arrived): void {
    st.last = m.env.sequence_number;
    st.buffer.delete(m.env.sequence_number);
    const id = m.env.message_id;
    if (typeof id === 'string') {
      st.lastId = id;
      const recent = (st.recent ??= []);
      recent.push({ seq: st.last, id });
      if (recent.length > RECENT_IDS) recent.shift();
      // Shown before a rewind, under the lost home's number: not again.
      if (st.skip?.delete(id)) {
        if (st.skip.size === 0) st.skip = undefined;
        this.stats.duplicates++;
        return;
      }
    } else st.lastId = undefined;
    this.stats.delivered++;
    this.o.deliver(m.env, m.via);
  }

  private drain(conv: string, st: State): void {
    for (let next = st.buffer.get(st.last + 1); next; next = st.buffer.get(st.last + 1)) this.deliverOne(st, next);
    for (const k of st.buffer.keys()) if (k <= st.last) st.buffer.delete(k);
    if (st.buffer.size > 0 && !st.filling) this.fill(conv, st);
  }

  /** Marks the conversation as the most recently active; the least recently active is forgotten beyond maxConversations. */
  private touch(conv: string, st: State): void {
    this.convs.set(conv, st);
  }
}
