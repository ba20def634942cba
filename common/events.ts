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
  /**
   * v1.5: the send moved its sender's read position over someone else's message. It stands for
   * the `conversation.read` event earlier versions emitted separately (receiptOf gives it back).
   */
  receipt?: SendReceipt;
}

/** A send's read receipt (v1.5): `user_id` is the sender, `read_sequence` the message's sequence. */
export interface SendReceipt {
  event_id: string;
  user_id: string;
  read_sequence: number;
}

/** A timeline entry other than a plain message (v1.1): `message` is the entry, as clients receive it. */
interface EntryEvent extends EventBase {
  message: Envelope;
}

export interface MessageEdited extends EntryEvent {
  type: 'message.edited';
}

export interface MessageDeleted extends EntryEvent {
  type: 'message.deleted';
  /** The deleted message and its edits: their payloads are erased in the database; mirrors erase them too. */
  erased_message_ids: string[];
}

export interface MembersRemoved extends EntryEvent {
  type: 'conversation.members_removed';
  user_ids: string[];
  removed_by: string;
  reason: 'left' | 'removed';
}

export interface RoleChanged extends EntryEvent {
  type: 'conversation.role_changed';
  user_id: string;
  role: 'owner' | 'admin' | 'member';
  changed_by: string;
}

export interface MembersAdded extends EventBase {
  type: 'conversation.members_added';
  /**
   * The `members_added` timeline entry (v1.1: members added to an existing conversation). Absent on
   * the event of a conversation's creation, whose members start at sequence 0 with no entry.
   */
  message?: Envelope;
  user_ids: string[];
  added_by: string;
  /** The conversation's last sequence when the members were added: they receive live messages after it. */
  last_sequence: number;
  /** The conversation is a large room (delivered by room interest); absent means false. Added in v1.1. */
  large?: boolean;
  /**
   * On the creation's event only (v1.3): what a copy of the conversation needs besides its
   * members (docs/multi-region.md: another region's mirror applier creates its copy from it).
   */
  conversation?: ConversationAttributes;
}

/** The creation's attributes, carried by its `conversation.members_added` event (v1.3). */
export interface ConversationAttributes {
  title: string | null;
  created_by: string;
  created_at: string;
  who_can_add: 'members' | 'admins';
  home_region: string;
}

export interface ReadUpdated extends EventBase {
  type: 'conversation.read';
  user_id: string;
  read_sequence: number;
}

/**
 * A regional failover (v1.3, multi-region, docs/multi-region.md): the conversation's home moved at
 * `takeover_sequence`; entries the old home numbered above it were never mirrored and come back
 * renumbered. Gateways rewind their connections past it (the `rewind` frame, v1.4).
 */
export interface ConversationRehomed extends EventBase {
  type: 'conversation.rehomed';
  home_region: string;
  previous_home_region?: string;
  home_epoch: number;
  takeover_sequence: number;
}

export type ChatEvent =
  | MessageCreated
  | MessageEdited
  | MessageDeleted
  | MembersAdded
  | MembersRemoved
  | RoleChanged
  | ReadUpdated
  | ConversationRehomed;

/**
 * Where a membership change sits in its conversation's timeline: its entry's sequence, or the
 * creation's last_sequence (0). Null for events that change no membership.
 */
export function membershipSequence(e: ChatEvent): number | null {
  if (e.type === 'conversation.members_added') return e.message?.sequence_number ?? e.last_sequence;
  if (e.type === 'conversation.members_removed') return e.message.sequence_number;
  return null;
}

/** The timeline entry an event carries (every event with a sequence), or null (read marks, creation). */
export function entryOf(e: ChatEvent): Envelope | null {
  return 'message' in e && e.message ? e.message : null;
}
export type ChatEventType = ChatEvent['type'];

function base(conversationId: string, occurredAt: string = new Date().toISOString()): EventBase {
  return { schema_version: EVENT_SCHEMA_VERSION, event_id: randomUUID(), conversation_id: conversationId, occurred_at: occurredAt };
}

// Events of timeline entries are built by the database in the transaction that writes the entry
// (message.created: realchat_send_batch; the others: realchat_entry_event, 0008_timeline.sql) and
// by the outbox replay (common/outbox.ts). Only the creation's members_added is built here.

