/**
 * Delivery: turns event records into deliveries for gateway nodes. The same router runs in-process
 * (embedded mode, sink = the local gateway) and in delivery workers (which route a whole batch at
 * once: recipient-routing.ts). It decodes, drops duplicates by (conversation_id, sequence), and
 * names the recipients it can without a lookup (members_added names them); `recipients: null`
 * means "every member".
 */
import type { EventRecord, ChatEvent } from '../common/events.js';
import type { Delivery, DeliverySink } from '../common/delivery.js';
import { decodeEvent, entryOf, EventDecodeError } from '../common/events.js';
import type { Logger } from '../common/log.js';
import type { Metrics } from '../common/metrics.js';
import { SequenceDedup } from './sequence-dedup.js';

export interface DeliveryRouterDeps {
  log: Logger;
  metrics: Metrics;
  /** Conversations remembered for dedup (LRU). */
  dedupEntries: number;
}

/** One record of a batch, classified. */
export type Routed =
  | { kind: 'delivery'; delivery: Delivery; record: EventRecord }
  | { kind: 'undecodable'; record: EventRecord; reason: string };

export interface DeliveryRouter {
  /**
   * Decodes a batch in order and drops what was already handed over (earlier batches) or appears
   * twice in it. Unknown event types (a newer producer) are skipped; undecodable records are
   * returned as such, never dropped silently.
   */
  prepare(records: readonly EventRecord[]): Routed[];
  /** After a batch's deliveries were handed over: remember their sequences (dedup). */
  commit(routed: readonly Routed[]): void;
  /** A hand-over failed part way: forget every mark, so everything flows again (connections dedup too). */
  forgetDedup(): void;
  /** In-process: hands each delivery of the batch to `sink` in order. */
  handle(
    records: readonly EventRecord[],
    sink: DeliverySink,
    onUndecodable: (record: EventRecord, reason: string) => Promise<void>,
  ): Promise<void>;
}

export function createDeliveryRouter(deps: DeliveryRouterDeps): DeliveryRouter {
  const { log, metrics } = deps;
  const dedup = new SequenceDedup(deps.dedupEntries);

  /** An event, null (a type this version does not know), or why the record is undecodable. */
  function decode(record: EventRecord): { event: ChatEvent | null } | { undecodable: string } {
    try {
      return { event: decodeEvent(JSON.parse(record.value)) };
    } catch (err) {
      return { undecodable: err instanceof EventDecodeError || err instanceof SyntaxError ? err.message : String(err) };
    }
  }

  const sequenceOf = (e: ChatEvent): number | null => entryOf(e)?.sequence_number ?? null;

  function prepare(records: readonly EventRecord[]): Routed[] {
    const out: Routed[] = [];
    // Highest sequence already taken in this batch, per conversation (duplicates inside a batch).
    const taken = new Map<string, number>();
    for (const record of records) {
      const decoded = decode(record);
      if ('undecodable' in decoded) {
        out.push({ kind: 'undecodable', record, reason: decoded.undecodable });
        continue;
      }
      const event = decoded.event;
      if (event === null) {
        log.debug({ type: record.type, trace_id: record.traceId }, 'skipping event type unknown to this version');
        continue;
      }
      if (event.type === 'conversation.rehomed') {
        // The new home numbers the entries after the takeover point again: the old home's numbers
        // above it are not duplicates of them (the gateways rewind their connections).
        const conv = event.conversation_id;
        dedup.rewind(conv, event.takeover_sequence);
        if ((taken.get(conv) ?? 0) > event.takeover_sequence) taken.set(conv, event.takeover_sequence);
      }
      const seq = sequenceOf(event);
      if (seq !== null) {
        const conv = event.conversation_id;
        if (dedup.seen(conv, seq) || seq <= (taken.get(conv) ?? 0)) {
          metrics.duplicatesSkipped.inc();
          continue;
        }
        taken.set(conv, seq);
      }
      // The creation's members_added (no entry) goes to the members it names; every timeline entry,
      // a later members_added included, to every member.
      const recipients = event.type === 'conversation.members_added' && !event.message ? event.user_ids : null;
      out.push({ kind: 'delivery', delivery: { recipients, event, traceId: record.traceId }, record });
    }
    return out;
  }

  function commit(routed: readonly Routed[]): void {
    for (const r of routed) {
      if (r.kind !== 'delivery') continue;
      const seq = sequenceOf(r.delivery.event);
      if (seq !== null) dedup.mark(r.delivery.event.conversation_id, seq);
    }
  }

  return {
    prepare,
    commit,
    forgetDedup: () => dedup.reset(),
    async handle(records, sink, onUndecodable) {
      const routed = prepare(records);
      if (sink.prepare) await sink.prepare(routed.flatMap((r) => (r.kind === 'delivery' ? [r.delivery] : [])));
      for (const r of routed) {
        if (r.kind === 'undecodable') await onUndecodable(r.record, r.reason);
        else {
          await sink.deliver(r.delivery, r.record);
          commit([r]);
        }
      }
    },
  };
}
