/**
 * Delivery: turns events from the bus into deliveries for the gateway nodes that hold recipients.
 * In embedded mode there is one node (the local inbox); the presence-routed version sends each
 * delivery to the nodes that hold the users (see docs/architecture.md).
 */
import type { EventRecord, ChatEvent } from '../common/events.js';
import { decodeEvent, EventDecodeError } from '../common/events.js';
import type { Logger } from '../common/log.js';
import type { MembershipCache } from './membership-cache.js';

export interface Delivery {
  /** Users to hand the event to; the node renders frames and enforces per-connection order. */
  userIds: Iterable<string>;
  event: ChatEvent;
  traceId: string | null;
}

export interface GatewayInbox {
  deliver(d: Delivery): void;
}

export interface DeliveryRouterDeps {
  membership: MembershipCache;
  inbox: GatewayInbox;
  log: Logger;
  /** Records that cannot be decoded: never dropped silently (a metric counts them; Kafka mode dead-letters them). */
  onUndecodable(record: EventRecord, reason: string): Promise<void>;
}

export function createDeliveryRouter(deps: DeliveryRouterDeps) {
  const { membership, inbox, log } = deps;

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
    const traceId = record.traceId;
    switch (event.type) {
      case 'message.created':
        inbox.deliver({ userIds: await membership.members(event.conversation_id), event, traceId });
        break;
      case 'conversation.members_added':
        membership.add(event.conversation_id, event.user_ids);
        inbox.deliver({ userIds: event.user_ids, event, traceId });
        break;
      case 'conversation.read':
        inbox.deliver({ userIds: await membership.members(event.conversation_id), event, traceId });
        break;
    }
  }

  return {
    /** Records of one key arrive in order; processing is sequential to keep that order. */
    async handle(records: EventRecord[]): Promise<void> {
      for (const r of records) await route(r);
    },
  };
}