export function membersAddedEvent(
  conversationId: string,
  userIds: string[],
  addedBy: string,
  lastSequence: number,
  large: boolean,
  conversation?: ConversationAttributes,
): MembersAdded {
  return {
    ...base(conversationId),
    type: 'conversation.members_added',
    user_ids: userIds,
    added_by: addedBy,
    last_sequence: lastSequence,
    ...(large ? { large } : {}),
    ...(conversation ? { conversation } : {}),
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
  /**
   * The region the event came from when it was mirrored in from another region's stream (header
   * `realchat-region`, v1.3); absent or null: the region whose topic carries it.
   */
  originRegion?: string | null;
}

export class EventDecodeError extends Error {
  override name = 'EventDecodeError';
}

function fail(msg: string): never {
  throw new EventDecodeError(msg);
}

const ENTRY_KINDS: ReadonlySet<unknown> = new Set(['edit', 'delete', 'members_added', 'members_removed', 'role_changed']);

function isEnvelope(v: unknown, kind?: string): v is Envelope {
  return (
    isPlainObject(v) &&
    isUuid(v.message_id) &&
    isUuid(v.conversation_id) &&
    isUuid(v.sender_id) &&
    Number.isSafeInteger(v.sequence_number) &&
    (v.sequence_number as number) >= 1 &&
    'payload' in v &&
    typeof v.created_at === 'string' &&
    typeof v.idempotency_key === 'string' &&
    // A plain message has no kind; an entry of another kind names it (and what the event says it is).
    (kind === undefined ? v.kind === undefined || v.kind === 'message' || !ENTRY_KINDS.has(v.kind) : v.kind === kind) &&
    (v.ref_message_id === undefined || isUuid(v.ref_message_id))
  );
}

const isUuidList = (v: unknown): v is string[] => Array.isArray(v) && v.every(isUuid);

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
      if (raw.receipt !== undefined && !isSendReceipt(raw.receipt, raw.message))
        fail("message.created's receipt needs event_id, the sender's user_id and the message's sequence");
      return raw as unknown as MessageCreated;
    case 'message.edited':
      if (!entryIn(raw, 'edit') || !isUuid(raw.message.ref_message_id)) fail('message.edited needs an edit entry');
      return raw as unknown as MessageEdited;
    case 'message.deleted':
      if (!entryIn(raw, 'delete') || !isUuid(raw.message.ref_message_id) || !isUuidList(raw.erased_message_ids))
        fail('message.deleted needs a delete entry and erased_message_ids');
      return raw as unknown as MessageDeleted;
    case 'conversation.members_removed':
      if (
        !entryIn(raw, 'members_removed') ||
        !isUuidList(raw.user_ids) ||
        !isUuid(raw.removed_by) ||
        (raw.reason !== 'left' && raw.reason !== 'removed')
      )
        fail('conversation.members_removed needs an entry, user_ids, removed_by, reason');
      return raw as unknown as MembersRemoved;
    case 'conversation.role_changed':
      if (
        !entryIn(raw, 'role_changed') ||
        !isUuid(raw.user_id) ||
        !isUuid(raw.changed_by) ||
        !['owner', 'admin', 'member'].includes(raw.role as string)
      )
        fail('conversation.role_changed needs an entry, user_id, role, changed_by');
      return raw as unknown as RoleChanged;
    case 'conversation.members_added':
      if (
        (raw.message !== undefined && !entryIn(raw, 'members_added')) ||
        !isUuidList(raw.user_ids) ||
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
    case 'conversation.rehomed':
      if (typeof raw.home_region !== 'string' || !Number.isSafeInteger(raw.home_epoch) || !Number.isSafeInteger(raw.takeover_sequence))
        fail('conversation.rehomed needs home_region, home_epoch, takeover_sequence');
      return raw as unknown as ConversationRehomed;
    default:
      return null;
  }
}

function isSendReceipt(v: unknown, m: Envelope): v is SendReceipt {
  return isPlainObject(v) && isUuid(v.event_id) && v.user_id === m.sender_id && v.read_sequence === m.sequence_number;
}

/**
 * The `conversation.read` a send's receipt stands for (v1.5 folds it into the message's event),
 * as a consumer of the v1.4 stream received it; null when the send read nobody else's message.
 */
export function receiptOf(e: MessageCreated): ReadUpdated | null {
  if (!e.receipt) return null;
  return {
    schema_version: 1,
    event_id: e.receipt.event_id,
    type: 'conversation.read',
    conversation_id: e.conversation_id,
    occurred_at: e.occurred_at,
    user_id: e.receipt.user_id,
    read_sequence: e.receipt.read_sequence,
  };
}

/** The event carries a valid entry of `kind` in its own conversation. */
function entryIn(raw: Record<string, unknown>, kind: string): raw is Record<string, unknown> & { message: Envelope } {
  return isEnvelope(raw.message, kind) && raw.message.conversation_id === raw.conversation_id;
}

/** Headers of event records (docs/events.md). */
export const EVENT_HEADERS = {
  type: 'realchat-event-type',
  eventId: 'realchat-event-id',
  traceId: 'trace_id',
  traceparent: 'traceparent',
  region: 'realchat-region',
} as const;
