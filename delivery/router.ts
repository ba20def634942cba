/**
 * Delivery: turns event records into deliveries for gateway nodes. The same router runs in-process
 * (embedded mode, sink = the local gateway) and in delivery workers (sink = the gateway delivery
 * topic). It decodes, drops duplicates by (conversation_id, sequence), and decides the recipients
 * it can name without a lookup (members_added names them); `recipients: null` means "every member",
 * resolved by the gateway node from its membership cache.
 */
import type { EventRecord, ChatEvent } from '../common/events.js';
import type { DeliverySink } from '../common/delivery.js';
import { decodeEvent, EventDecodeError } from '../common/events.js';
import type { Logger } from '../common/log.js';
import type { Metrics } from '../common/metrics.js';
import { SequenceDedup } from './sequence-dedup.js';

export interface DeliveryRouterDeps {
  sink: DeliverySink;
  log: Logger;
  metrics: Metrics;
  /** Conversations remembered for dedup (LRU). */
  dedupEntries: number;
  /** Records that cannot be decoded: never dropped silently (metric + log; Kafka mode dead-letters them). */
  onUndecodable(record: EventRecord, reason: string): Promise<void>;
}

export function createDeliveryRouter(deps: DeliveryRouterDeps) {
  const { sink, log, metrics } = deps;
  const dedup = new SequenceDedup(deps.dedupEntries);

  async function route(record: EventRecord): Promise<void> {
    let event: ChatEvent | null;
    try {
      event = decodeEvent(JSON.parse(record.value));
    } catch (err) {
      const reason = err instanceof EventDecodeError || err instanceof SyntaxError ? err.message : String(err);
      await deps.onUndecodable(record, reason);
      return;
    }
    if (!event) {
      log.debug({ type: record.type, trace_id: record.traceId }, 'skipping event type unknown to this version');
      return;
    }
    if (event.type === 'message.created' && dedup.seen(event.conversation_id, event.message.sequence_number)) {
      metrics.duplicatesSkipped.inc();
      return;
    }
    await sink.deliver(
      { recipients: event.type === 'conversation.members_added' ? event.user_ids : null, event, traceId: record.traceId },
      record,
    );
    if (event.type === 'message.created') dedup.mark(event.conversation_id, event.message.sequence_number);
  }

  return {
    /** Records of one key arrive in order; processing is sequential to keep that order. */
    async handle(records: EventRecord[]): Promise<void> {
      for (const r of records) await route(r);
    },
    route,
    /** The sink failed after accepting some deliveries: forget dedup marks so they flow again. */
    forgetDedup: () => dedup.reset(),
  };
}
