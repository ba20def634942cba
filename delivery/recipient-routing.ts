/**
 * Where a delivery goes: with a presence registry, to the topic of each live node that holds one of
 * the recipients (with just those recipients); without one, or while it fails (circuit open), to the
 * broadcast topic every node reads. Switching paths cannot reorder what a client sees: connections
 * drop duplicates and fill gaps by sequence.
 */
import type { OutRecord } from '../common/kafka/index.js';
import type { EventRecord } from '../common/events.js';
import { EVENT_HEADERS, encodeDeliveryValue, nodeTopic } from '../common/events.js';
import type { PresenceRegistry } from '../common/presence.js';
import type { CircuitBreaker } from '../common/breaker.js';
import type { Logger } from '../common/log.js';
import type { Metrics } from '../common/metrics.js';
import type { MembershipCache } from '../common/membership.js';
import type { Delivery } from '../common/delivery.js';

export type Outgoing = Map<string, OutRecord[]>;

export function createRecipientRouting(deps: {
  presence: PresenceRegistry | null;
  membership: MembershipCache | null;
  breaker: CircuitBreaker;
  broadcastTopic: string;
  log: Logger;
  metrics: Metrics;
}) {
  const { presence, membership, breaker, metrics } = deps;
  const push = (out: Outgoing, topic: string, r: OutRecord) => {
    const list = out.get(topic);
    if (list) list.push(r);
    else out.set(topic, [r]);
  };

  return async function route(d: Delivery, source: EventRecord, out: Outgoing): Promise<void> {
    const headers = {
      [EVENT_HEADERS.type]: source.type,
      [EVENT_HEADERS.eventId]: source.eventId,
      ...(source.traceId ? { [EVENT_HEADERS.traceId]: source.traceId } : {}),
    };
    if (presence && membership && !breaker.open) {
      try {
        const users = d.recipients ?? [...(await membership.members(d.event.conversation_id))];
        for (const [node, list] of await presence.locate(users)) {
          push(out, nodeTopic(node), { key: source.key, value: encodeDeliveryValue(list, source.value), headers });
        }
        return;
      } catch (err) {
        breaker.trip();
        metrics.presenceFallbacks.inc();
        deps.log.warn({ err, conversation_id: d.event.conversation_id }, 'recipient lookup failed: broadcasting to every node');
      }
    }
    push(out, deps.broadcastTopic, { key: source.key, value: encodeDeliveryValue(d.recipients, source.value), headers });
  };
}
