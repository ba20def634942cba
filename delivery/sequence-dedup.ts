import { LruMap } from '../common/lru.js';

/**
 * Highest sequence handed on per conversation, bounded (LRU). Forgetting a conversation only lets a
 * duplicate through to the gateway, whose connections drop it by sequence again.
 */
export class SequenceDedup {
  private readonly last: LruMap<string, number>;

  constructor(maxEntries: number) {
    this.last = new LruMap(maxEntries);
  }

  seen(conversationId: string, sequence: number): boolean {
    const last = this.last.peek(conversationId);
    return last !== undefined && sequence <= last;
  }

  /** After a failed hand-over whose marks cannot be told apart: forget everything (safe, see above). */
  reset(): void {
    this.last.clear();
  }

  /** The conversation's numbering restarts after `sequence` (a regional failover's takeover point). */
  rewind(conversationId: string, sequence: number): void {
    const last = this.last.peek(conversationId);
    if (last !== undefined && last > sequence) this.last.set(conversationId, sequence);
  }

  mark(conversationId: string, sequence: number): void {
    this.last.set(conversationId, Math.max(this.last.peek(conversationId) ?? 0, sequence));
  }
}
