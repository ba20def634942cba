/**
 * Outgoing messages. Each has an idempotency key for its whole life: retried with the same key on
 * `unavailable`/`rate_limited`/`internal` and after a reconnect, so the server stores it once. The
 * queue is bounded (enqueue beyond `maxQueued` is refused) and every send has an overall deadline.
 *
 * Own order: sends of one conversation go out in enqueue order, and while one of them waits to be
 * retried after a refusal, the later ones of that conversation are held. The server refuses later
 * sends that were already in flight (`unavailable`, reason `after_refused`, docs/protocol.md); those
 * are held too, without counting an attempt, and go out again right after the refused one.
 *
 * An ack of a send transmitted after a refusal (`unavailable`, `internal`) means the server writes
 * again: sends backing off after such a refusal go again at once instead of waiting out their
 * delay (up to 5 s), which held their conversations' later sends as long after a database restart.
 * `rate_limited` keeps its delay: the limit is the sender's, and another send's ack does not lift it.
 */
import { backoffDelay } from './backoff.js';
import { RealChatError } from './errors.js';
import type { Ack } from './types.js';

type Timer = ReturnType<typeof setTimeout>;

export interface SendQueueOptions {
  maxQueued: number;
  maxInFlight: number;
  maxAttempts: number;
  timeoutMs: number;
  retryBaseMs: number;
  retryCapMs: number;
  random: () => number;
  /**
   * Writes the frame (`send`, or the v1.1 `edit`/`delete` when `op` says so); returns its request
   * number, or null when not connected (the entry stays queued).
   */
  transmit(conversationId: string, key: string, payload: unknown, op: WriteOp): number | null;
}

/** What a queued write does: every one has an idempotency key and is answered with an `ack`. */
export type WriteOp = { type: 'send' } | { type: 'edit'; message_id: string } | { type: 'delete'; message_id: string };

const SEND: WriteOp = { type: 'send' };

interface Entry {
  key: string;
  conv: string;
  payload: unknown;
  op: WriteOp;
  attempts: number;
  /** Request number of the last transmission. */
  n: number;
  /** This queue's transmission count at the entry's last transmission. */
  sentAt: number;
  /** At its last refusal: the transmission count then, and whether an ack of a later transmission ends its wait. */
  refused: { at: number; endsOnAck: boolean } | null;
  state: 'queued' | 'inflight' | 'waiting';
  promise: Promise<Ack>;
  resolve(ack: Ack): void;
  reject(err: RealChatError): void;
  deadline: Timer;
  retry: Timer | null;
}

export class SendQueue {
  /** In enqueue order (Map keeps insertion order). */
  private readonly entries = new Map<string, Entry>();
  private inFlight = 0;
  /** Transmissions so far (orders refusals against acks, across reconnects). */
  private transmissions = 0;

  constructor(private readonly o: SendQueueOptions) {}

  get size(): number {
    return this.entries.size;
  }

  enqueue(conv: string, payload: unknown, key: string, op: WriteOp = SEND): Promise<Ack> {
    const existing = this.entries.get(key);
    if (existing) return existing.promise;
    if (this.entries.size >= this.o.maxQueued) {
      return Promise.reject(new RealChatError('queue_full', `more than ${this.o.maxQueued} messages are waiting to be sent`, key));
    }
    let resolve!: (a: Ack) => void;
    let reject!: (e: RealChatError) => void;
    const promise = new Promise<Ack>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const entry: Entry = {
      key,
      conv,
      payload,
      op,
      attempts: 0,
      n: 0,
      sentAt: 0,
      refused: null,
      state: 'queued',
      promise,
      resolve,
      reject,
      retry: null,
      deadline: setTimeout(
        () =>
          this.finish(
            entry,
            new RealChatError(
              'timeout',
              `message not acknowledged within ${this.o.timeoutMs} ms (it may still be stored: retry with the same key)`,
              key,
            ),
          ),
        this.o.timeoutMs,
      ),
    };
    this.entries.set(key, entry);
    this.pump();
    return promise;
  }

