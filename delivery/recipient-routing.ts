/**
 * Where a batch of deliveries goes: with a presence registry, to the topic of each live node that
 * holds any of the recipients (for a large room: each node with a subscriber of the room), as one
 * record per node carrying that node's share of every delivery (in stream order); without one, or while it fails (circuit open), to the broadcast topic every
 * node reads. Member lists and presence are looked up once per batch (one query for the conversations
 * not cached, one pipelined registry round trip for all recipients), never per event. Switching
 * paths cannot reorder what a client sees: connections drop duplicates and fill gaps by sequence.
 */
import type { OutRecord } from '../common/kafka/index.js';
import type { Delivery } from '../common/delivery.js';
import { membershipSequence, type EventRecord } from '../common/events.js';
import { encodeNodeBatch, nodeTopic, type NodeDelivery } from '../common/node-records.js';
import type { PresenceRegistry } from '../common/presence.js';
import type { CircuitBreaker } from '../common/breaker.js';
import type { Logger } from '../common/log.js';
import type { Metrics } from '../common/metrics.js';
import type { Audience, MembershipCache } from '../common/membership.js';

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

  /**
   * Who each delivery goes to, in order, applying the batch's own membership changes as they come:
   * named users (a list), or `room` for an event of a large room (its subscribed nodes).
   */
  async function recipientsInOrder(batch: readonly RoutedDelivery[], members: MembershipCache): Promise<Array<readonly string[] | 'room'>> {
    const needed = [...new Set(batch.filter((b) => b.delivery.recipients === null).map((b) => b.delivery.event.conversation_id))];
    // A working copy per conversation once the batch changes it; until then the cached entry.
    const view = new Map<string, Audience>(await members.audiences(needed));
    return batch.map(({ delivery: d }) => {
      const conv = d.event.conversation_id;
      const before = view.get(conv);
      const seq = membershipSequence(d.event);
      // A change the loaded membership already reflects (a replay, a redelivery) changes nothing.
      const fresh = seq !== null && seq > (before?.seq ?? Number.NEGATIVE_INFINITY);
      if (d.event.type === 'conversation.members_added' && fresh) {
        if (d.event.large) view.set(conv, { large: true, seq: seq! });
        else if (!before?.large)
          view.set(conv, { large: false, members: new Set([...(before?.members ?? []), ...d.event.user_ids]), seq: seq! });
      }
      if (d.event.type === 'conversation.members_removed' && !before?.large) {
        // The removed members receive their removal (every client learns it), then nothing more.
        const removed = new Set(d.event.user_ids);
        if (fresh)
          view.set(conv, { large: false, members: new Set([...(before?.members ?? [])].filter((u) => !removed.has(u))), seq: seq! });
        if (!d.recipients) return [...new Set([...(before?.members ?? []), ...d.event.user_ids])];
      }
      if (d.recipients) return d.recipients;
      const a = view.get(conv);
      if (!a?.large) return [...(a?.members ?? [])];
      // A read mark in a large room goes to the reader's own connections only.
      return d.event.type === 'conversation.read' ? [d.event.user_id] : 'room';
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
    // Membership changes reach the cache whatever path the batch takes, once the batch's recipients
    // were resolved from the state before it: an entry before a change goes to the members before it.
    const learn = () => {
      for (const { delivery: d } of batch) {
        const seq = membershipSequence(d.event);
        if (d.event.type === 'conversation.members_added')
          membership?.add(d.event.conversation_id, d.event.user_ids, d.event.large === true, seq!);
        if (d.event.type === 'conversation.members_removed') membership?.remove(d.event.conversation_id, d.event.user_ids, seq!);
      }
    };
    if (!presence || !membership || !breaker.allow()) {
      learn();
      return broadcast(batch, key);
    }
    try {
      let recipients: Array<readonly string[] | 'room'>;
      try {
        recipients = await recipientsInOrder(batch, membership);
      } finally {
        learn();
      }
      const users = new Set<string>();
      const rooms = new Set<string>();
      batch.forEach(({ delivery: d }, i) => {
        const r = recipients[i]!;
        if (r === 'room') rooms.add(d.event.conversation_id);
        else for (const u of r) users.add(u);
      });
      const [located, roomNodes] = await Promise.all([presence.locate(users), presence.roomNodes(rooms)]);
      const nodesOf = new Map<string, string[]>();
      for (const [node, list] of located) {
        for (const u of list) {
          const l = nodesOf.get(u);
          if (l) l.push(node);
          else nodesOf.set(u, [node]);
        }
      }
      const perNode = new Map<string, NodeDelivery[]>();
      const add = (node: string, entry: NodeDelivery) => {
        const list = perNode.get(node);
        if (list) list.push(entry);
        else perNode.set(node, [entry]);
      };
      const interest: Array<Promise<void>> = [];
      batch.forEach(({ delivery: d, record }, i) => {
        const r = recipients[i]!;
        const conv = d.event.conversation_id;
        if (r === 'room') {
          // Every node with a subscriber delivers to its own subscribers.
          for (const node of roomNodes.get(conv) ?? []) add(node, { recipients: null, eventJson: record.value, traceId: d.traceId });
          return;
        }
        const byNode = new Map<string, string[]>();
        for (const u of r) {
          for (const node of nodesOf.get(u) ?? []) {
            const list = byNode.get(node);
            if (list) list.push(u);
            else byNode.set(node, [u]);
          }
        }
        for (const [node, list] of byNode) {
          add(node, { recipients: list, eventJson: record.value, traceId: d.traceId });
          if (d.event.type === 'conversation.members_added' && d.event.large) {
            // The node of a member just added to a large room wants the room's messages from now
            // on, before it has said so itself: record it, for this batch and the next ones.
            const nodes = roomNodes.get(conv) ?? [];
            if (!nodes.includes(node)) roomNodes.set(conv, [...nodes, node]);
            interest.push(presence.setRoomInterest(node, conv, true));
          }
        }
      });
      await Promise.all(interest);
      const out: Outgoing = new Map();
      for (const [node, deliveries] of perNode) out.set(nodeTopic(node), [{ key, value: encodeNodeBatch(deliveries), headers: {} }]);
      breaker.success();
      return out;
    } catch (err) {
      breaker.failure();
      metrics.presenceFallbacks.inc(batch.length);
      deps.log.warn({ err, events: batch.length }, 'recipient lookup failed: broadcasting to every node');
      return broadcast(batch, key);
    }
  };
}
