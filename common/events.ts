/**
 * The event stream's value schema, version 1 (docs/events.md). The same JSON is the outbox row's
 * `payload`, the Kafka record value (TS relay or Debezium), and what delivery consumes.
 * Kafka key = conversation_id. Additive changes only within v1; consumers ignore unknown types and fields.
 */
import { randomUUID } from 'node:crypto';
import type { Envelope } from './protocol.js';
import { isPlainObject, isUuid } from './validate.js';

export const EVENT_SCHEMA_VERSION = 1;

interface EventBase {
  schema_version: 1;
  event_id: string;
  conversation_id: string;
  occurred_at: string;
}

export interface MessageCreated extends EventBase {
  type: 'message.created';
  message: Envelope;
}

export interface MembersAdded extends EventBase {
  type: 'conversation.members_added';
  user_ids: string[];
  added_by: string;
  /** The conversation's last sequence when the members were added: they receive live messages after it. */
  last_sequence: number;
  /** The conversation is a large room (delivered by room interest); absent means false. Added in v1.1. */
  large?: boolean;
}

export interface ReadUpdated extends EventBase {
  type: 'conversation.read';
  user_id: string;
  read_sequence: number;
}

export type ChatEvent = MessageCreated | MembersAdded | ReadUpdated;
export type ChatEventType = ChatEvent['type'];

function base(conversationId: string, occurredAt: string = new Date().toISOString()): EventBase {
  return { schema_version: EVENT_SCHEMA_VERSION, event_id: randomUUID(), conversation_id: conversationId, occurred_at: occurredAt };
}

// message.created events are built by the database in the transaction that writes the message
// (sql/migrations/0004_send_batch.sql) and by the outbox replay (common/outbox.ts).

export function membersAddedEvent(
  conversationId: string,
  userIds: string[],
  addedBy: string,
  lastSequence: number,
  large: boolean,
): MembersAdded {
  return {
    ...base(conversationId),
    type: 'conversation.members_added',
    user_ids: userIds,
    added_by: addedBy,
    last_sequence: lastSequence,
    ...(large ? { large } : {}),
  };
}

export function readUpdatedEvent(conversationId: string, userId: string, readSequence: number): ReadUpdated {
  return { ...base(conversationId), type: 'conversation.read', user_id: userId, read_sequence: readSequence };
}

/**
 * What the bus carries, shaped like a Kafka record: key = conversation_id, value = the event's JSON
 * text exactly as stored in the outbox, and the metadata that travels as headers. Consumers decode
 * the value with decodeEvent(), whichever producer (TS relay or Debezium) wrote it.
 */
export interface EventRecord {
  key: string;
  value: string;
  type: string;
  eventId: string;
  /**
   * The event's trace: a W3C traceparent (the context to continue), or a bare trace id, or an
   * opaque id from an older writer (common/trace-id.ts traceIdOf gives the id for logs).
   */
  traceId: string | null;
}

export class EventDecodeError extends Error {
  override name = 'EventDecodeError';
}

function fail(msg: string): never {
  throw new EventDecodeError(msg);
}

function isEnvelope(v: unknown): v is Envelope {
  return (
    isPlainObject(v) &&
    isUuid(v.message_id) &&
    isUuid(v.conversation_id) &&
    isUuid(v.sender_id) &&
    Number.isSafeInteger(v.sequence_number) &&
    (v.sequence_number as number) >= 1 &&
    'payload' in v &&
    typeof v.created_at === 'string' &&
    typeof v.idempotency_key === 'string'
  );
}

/**
 * Validates an event read from the bus. Returns null for event types this version does not know
 * (a newer producer): those are skipped, not dead-lettered.
 */
export function decodeEvent(raw: unknown): ChatEvent | null {
  if (!isPlainObject(raw)) fail('event must be a JSON object');
  if (raw.schema_version !== EVENT_SCHEMA_VERSION) fail(`unsupported schema_version ${String(raw.schema_version)}`);
  if (!isUuid(raw.event_id) || !isUuid(raw.conversation_id) || typeof raw.occurred_at !== 'string')
    fail('event_id, conversation_id, occurred_at required');
  switch (raw.type) {
    case 'message.created':
      if (!isEnvelope(raw.message) || raw.message.conversation_id !== raw.conversation_id) fail('message.created needs a valid envelope');
      return raw as unknown as MessageCreated;
    case 'conversation.members_added':
      if (
        !Array.isArray(raw.user_ids) ||
        !raw.user_ids.every(isUuid) ||
        !isUuid(raw.added_by) ||
        !Number.isSafeInteger(raw.last_sequence) ||
        (raw.large !== undefined && typeof raw.large !== 'boolean')
      ) {
        fail('conversation.members_added needs user_ids, added_by, last_sequence');
      }
      return raw as unknown as MembersAdded;
    case 'conversation.read':
      if (!isUuid(raw.user_id) || !Number.isSafeInteger(raw.read_sequence)) fail('conversation.read needs user_id, read_sequence');
      return raw as unknown as ReadUpdated;
    default:
      return null;
  }
}

/** Headers of event records (docs/events.md). */
export const EVENT_HEADERS = {
  type: 'realchat-event-type',
  eventId: 'realchat-event-id',
  traceId: 'trace_id',
  traceparent: 'traceparent',
} as const;
