/**
 * Gap fill: when the streams see a sequence gap (or track() moved a position), fetch the missing
 * messages with `sync`, one page at a time per conversation. A fill that failed, or that did not
 * close the gap, is tried again with backoff; a fill lost with the connection is not (the resume
 * after the reconnect covers it).
 */
import { LruMap } from '../common/lru.js';
import { backoffDelay } from './backoff.js';
import type { RealChatError } from './errors.js';
import type { ConversationStreams } from './streams.js';
import type { MessagesPage } from './types.js';

/** Conversations whose failure count is remembered (the least recently failed is forgotten). */
const MAX_TRACKED_FAILURES = 1000;
const RETRY_BASE_MS = 200;
const RETRY_CAP_MS = 10_000;

export interface GapFillOptions {
  streams: Pick<ConversationStreams, 'fillDone' | 'fillAborted' | 'hasGap' | 'requestFrom' | 'refill' | 'resetFills'>;
  /** True while a welcomed connection can carry a sync. */
  connected(): boolean;
  /** One sync page after `afterSequence`; rejects with a RealChatError. */
  sync(conversationId: string, afterSequence: number): Promise<MessagesPage>;
  /** A fill the server refused for good (forbidden, not_found). */
  onError(err: RealChatError): void;
  random: () => number;
  /** Runs `fn` after `ms`; returns a function that cancels it. */
  schedule(fn: () => void, ms: number): () => void;
}

export class GapFill {
  /** Pending retries, by conversation. */
  private readonly retries = new Map<string, () => void>();
  /** Failed fills in a row, by conversation (for the backoff). */
  private readonly failures = new LruMap<string, number>(MAX_TRACKED_FAILURES);

  constructor(private readonly o: GapFillOptions) {}

  /** The streams' requestFill: fetch what follows `afterSequence`. */
  request(conv: string, afterSequence: number): void {
    if (!this.o.connected()) {
      // The resume after the reconnect covers it.
      this.o.streams.fillAborted(conv);
      return;
    }
    this.o.sync(conv, afterSequence).then(
      (page) => {
        const advanced = this.o.streams.fillDone(conv, page.messages);
        if (advanced) this.failures.delete(conv);
        // More pages (or a gap that did not close): ask again, later if nothing moved.
        if (page.has_more && advanced) this.o.streams.requestFrom(conv);
        else if (!advanced && this.o.streams.hasGap(conv)) this.retry(conv);
      },
      (err: RealChatError) => {
        this.o.streams.fillAborted(conv);
        if (err.code === 'forbidden' || err.code === 'not_found') {
          this.o.onError(err);
          return;
        }
        this.retry(conv);
      },
    );
  }

  /** The connection is gone: fills in flight were lost and pending retries are dropped (the resume covers them). */
  connectionLost(): void {
    this.o.streams.resetFills();
    this.cancelRetries();
  }

  /** The conversation is no longer tracked: its pending retry is dropped. */
  forget(conv: string): void {
    this.retries.get(conv)?.();
    this.retries.delete(conv);
    this.failures.delete(conv);
  }

  /** The client closed. */
  stop(): void {
    this.cancelRetries();
  }

  /** Failed fills in a row for `conv` (0 after a fill that advanced). */
  failuresOf(conv: string): number {
    return this.failures.peek(conv) ?? 0;
  }

  get pendingRetries(): number {
    return this.retries.size;
  }

  private retry(conv: string): void {
    if (this.retries.has(conv) || !this.o.connected()) return;
    const failures = (this.failures.peek(conv) ?? 0) + 1;
    this.failures.set(conv, failures);
    const delay = backoffDelay(failures, { baseMs: RETRY_BASE_MS, capMs: RETRY_CAP_MS, random: this.o.random });
    this.retries.set(
      conv,
      this.o.schedule(() => {
        this.retries.delete(conv);
        this.o.streams.refill(conv);
      }, delay),
    );
  }

  private cancelRetries(): void {
    for (const cancel of this.retries.values()) cancel();
    this.retries.clear();
  }
}
