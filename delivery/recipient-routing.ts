/**
 * Where a batch of deliveries goes: with a presence registry, to the topic of each live node that
 * holds any of the recipients, as one record per node carrying that node's share of every delivery
 * (in stream order); without one, or while it fails (circuit open), to the broadcast topic every
 * node reads. Member lists and presence are looked up once per batch (one query per conversation
 * not cached, one pipelined registry round trip for all recipients), never per event. Switching
 * paths cannot reorder what a client sees: connections drop duplicates and fill gaps by sequence.
 */
import type { OutRecord } from '../common/kafka/index.js';
import type { Delivery } from '../common/delivery.js';
import type { EventRecord } from '../common/events.js';
import { encodeNodeBatch, nodeTopic, type NodeDelivery } from '../common/node-records.js';
import type { PresenceRegistry } from '../common/presence.js';
import type { CircuitBreaker } from '../common/breaker.js';
import type { Logger } from '../common/log.js';
import type { Metrics } from '../common/metrics.js';
import type { MembershipCache } from '../common/membership.js';

export type Outgoing = Map<string, OutRecord[]>;

export interface RoutedDelivery {
  delivery: Delivery;
  record: EventRecord;
}

export function createRecipientRouting(deps: {
  presence: PresenceRegistry | null;
  membership: MembershipCache | null;
  breaker: CircuitBreaker;
  broadcastTopic: string;
  log: Logger;
  metrics: Metrics;
}) {
  const { presence, membership, breaker, metrics } = deps;

  /** Recipients of each delivery, in order, applying the batch's own membership changes as they come. */
  async function recipientsInOrder(batch: readonly RoutedDelivery[], members: MembershipCache): Promise<Array<readonly string[]>> {
    const needed = [...new Set(batch.filter((b) => b.delivery.recipients === null).map((b) => b.delivery.event.conversation_id))];
    const loaded = await Promise.all(needed.map(async (c) => [c, await members.members(c)] as const));
    // A working copy per conversation once the batch changes it; until then the cached set.
    const view = new Map<string, ReadonlySet<string>>(loaded);
    return batch.map(({ delivery: d }) => {
      const conv = d.event.conversation_id;
      if (d.event.type === 'conversation.members_added') {
        const next = new Set(view.get(conv) ?? []);
        for (const u of d.event.user_ids) next.add(u);
        view.set(conv, next);
      }
      return d.recipients ?? [...(view.get(conv) ?? [])];
    });
  }

  function broadcast(batch: readonly RoutedDelivery[], key: string): Outgoing {
    const deliveries = batch.map(({ delivery: d, record }) => ({ recipients: d.recipients, eventJson: record.value, traceId: d.traceId }));
    return new Map([[deps.broadcastTopic, [{ key, value: encodeNodeBatch(deliveries), headers: {} }]]]);
  }

  /**
   * `key` is the records' Kafka key: every batch of one source partition uses the same key, so the
   * node topic keeps their order (a conversation's events all come from one source partition).
   */
  return async function route(batch: readonly RoutedDelivery[], key: string): Promise<Outgoing> {
    if (batch.length === 0) return new Map();
    // Membership changes reach the cache whatever path the batch takes.
    for (const { delivery: d } of batch)
      if (d.event.type === 'conversation.members_added') membership?.add(d.event.conversation_id, d.event.user_ids);
    if (!presence || !membership || breaker.open) return broadcast(batch, key);
    try {
      const recipients = await recipientsInOrder(batch, membership);
      const located = await presence.locate(new Set(recipients.flat()));
      const nodesOf = new Map<string, string[]>();
      for (const [node, users] of located) {
        for (const u of users) {
          const list = nodesOf.get(u);
          if (list) list.push(node);
          else nodesOf.set(u, [node]);
        }
      }
      const perNode = new Map<string, NodeDelivery[]>();
      batch.forEach(({ delivery: d, record }, i) => {
        const byNode = new Map<string, string[]>();
        for (const u of recipients[i]!) {
          for (const node of nodesOf.get(u) ?? []) {
            const users = byNode.get(node);
            if (users) users.push(u);
            else byNode.set(node, [u]);
          }
        }
        for (const [node, users] of byNode) {
          const list = perNode.get(node);
          const entry = { recipients: users, eventJson: record.value, traceId: d.traceId };
          if (list) list.push(entry);
          else perNode.set(node, [entry]);
        }
      });
      const out: Outgoing = new Map();
      for (const [node, deliveries] of perNode) out.set(nodeTopic(node), [{ key, value: encodeNodeBatch(deliveries), headers: {} }]);
      return out;
    } catch (err) {
      breaker.trip();
      metrics.presenceFallbacks.inc(batch.length);
      deps.log.warn({ err, events: batch.length }, 'recipient lookup failed: broadcasting to every node');
      return broadcast(batch, key);
    }
  };
}