  /** Sends queued entries, in enqueue order, while there is room in flight. */
  pump(): void {
    // Conversations with an earlier send waiting for its retry: their later sends are held.
    let held: Set<string> | null = null;
    for (const e of this.entries.values()) {
      if (this.inFlight >= this.o.maxInFlight) return;
      if (e.state === 'waiting') (held ??= new Set()).add(e.conv);
      if (e.state !== 'queued' || held?.has(e.conv)) continue;
      const n = this.o.transmit(e.conv, e.key, e.payload, e.op);
      if (n === null) return;
      e.n = n;
      e.sentAt = ++this.transmissions;
      e.state = 'inflight';
      e.attempts++;
      this.inFlight++;
    }
  }

  /** Returns the request number of the acknowledged send, or null when the key is not ours. */
  onAck(ack: Ack): number | null {
    const e = this.entries.get(ack.idempotency_key);
    if (!e) return null;
    const n = e.n;
    this.finish(e, null, ack);
    for (const w of this.entries.values()) {
      if (w.state !== 'waiting' || !w.refused?.endsOnAck || w.refused.at >= e.sentAt) continue;
      if (w.retry) clearTimeout(w.retry);
      w.retry = null;
      w.state = 'queued';
    }
    this.pump();
    return n;
  }

  /** An error frame with ref = key (and its `reason`, if any). Returns false when the key is not ours. */
  onError(key: string, code: string, message: string, reason?: string): boolean {
    const e = this.entries.get(key);
    if (!e) return false;
    if (e.state === 'inflight') {
      this.inFlight--;
      e.state = 'waiting';
    }
    if (reason === 'after_refused' && this.hasEarlier(e)) {
      // Refused only for its place behind an earlier refused send of ours: not an attempt of its
      // own; pump() holds it until that one is retried.
      e.attempts--;
      e.state = 'queued';
      this.pump();
      return true;
    }
    const retriable = code === 'unavailable' || code === 'rate_limited' || code === 'internal';
    if (!retriable || e.attempts >= this.o.maxAttempts) {
      this.finish(e, new RealChatError(code, message, key, undefined, reason));
    } else {
      e.state = 'waiting';
      e.refused = { at: this.transmissions, endsOnAck: code !== 'rate_limited' };
      const floor = code === 'rate_limited' ? 1000 : 0;
      const delay = Math.max(
        floor,
        backoffDelay(e.attempts, { baseMs: this.o.retryBaseMs, capMs: this.o.retryCapMs, random: this.o.random }),
      );
      e.retry = setTimeout(() => {
        e.retry = null;
        if (e.state === 'waiting') e.state = 'queued';
        this.pump();
      }, delay);
    }
    this.pump();
    return true;
  }

  /** The connection dropped: sends in flight are sent again, with the same key, after the reconnect. */
  onDisconnect(): void {
    for (const e of this.entries.values()) if (e.state === 'inflight') e.state = 'queued';
    this.inFlight = 0;
  }

  /** True while a send of the same conversation enqueued before `e` is still pending (only sends are fenced). */
  private hasEarlier(e: Entry): boolean {
    for (const other of this.entries.values()) {
      if (other === e) return false;
      if (other.conv === e.conv && other.op.type === 'send') return true;
    }
    return false;
  }

  failAll(err: RealChatError): void {
    for (const e of [...this.entries.values()]) this.finish(e, new RealChatError(err.code, err.message, e.key));
  }

  private finish(e: Entry, err: RealChatError | null, ack?: Ack): void {
    if (this.entries.get(e.key) !== e) return;
    this.entries.delete(e.key);
    if (e.state === 'inflight') this.inFlight--;
    clearTimeout(e.deadline);
    if (e.retry) clearTimeout(e.retry);
    if (err) e.reject(err);
    else e.resolve(ack!);
  }
}
