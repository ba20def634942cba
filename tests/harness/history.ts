/**
 * A history checker for end-to-end failure tests (in the spirit of Jepsen's queue checkers): every
 * send, ack and receipt is recorded per client; at the end the database's view of each conversation
 * is compared with what clients saw. It reports lost (acked but not stored, or stored but never
 * received), duplicated (surfaced twice to one client connection stream), reordered, gapped and
 * divergent (same sequence, different content) messages.
 */
export interface StoredMessage {
  conversation_id: string;
  sequence_number: number;
  message_id: string;
  sender_id: string;
  idempotency_key: string;
  payload: unknown;
}

export interface HistoryReport {
  lost: string[];
  duplicated: string[];
  reordered: string[];
  gapped: string[];
  divergent: string[];
  senderOrder: string[];
}

export class History {
  /** reader -> conversation -> sequences surfaced to the application, in order, across reconnects. */
  private readonly received = new Map<string, Map<string, StoredMessage[]>>();
  private readonly acked = new Map<string, { conversation_id: string; message_id: string; sequence_number: number; sender: string }>();
  /** sender|conversation -> keys in the order they were first sent. */
  private readonly sendOrder = new Map<string, string[]>();

  send(sender: string, conversationId: string, key: string): void {
    const id = `${sender}|${conversationId}`;
    const list = this.sendOrder.get(id) ?? [];
    if (!list.includes(key)) list.push(key);
    this.sendOrder.set(id, list);
  }

  ack(sender: string, key: string, a: { conversation_id: string; message_id: string; sequence_number: number }): void {
    this.acked.set(`${sender}/${key}`, { ...a, sender });
  }

  /** What a client surfaced to its application (after its own dedup, if any). */
  receive(reader: string, m: StoredMessage): void {
    let convs = this.received.get(reader);
    if (!convs) this.received.set(reader, (convs = new Map()));
    const list = convs.get(m.conversation_id) ?? [];
    list.push(m);
    convs.set(m.conversation_id, list);
  }

  /** `stored`: every message of the checked conversations, read from the database. `readers`: who must have received what. */
  check(stored: StoredMessage[], readersOf: (conversationId: string) => string[]): HistoryReport {
    const r: HistoryReport = { lost: [], duplicated: [], reordered: [], gapped: [], divergent: [], senderOrder: [] };
    const byConv = new Map<string, Map<number, StoredMessage>>();
    for (const m of stored) {
      let c = byConv.get(m.conversation_id);
      if (!c) byConv.set(m.conversation_id, (c = new Map()));
      c.set(m.sequence_number, m);
    }
    for (const [conv, seqs] of byConv) {
      const max = Math.max(0, ...seqs.keys());
      for (let i = 1; i <= max; i++) if (!seqs.has(i)) r.gapped.push(`db ${conv} missing sequence ${i}`);
    }
    for (const [k, a] of this.acked) {
      const m = byConv.get(a.conversation_id)?.get(a.sequence_number);
      if (!m || m.message_id !== a.message_id) r.lost.push(`acked ${k} (seq ${a.sequence_number}) not stored as acked`);
    }
    for (const [conv, seqs] of byConv) {
      for (const reader of readersOf(conv)) {
        const got = this.received.get(reader)?.get(conv) ?? [];
        const seen = new Set<number>();
        let prev = 0;
        for (const m of got) {
          if (seen.has(m.sequence_number)) r.duplicated.push(`${reader} got ${conv}#${m.sequence_number} twice`);
          else if (m.sequence_number < prev) r.reordered.push(`${reader} got ${conv}#${m.sequence_number} after #${prev}`);
          else if (m.sequence_number > prev + 1) r.gapped.push(`${reader} jumped from ${conv}#${prev} to #${m.sequence_number}`);
          const dbm = seqs.get(m.sequence_number);
          if (dbm && (dbm.message_id !== m.message_id || JSON.stringify(dbm.payload) !== JSON.stringify(m.payload))) {
            r.divergent.push(`${reader} got a different ${conv}#${m.sequence_number} than stored`);
          }
          seen.add(m.sequence_number);
          prev = Math.max(prev, m.sequence_number);
        }
        for (const s of seqs.keys()) if (!seen.has(s)) r.lost.push(`${reader} never received ${conv}#${s}`);
      }
    }
    const storedByKey = new Map(stored.map((m) => [`${m.sender_id}/${m.idempotency_key}`, m]));
    for (const [id, keys] of this.sendOrder) {
      const sender = id.split('|')[0]!;
      let prev = 0;
      for (const key of keys) {
        const m = storedByKey.get(`${sender}/${key}`);
        if (!m) continue;
        if (m.sequence_number < prev) r.senderOrder.push(`${sender}/${key} stored before an earlier send`);
        prev = m.sequence_number;
      }
    }
    return r;
  }
}

export function isClean(r: HistoryReport): boolean {
  return Object.values(r).every((v) => v.length === 0);
}
