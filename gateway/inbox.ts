import type { Delivery } from '../common/delivery.js';
import type { MembershipCache } from '../common/membership.js';
import { encodeFrame } from '../common/protocol.js';
import type { Metrics } from '../common/metrics.js';
import type { ConnectionRegistry } from './registry.js';
import type { EphemeralDelivery } from '../common/node-records.js';
import { SpanKind, noTracing, type Tracing } from '../common/tracing.js';
import { carriesTrace } from '../common/trace-id.js';

export interface GatewayInbox {
  deliver(d: Delivery): Promise<void>;
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
  return {
    async deliver({ recipients, event, traceId }: Delivery) {
      const conv = event.conversation_id;
      switch (event.type) {
        case 'message.created': {
          // From the hand-over to this node until the frame is written to its sockets.
          const span =
            tracing.enabled && carriesTrace(traceId)
              ? tracing.start('deliver', traceId, SpanKind.CONSUMER, { 'realchat.conversation_id': conv })
              : null;
          // Named recipients (routed by presence), else the members here, else (a large room) whoever subscribed.
          let audience: Awaited<ReturnType<MembershipCache['audience']>> | null = null;
          try {
            if (!recipients) audience = await membership.audience(conv);
          } catch (err) {
            span?.end(err);
            throw err;
          }
          const written = audience?.large
            ? registry.deliverToRoom(conv, event.message)
            : registry.deliverMessage(recipients ?? audience!.members, event.message);
          if (written > 0) {
            // End to end: commit (created_at, ms precision) to the frame handed to this node's sockets.
            const seconds = (Date.now() - Date.parse(event.message.created_at)) / 1000;
            metrics.pipelineSeconds.observe({ stage: 'written' }, seconds);
            metrics.endToEndSeconds.observe(seconds);
          }
          if (span) {
            span.set('realchat.sequence', event.message.sequence_number);
            span.set('realchat.connections', written);
            span.end();
          }
          break;
        }
        case 'conversation.members_added':
          membership.add(conv, event.user_ids, event.large === true);
          if (event.large) registry.knowLarge(conv);
          registry.join(recipients ?? event.user_ids, conv, event.last_sequence, event.large === true);
          break;
        case 'conversation.read': {
          const frame = encodeFrame({ type: 'receipt', conversation_id: conv, user_id: event.user_id, read_sequence: event.read_sequence });
          // In a large room a read mark goes to the reader's own connections only (their unread counts).
          const audience = recipients ? null : await membership.audience(conv);
          const to = audience?.large ? [event.user_id] : (recipients ?? audience!.members);
          registry.deliverFrame(to, frame, { conversationId: conv });
          break;
        }
      }
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
