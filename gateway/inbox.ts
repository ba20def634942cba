import type { Delivery } from '../common/delivery.js';
import type { Audience, MembershipCache } from '../common/membership.js';
import { encodeFrame } from '../common/protocol.js';
import type { Metrics } from '../common/metrics.js';
import type { ConnectionRegistry } from './registry.js';
import type { EphemeralDelivery } from '../common/node-records.js';
import { entryOf, membershipSequence, receiptOf, type ReadUpdated } from '../common/events.js';
import { SpanKind, noTracing, type Tracing } from '../common/tracing.js';
import { carriesTrace } from '../common/trace-id.js';

export interface GatewayInbox {
  deliver(d: Delivery): Promise<void>;
  /** Loads the member lists a batch of deliveries will need, together (DeliverySink.prepare). */
  prepare(deliveries: readonly Delivery[]): Promise<void>;
  /** Typing from another node: best effort, never stored. */
  ephemeral(d: EphemeralDelivery): void;
}

/** The node side of delivery: resolves recipients if needed and renders events into frames. */
export function createGatewayInbox(
  registry: ConnectionRegistry,
  membership: MembershipCache,
  metrics: Metrics,
  tracing: Tracing = noTracing(),
): GatewayInbox {
  /** `known`: the audience the caller already resolved for this delivery (a send's message), if any. */
  async function deliverReceipt(event: ReadUpdated, recipients: readonly string[] | null, known: Audience | null = null): Promise<void> {
    const conv = event.conversation_id;
    const frame = encodeFrame({ type: 'receipt', conversation_id: conv, user_id: event.user_id, read_sequence: event.read_sequence });
    // In a large room a read mark goes to the reader's own connections only (their unread counts).
    const audience = recipients ? null : (known ?? (await membership.audience(conv)));
    const to = audience?.large ? [event.user_id] : (recipients ?? audience!.members);
    registry.deliverFrame(to, frame, { conversationId: conv });
  }

  return {
    async prepare(deliveries) {
      const unnamed = deliveries.filter((d) => d.recipients === null).map((d) => d.event.conversation_id);
      if (unnamed.length > 0) await membership.audiences(unnamed);
    },
    async deliver({ recipients, event, traceId }: Delivery) {
      const conv = event.conversation_id;
      if (event.type === 'conversation.read') {
        await deliverReceipt(event, recipients);
        return;
      }
      if (event.type === 'conversation.rehomed') {
        // Connections that were sent the old home's entries above the takeover point are rewound.
        const audience = recipients ? null : await membership.audience(conv);
        registry.rehome(recipients ?? (audience!.large ? null : audience!.members), conv, event.takeover_sequence);
        return;
      }
      if (event.type === 'conversation.members_added') {
        membership.add(conv, event.user_ids, event.large === true, membershipSequence(event)!);
        if (event.large) registry.knowLarge(conv);
        // The added members connected here start just before the entry (or at the creation's
        // sequence 0), if they are members now: a replayed or redelivered old addition must not
        // subscribe someone removed since (asked of the database: this node's list may be stale).
        const candidates = event.user_ids.filter((u) => (!recipients || recipients.includes(u)) && registry.hasUser(u));
        if (candidates.length > 0)
          registry.join(await membership.membersNow(conv, candidates), conv, event.last_sequence, event.large === true);
      }
      const entry = entryOf(event);
      if (!entry) return;
      // From the hand-over to this node until the frame is written to its sockets.
      const span =
        tracing.enabled && carriesTrace(traceId)
          ? tracing.start('deliver', traceId, SpanKind.CONSUMER, { 'realchat.conversation_id': conv })
          : null;
      // Named recipients (routed by presence), else the members here, else (a large room) whoever subscribed.
      let audience: Audience | null = null;
      try {
        if (!recipients) audience = await membership.audience(conv);
      } catch (err) {
        span?.end(err);
        throw err;
      }
      let to: Iterable<string> | null = recipients ?? (audience!.large ? null : audience!.members);
      if (event.type === 'conversation.members_removed') {
        // The removed members get their removal too; their connections then unsubscribe (connection.ts).
        if (to) to = new Set([...to, ...(recipients ? [] : event.user_ids)]);
        membership.remove(conv, event.user_ids, event.message.sequence_number);
      }
      const written = to ? registry.deliverMessage(to, entry) : registry.deliverToRoom(conv, entry);
      if (written > 0) {
        // End to end: commit (created_at, ms precision) to the frame handed to this node's sockets.
        const seconds = (Date.now() - Date.parse(entry.created_at)) / 1000;
        metrics.pipelineSeconds.observe({ stage: 'written' }, seconds);
        metrics.endToEndSeconds.observe(seconds);
      }
      if (span) {
        span.set('realchat.sequence', entry.sequence_number);
        span.set('realchat.connections', written);
        span.end();
      }
      // v1.5: the send's receipt rides on its message; clients still get it as a frame of its own, after the message.
      const receipt = event.type === 'message.created' ? receiptOf(event) : null;
      if (receipt) await deliverReceipt(receipt, recipients, audience);
    },
    ephemeral(d) {
      const frame = JSON.stringify(d.frame);
      if (d.recipients) {
        registry.deliverFrame(d.recipients, frame, { exceptUser: d.except_user, conversationId: d.conversation_id });
        return;
      }
      membership.audience(d.conversation_id).then(
        (a) =>
          a.large
            ? registry.roomFrame(d.conversation_id, frame, d.except_user)
            : registry.deliverFrame(a.members, frame, { exceptUser: d.except_user, conversationId: d.conversation_id }),
        () => {},
      );
    },
  };
}
