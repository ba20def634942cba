/**
 * A history checker for end-to-end failure tests (in the spirit of Jepsen's queue and Kafka
 * checkers): every send, ack and receipt is recorded per client; at the end the database's view of
 * each conversation is compared with what clients saw.
 *
 * API (tests and the chaos runner, tests/chaos/):
 *
 *   const h = new History();
 *   h.send(sender, conversationId, key);        // every attempt; the first fixes the send order
 *   h.ack(sender, key, { conversation_id, message_id, sequence_number });
 *   h.receive(reader, envelope, { via, atMs }); // what a client surfaced, after its own dedup;
 *                                               // via: the frame's / SDK's `via`, atMs: default now
 *   const report = h.check(stored, readersOf, {
 *     fillWindows?: [[startMs, endMs], ...],    // gap fills allowed only inside these (fault windows)
 *     conversations?: [...],                    // checked even when nothing of them is stored
 *     allSendersRecorded?: true,                // every sender's sends were recorded, not only of
 *                                               //   senders that recorded at least one send
 *     rehomed?: new Map([[conv, takeoverSeq]]), // conversations a regional failover re-homed
 *   });
 *   isClean(report);
 *   h.arrivals();                               // { live, fill, resume, unknown }: deliveries by via
 *
 * `stored` is every message of the checked conversations, read from the database; `readersOf(conv)`
 * who must have received all of it. Every report field is a list of findings (empty = clean):
 * - lost: acked but not stored as acked, or stored but never received by a reader;
 * - duplicated, reordered, gapped (a reader's stream, or the database's sequences), divergent
 *   (a reader got other content than stored at that sequence);
 * - unexpected: a reader got a message that is not stored, or one its sender never sent;
 * - conflictingAcks: one (sender, key) acked with two different messages;
 * - unsent: stored but never sent (by a sender the history records, see allSendersRecorded);
 * - senderOrder: per sender and conversation, stored sequence order differs from first-send order;
 * - fillsOutsideWindows: with fillWindows, each delivery that arrived by `fill` outside all of them.
 * With `rehomed` (docs/multi-region.md, "Regional failover"), `stored` is the new home's history: an
 * ack past a conversation's takeover sequence came from the old home in the RPO window, and the new
 * home re-appends that message under a new sequence with the same message id, so the ack holds if
 * the message id is stored past the takeover; such a message is also exempt from its sender's order
 * (it comes back after whatever the sender sent once the old home was gone). A reader's view must
 * be the new home's: what it had of the old home past the takeover, a `rewind` told it to drop.
 * A sender the history never saw send is taken as outside the test (setup data), unless
 * allSendersRecorded.
 */
import type { Via } from '../../common/wire.js';

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
  unexpected: string[];
  conflictingAcks: string[];
  unsent: string[];
  fillsOutsideWindows: string[];
}

export interface CheckOptions {
  /** [startMs, endMs] windows (epoch ms, inclusive) in which gap fills are expected. Unset: fills are not checked. */
  fillWindows?: ReadonlyArray<readonly [number, number]>;
  /** Conversations to check besides those with stored messages. */
  conversations?: Iterable<string>;
  /** Every sender's sends were recorded: flag stored or received messages of senders never seen sending. */
  allSendersRecorded?: boolean;
  /** Conversations re-homed by a regional failover -> their takeover sequence (see above). */
  rehomed?: ReadonlyMap<string, number>;
}

export type Arrivals = Record<Via | 'unknown', number>;

interface AckRecord {
  conversation_id: string;
  message_id: string;
  sequence_number: number;
}

interface Received {
  m: StoredMessage;
  via: Via | undefined;
  atMs: number;
}

const sameAck = (a: AckRecord, b: AckRecord) =>
  a.conversation_id === b.conversation_id && a.message_id === b.message_id && a.sequence_number === b.sequence_number;

export class History {
  /** reader -> conversation -> messages surfaced to the application, in order, across reconnects. */
  private readonly received = new Map<string, Map<string, Received[]>>();
  /** sender/key -> the first ack. */
  private readonly acked = new Map<string, AckRecord & { sender: string }>();
  private readonly ackConflicts: string[] = [];
  /** sender|conversation -> keys in the order they were first sent. */
  private readonly sendOrder = new Map<string, string[]>();
  /** sender/key of every send. */
  private readonly sent = new Set<string>();
  private readonly senders = new Set<string>();
  private readonly counts: Arrivals = { live: 0, fill: 0, resume: 0, unknown: 0 };

