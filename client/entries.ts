/**
 * Timeline entries by kind (protocol v1.1): every envelope a conversation delivers is one of these.
 * `toEntry` checks the payload's shape; an entry of a kind this SDK does not know (a later server's),
 * or whose payload does not have the documented shape, becomes `{ kind: 'unknown' }` with the
 * envelope, so applications can ignore it safely.
 */
import type { Envelope, Role } from './types.js';

interface Base {
  /** The envelope as delivered (`sender_id` is the actor). */
  envelope: Envelope;
  conversation_id: string;
  sequence_number: number;
  sender_id: string;
  created_at: string;
}

/** A plain message (the envelope has no `kind`, or `kind: "message"`). */
export interface MessageEntry extends Base {
  kind: 'message';
  message_id: string;
  payload: unknown;
  /** Set when read from history after an edit (the payload is then the latest). */
  edited_at?: string;
  /** True when read from history after its deletion (the payload is then null). */
  deleted: boolean;
}

export interface EditEntry extends Base {
  kind: 'edit';
  ref_message_id: string;
  /** The new payload (null once the message was deleted: erased with it). */
  payload: unknown;
}

export interface DeleteEntry extends Base {
  kind: 'delete';
  ref_message_id: string;
}

export interface MembersAddedEntry extends Base {
  kind: 'members_added';
  user_ids: string[];
  by: string;
}

export interface MembersRemovedEntry extends Base {
  kind: 'members_removed';
  user_ids: string[];
  by: string;
  reason: 'left' | 'removed' | (string & {});
}

export interface RoleChangedEntry extends Base {
  kind: 'role_changed';
  user_id: string;
  role: Role | (string & {});
  by: string;
}

/** A kind this SDK does not know, or a malformed entry: ignore it (its sequence still counts). */
export interface UnknownEntry extends Base {
  kind: 'unknown';
  /** The envelope's `kind` as sent. */
  original_kind: string;
}

export type TimelineEntry =
  | MessageEntry
  | EditEntry
  | DeleteEntry
  | MembersAddedEntry
  | MembersRemovedEntry
  | RoleChangedEntry
  | UnknownEntry;

const isStr = (v: unknown): v is string => typeof v === 'string';
const isStrArray = (v: unknown): v is string[] => Array.isArray(v) && v.every(isStr);
const obj = (v: unknown): Record<string, unknown> | null =>
  typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : null;

/** The typed form of an envelope. Never throws. */
export function toEntry(env: Envelope): TimelineEntry {
  const base: Base = {
    envelope: env,
    conversation_id: env.conversation_id,
    sequence_number: env.sequence_number,
    sender_id: env.sender_id,
    created_at: env.created_at,
  };
  const kind: unknown = (env as { kind?: unknown }).kind;
  const unknown = (): UnknownEntry => ({ ...base, kind: 'unknown', original_kind: String(kind) });
  const p = obj(env.payload);
  switch (kind) {
    case undefined:
    case null:
    case 'message':
      return {
        ...base,
        kind: 'message',
        message_id: env.message_id,
        payload: env.payload,
        ...(isStr(env.edited_at) ? { edited_at: env.edited_at } : {}),
        deleted: env.deleted === true,
      };
    case 'edit':
      return isStr(env.ref_message_id) ? { ...base, kind: 'edit', ref_message_id: env.ref_message_id, payload: env.payload } : unknown();
    case 'delete':
      return isStr(env.ref_message_id) ? { ...base, kind: 'delete', ref_message_id: env.ref_message_id } : unknown();
    case 'members_added':
      return p && isStrArray(p.user_ids)
        ? { ...base, kind: 'members_added', user_ids: p.user_ids, by: isStr(p.by) ? p.by : env.sender_id }
        : unknown();
    case 'members_removed':
      return p && isStrArray(p.user_ids)
        ? {
            ...base,
            kind: 'members_removed',
            user_ids: p.user_ids,
            by: isStr(p.by) ? p.by : env.sender_id,
            reason: isStr(p.reason) ? p.reason : 'removed',
          }
        : unknown();
    case 'role_changed':
      return p && isStr(p.user_id) && isStr(p.role)
        ? { ...base, kind: 'role_changed', user_id: p.user_id, role: p.role, by: isStr(p.by) ? p.by : env.sender_id }
        : unknown();
    default:
      return unknown();
  }
}
