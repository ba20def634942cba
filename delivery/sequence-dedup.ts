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

  mark(conversationId: string, sequence: number): void {
    this.last.set(conversationId, Math.max(this.last.peek(conversationId) ?? 0, sequence));
  }
}