  send(sender: string, conversationId: string, key: string): void {
    const sk = `${sender}/${key}`;
    this.senders.add(sender);
    if (this.sent.has(sk)) return;
    this.sent.add(sk);
    const id = `${sender}|${conversationId}`;
    const list = this.sendOrder.get(id);
    if (list) list.push(key);
    else this.sendOrder.set(id, [key]);
  }

  ack(sender: string, key: string, a: AckRecord): void {
    const k = `${sender}/${key}`;
    const rec = { conversation_id: a.conversation_id, message_id: a.message_id, sequence_number: a.sequence_number };
    const first = this.acked.get(k);
    if (!first) this.acked.set(k, { ...rec, sender });
    else if (!sameAck(first, rec)) {
      this.ackConflicts.push(
        `${k} acked as ${first.conversation_id}#${first.sequence_number} (${first.message_id}) and as ${rec.conversation_id}#${rec.sequence_number} (${rec.message_id})`,
      );
    }
  }

  /** What a client surfaced to its application (after its own dedup, if any), and how it arrived. */
  receive(reader: string, m: StoredMessage, opts: { via?: Via; atMs?: number } = {}): void {
    let convs = this.received.get(reader);
    if (!convs) this.received.set(reader, (convs = new Map()));
    const list = convs.get(m.conversation_id);
    const r = { m, via: opts.via, atMs: opts.atMs ?? Date.now() };
    if (list) list.push(r);
    else convs.set(m.conversation_id, [r]);
    this.counts[opts.via ?? 'unknown']++;
  }

  /** Every delivery that arrived by fill (a server fill, or the SDK's `sync`), with its reader. */
  filled(): Array<{ reader: string; conversation_id: string; sequence_number: number }> {
    const out: Array<{ reader: string; conversation_id: string; sequence_number: number }> = [];
    for (const [reader, convs] of this.received)
      for (const list of convs.values())
        for (const r of list)
          if (r.via === 'fill') out.push({ reader, conversation_id: r.m.conversation_id, sequence_number: r.m.sequence_number });
    return out;
  }

  /** How `reader` first surfaced message `seq` of a conversation (null: never). */
  arrival(reader: string, conversationId: string, seq: number): Via | 'unknown' | null {
    const r = this.received
      .get(reader)
      ?.get(conversationId)
      ?.find((x) => x.m.sequence_number === seq);
    return r ? (r.via ?? 'unknown') : null;
  }

  /** Deliveries recorded so far, by how they arrived. */
  arrivals(): Arrivals {
    return { ...this.counts };
  }

