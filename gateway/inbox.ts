import type { Delivery } from '../common/delivery.js';
import type { MembershipCache } from '../common/membership.js';
import { encodeFrame } from '../common/protocol.js';
import type { Metrics } from '../common/metrics.js';
import type { ConnectionRegistry } from './registry.js';
import type { EphemeralDelivery } from '../common/node-records.js';

export interface GatewayInbox {
  deliver(d: Delivery): Promise<void>;
  /** Typing from another node: best effort, never stored. */
  ephemeral(d: EphemeralDelivery): void;
}

/** The node side of delivery: resolves recipients if needed and renders events into frames. */
export function createGatewayInbox(registry: ConnectionRegistry, membership: MembershipCache, metrics: Metrics): GatewayInbox {
  return {
    async deliver({ recipients, event }: Delivery) {
      switch (event.type) {
        case 'message.created':
          if (registry.deliverMessage(recipients ?? (await membership.members(event.conversation_id)), event.message) > 0) {
            // End to end: commit (created_at) to the frame handed to this node's sockets.
            metrics.pipelineSeconds.observe({ stage: 'written' }, (Date.now() - Date.parse(event.message.created_at)) / 1000);
          }
          break;
        case 'conversation.members_added':
          membership.add(event.conversation_id, event.user_ids);
          registry.join(recipients ?? event.user_ids, event.conversation_id, event.last_sequence);
          break;
        case 'conversation.read':
          registry.deliverFrame(
            recipients ?? (await membership.members(event.conversation_id)),
            encodeFrame({
              type: 'receipt',
              conversation_id: event.conversation_id,
              user_id: event.user_id,
              read_sequence: event.read_sequence,
            }),
            { conversationId: event.conversation_id },
          );
          break;
      }
    },
    ephemeral(d) {
      const frame = JSON.stringify(d.frame);
      const send = (users: Iterable<string>) =>
        registry.deliverFrame(users, frame, { exceptUser: d.except_user, conversationId: d.conversation_id });
      if (d.recipients) send(d.recipients);
      else membership.members(d.conversation_id).then(send, () => {});
    },
  };
}
