/**
 * Highest sequence handed on per conversation, bounded (LRU). Forgetting a conversation only lets a
 * duplicate through to the gateway, whose connections drop it by sequence again.
 */
export class SequenceDedup {
  private readonly last = new Map<string, number>();

  constructor(private readonly maxEntries: number) {}

  seen(conversationId: string, sequence: number): boolean {
    const last = this.last.get(conversationId);
    return last !== undefined && sequence <= last;
  }

  /** After a failed hand-over whose marks cannot be told apart: forget everything (safe, see above). */
  reset(): void {
    this.last.clear();
  }

  mark(conversationId: string, sequence: number): void {
    const last = this.last.get(conversationId) ?? 0;
    this.last.delete(conversationId);
    this.last.set(conversationId, Math.max(last, sequence));
    if (this.last.size > this.maxEntries) {
      const oldest = this.last.keys().next().value;
      if (oldest !== undefined) this.last.delete(oldest);
    }
  }
}