  check(stored: StoredMessage[], readersOf: (conversationId: string) => string[], opts: CheckOptions = {}): HistoryReport {
    const r: HistoryReport = { ...emptyReport(), conflictingAcks: [...this.ackConflicts] };
    const recorded = (sender: string) => opts.allSendersRecorded === true || this.senders.has(sender);
    const wasSent = (m: StoredMessage) => this.sent.has(`${m.sender_id}/${m.idempotency_key}`);

    const byConv = new Map<string, Map<number, StoredMessage>>();
    for (const conv of opts.conversations ?? []) byConv.set(conv, new Map());
    const storedIds = new Set<string>();
    for (const m of stored) {
      let c = byConv.get(m.conversation_id);
      if (!c) byConv.set(m.conversation_id, (c = new Map()));
      c.set(m.sequence_number, m);
      storedIds.add(m.message_id);
      if (recorded(m.sender_id) && !wasSent(m))
        r.unsent.push(`${m.conversation_id}#${m.sequence_number} (${m.sender_id}/${m.idempotency_key}) stored, never sent`);
    }
    for (const [conv, seqs] of byConv) {
      const max = Math.max(0, ...seqs.keys());
      for (let i = 1; i <= max; i++) if (!seqs.has(i)) r.gapped.push(`db ${conv} missing sequence ${i}`);
    }
    const takeover = (a: AckRecord) => opts.rehomed?.get(a.conversation_id) ?? Number.POSITIVE_INFINITY;
    /** sender/key of acks in an RPO window: re-appended, so matched by message id and out of their sender's order. */
    const reappended = new Set<string>();
    for (const [k, a] of this.acked) {
      if (a.sequence_number > takeover(a)) {
        reappended.add(k);
        const again = [...(byConv.get(a.conversation_id)?.values() ?? [])].find((m) => m.message_id === a.message_id);
        if (!again || again.sequence_number <= takeover(a))
          r.lost.push(`acked ${k} (seq ${a.sequence_number} in the old home, past the takeover at ${takeover(a)}) never re-appended`);
        continue;
      }
      const m = byConv.get(a.conversation_id)?.get(a.sequence_number);
      if (!m || m.message_id !== a.message_id) r.lost.push(`acked ${k} (seq ${a.sequence_number}) not stored as acked`);
    }
    for (const [conv, seqs] of byConv) {
      for (const reader of readersOf(conv)) {
        const got = this.received.get(reader)?.get(conv) ?? [];
        const seen = new Set<number>();
        let prev = 0;
        for (const { m } of got) {
          if (seen.has(m.sequence_number)) r.duplicated.push(`${reader} got ${conv}#${m.sequence_number} twice`);
          else if (m.sequence_number < prev) r.reordered.push(`${reader} got ${conv}#${m.sequence_number} after #${prev}`);
          else if (m.sequence_number > prev + 1) r.gapped.push(`${reader} jumped from ${conv}#${prev} to #${m.sequence_number}`);
          const dbm = seqs.get(m.sequence_number);
          if (dbm && (dbm.message_id !== m.message_id || JSON.stringify(dbm.payload) !== JSON.stringify(m.payload))) {
            r.divergent.push(`${reader} got a different ${conv}#${m.sequence_number} than stored`);
          }
          if (!storedIds.has(m.message_id)) r.unexpected.push(`${reader} got ${conv}#${m.sequence_number} (${m.message_id}), never stored`);
          else if (recorded(m.sender_id) && !wasSent(m))
            r.unexpected.push(`${reader} got ${conv}#${m.sequence_number} (${m.sender_id}/${m.idempotency_key}), never sent`);
          seen.add(m.sequence_number);
          prev = Math.max(prev, m.sequence_number);
        }
        for (const s of seqs.keys()) if (!seen.has(s)) r.lost.push(`${reader} never received ${conv}#${s}`);
      }
    }
    const storedByKey = new Map(stored.map((m) => [`${m.sender_id}/${m.idempotency_key}`, m]));
    for (const [id, keys] of this.sendOrder) {
      const sender = id.split('|')[0]!;
      let prev: StoredMessage | null = null;
      for (const key of keys) {
        const m = storedByKey.get(`${sender}/${key}`);
        if (!m || reappended.has(`${sender}/${key}`)) continue;
        if (prev && m.sequence_number < prev.sequence_number) {
          r.senderOrder.push(
            `${sender}/${key} stored as ${m.conversation_id}#${m.sequence_number}, before ${prev.idempotency_key} (#${prev.sequence_number}) sent earlier`,
          );
        }
        prev = m;
      }
    }
    const windows = opts.fillWindows;
    if (windows) {
      for (const [reader, convs] of this.received) {
        for (const [conv, got] of convs) {
          for (const { m, via, atMs } of got) {
            if (via === 'fill' && !windows.some(([a, b]) => atMs >= a && atMs <= b)) {
              r.fillsOutsideWindows.push(`${reader} got ${conv}#${m.sequence_number} by fill at ${new Date(atMs).toISOString()}`);
            }
          }
        }
      }
    }
    return r;
  }
}

/** A report with no findings. */
export function emptyReport(): HistoryReport {
  return {
    lost: [],
    duplicated: [],
    reordered: [],
    gapped: [],
    divergent: [],
    senderOrder: [],
    unexpected: [],
    conflictingAcks: [],
    unsent: [],
    fillsOutsideWindows: [],
  };
}

/** What a clean run's report equals (`expect(report).toEqual(CLEAN_REPORT)` shows every finding on failure). */
export const CLEAN_REPORT: Readonly<HistoryReport> = Object.freeze(emptyReport());

export function isClean(r: HistoryReport): boolean {
  return Object.values(r).every((v) => v.length === 0);
}
