/**
 * Requests answered by conversation id (sync, read, typing). The server processes one connection's
 * requests in order, so answers come in request order: a `messages` frame answers the oldest sync of
 * its conversation, and an error with ref = conversation id the oldest open request of that
 * conversation. read and typing have no success reply; an entry is settled once a later request
 * has been answered, or after `silentTtlMs`.
 */
import type { RealChatError } from './errors.js';
import type { MessagesPage } from './types.js';

export type ConvRequestKind = 'sync' | 'read' | 'typing';

interface Waiter {
  resolve(page: MessagesPage): void;
  reject(err: RealChatError): void;
}

interface Entry {
  n: number;
  kind: ConvRequestKind;
  conv: string;
  sentAt: number;
  waiter: Waiter | null;
}

export class ConvRequests {
  private entries: Entry[] = [];

  constructor(private readonly o: { max: number; silentTtlMs: number; now: () => number }) {}

  get size(): number {
    return this.entries.length;
  }

  /** Syncs still waiting for their answer (bounded by the caller). */
  openSyncs(): number {
    return this.entries.filter((e) => e.kind === 'sync').length;
  }

  add(n: number, kind: ConvRequestKind, conv: string, waiter: Waiter | null): void {
    this.expire();
    this.entries.push({ n, kind, conv, sentAt: this.o.now(), waiter });
    // Bounded: the oldest silent entries are assumed settled.
    while (this.entries.length > this.o.max) {
      const i = this.entries.findIndex((e) => e.kind !== 'sync');
      if (i < 0) break;
      this.entries.splice(i, 1);
    }
  }

  /** A `messages` frame: the oldest sync of `conv`. */
  answerSync(conv: string): Waiter | null {
    const i = this.entries.findIndex((e) => e.kind === 'sync' && e.conv === conv);
    if (i < 0) return null;
    const e = this.entries[i]!;
    this.settleBefore(e.n);
    this.entries = this.entries.filter((x) => x !== e);
    return e.waiter;
  }

  /** An error with ref = conversation id: the oldest open request of `conv`. */
  answerError(conv: string): { kind: ConvRequestKind; waiter: Waiter | null } | null {
    const e = this.entries.find((x) => x.conv === conv);
    if (!e) return null;
    this.settleBefore(e.n);
    this.entries = this.entries.filter((x) => x !== e);
    return { kind: e.kind, waiter: e.waiter };
  }

  /** A later request (e.g. a send) was answered: silent requests sent before it succeeded. */
  settleBefore(n: number): void {
    this.entries = this.entries.filter((e) => e.kind === 'sync' || e.n >= n);
  }

  /** The connection is gone: every open request fails. */
  failAll(err: RealChatError): void {
    const entries = this.entries;
    this.entries = [];
    for (const e of entries) e.waiter?.reject(err);
  }

  private expire(): void {
    const cutoff = this.o.now() - this.o.silentTtlMs;
    this.entries = this.entries.filter((e) => e.kind === 'sync' || e.sentAt >= cutoff);
  }
}
