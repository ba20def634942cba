import type { Delivery, GatewayInbox } from '../delivery/router.js';
import { encodeFrame } from '../common/protocol.js';
import type { ConnectionRegistry } from './registry.js';

/** The node side of delivery: renders events into frames for local connections. */
export function createLocalInbox(registry: ConnectionRegistry): GatewayInbox {
  return {
    deliver({ userIds, event }: Delivery) {
      switch (event.type) {
        case 'message.created':
          registry.deliverMessage(userIds, event.message);
          break;
        case 'conversation.members_added':
          registry.join(userIds, event.conversation_id, event.last_sequence);
          break;
        case 'conversation.read':
          registry.deliverFrame(
            userIds,
            encodeFrame({ type: 'receipt', conversation_id: event.conversation_id, user_id: event.user_id, read_sequence: event.read_sequence }),
            { conversationId: event.conversation_id },
          );
          break;
      }
    },
  };
}
