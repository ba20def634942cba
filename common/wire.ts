/**
 * The v1 wire shapes shared by the server and the SDK (docs/protocol.md): plain types and constants
 * only, no imports, so browsers bundle it as is. The server's decoded forms live in protocol.ts.
 */

/**
 * What a timeline entry is (v1.1). Absent means `message` (every entry of a v1.0 server). Clients
 * must ignore kinds they do not know: more may follow.
 */
export type EntryKind = 'message' | 'edit' | 'delete' | 'members_added' | 'members_removed' | 'role_changed';

export type Role = 'owner' | 'admin' | 'member';

/**
 * One entry of a conversation's timeline. Its identity and place (ids, sequence, sender, time) never
 * change; a plain message read from history shows its current state: the latest edit's payload and
 * `edited_at`, or `deleted: true` with `payload: null` once deleted (the live frame carried the
 * original).
 */
export interface Envelope {
  message_id: string;
  conversation_id: string;
  sender_id: string;
  sequence_number: number;
  /**
   * `message`: the sender's; `edit`: the new payload; `delete`: null; `members_added`:
   * {user_ids, by}; `members_removed`: {user_ids, by, reason: "left" | "removed"};
   * `role_changed`: {user_id, role, by}.
   */
  payload: unknown;
  created_at: string;
  idempotency_key: string;
  /** Absent on plain messages. */
  kind?: EntryKind;
  /** `edit` and `delete`: the message they change. */
  ref_message_id?: string;
  /** A plain message read from history after an edit. */
  edited_at?: string;
  /** A plain message read from history after its deletion (its payload is null). */
  deleted?: true;
}

/**
 * How a `message` frame reached the connection: `live` pushed by the event pipeline as the next
 * sequence; `fill` read from the database because the live path skipped a sequence (the skipped ones,
 * the message that revealed the gap and any that arrived while the fill ran); `resume` read from the
 * database for the catch-up after `hello` (a resume, or messages committed while hello was loading).
 * Outside faults, everything after the catch-up is `live`: a `fill` means the pipeline lost or
 * reordered an event. Absent from servers before this field existed.
 */
export type Via = 'live' | 'fill' | 'resume';

export interface MessageFrame {
  type: 'message';
  message: Envelope;
  via?: Via;
}

export interface Welcome {
  type: 'welcome';
  user_id: string;
  session_id: string;
  node_id: string;
  heartbeat_interval_ms: number;
  protocol_version: number;
}

export interface Ack {
  type: 'ack';
  idempotency_key: string;
  conversation_id: string;
  message_id: string;
  sequence_number: number;
  created_at: string;
  duplicate: boolean;
}

export interface MessagesPage {
  type: 'messages';
  conversation_id: string;
  messages: Envelope[];
  has_more: boolean;
}

export interface Receipt {
  type: 'receipt';
  conversation_id: string;
  user_id: string;
  read_sequence: number;
}

export interface Typing {
  type: 'typing';
  conversation_id: string;
  user_id: string;
}

/**
 * Presence for clients: a watched user's status, sent once per user at presence_subscribe and then
 * on every change. `online`: at least one connection anywhere in the cluster (last_seen_at null);
 * `offline`: none for longer than the server's grace period (a quick reconnect is no change);
 * last_seen_at is when the user's last connection closed (null: never seen).
 */
export interface Presence {
  type: 'presence';
  user_id: string;
  status: 'online' | 'offline';
  last_seen_at: string | null;
}

export interface Synced {
  type: 'synced';
  conversation_id: string;
  last_sequence: number;
}

export interface ErrorFrame {
  type: 'error';
  code: string;
  message: string;
  ref?: string;
  /** A finer reason under the code (common/errors.ts ERROR_REASONS), e.g. `after_refused`. */
  reason?: string;
  /** presence_subscribe: the users refused (`forbidden`: they share no conversation with the caller). */
  user_ids?: string[];
}

/**
 * v1.4, after a regional failover (docs/multi-region.md): the client's position in this
 * conversation came from the lost home's numbering, past the point where the new home took over.
 * Entries after `after_sequence` are renumbered here: the client moves its position back to it,
 * and skips entries whose message id it has already shown (the lost home's acknowledged entries
 * come again, re-appended under new numbers).
 */
export interface Rewind {
  type: 'rewind';
  conversation_id: string;
  after_sequence: number;
  reason: 'rehomed';
}

export type ServerFrame =
  | Welcome
  | Rewind
  | MessageFrame
  | Synced
  | Ack
  | MessagesPage
  | Receipt
  | Typing
  | Presence
  | { type: 'pong' }
  | { type: 'reconnect'; reason: string; retry_after_ms: number }
  | ErrorFrame;

/** Close codes: 4000-4499 the client should reconnect (and resume); 4500-4999 it should not. */
export const CloseCode = {
  draining: 4000,
  idleTimeout: 4001,
  slowConsumer: 4002,
  helloTimeout: 4003,
  resyncFailed: 4004,
  /** Connection cap (per user or per client address) reached: reconnect with backoff. */
  tooManyConnections: 4005,
  unauthorized: 4500,
  protocolViolation: 4501,
  /** The token's `exp` passed while connected: get a fresh token, then reconnect and resume. */
  tokenExpired: 4502,
} as const;

/** GET /v1/conversations entries. */
export interface ConversationSummary {
  conversation_id: string;
  title: string | null;
  last_sequence: number;
  read_sequence: number;
  /** Others' plain messages after read_sequence, not deleted (at most UNREAD_CAP: show "999+"). */
  unread: number;
  /** The caller's role (v1.1). */
  role: Role;
  /** The region that numbers its entries, and how often it was re-homed (v1.3, docs/multi-region.md). */
  home_region: string;
  home_epoch: number;
}

/** `unread` counts no further: counting every unread entry of a long-abandoned room costs a scan. */
export const UNREAD_CAP = 1000;

/** GET /v1/conversations/{id}/members entries (v1.1). */
export interface MemberSummary {
  user_id: string;
  name: string | null;
  role: Role;
  read_sequence: number;
  delivered_sequence: number;
}

/** GET /v1/users/{id}/presence: the fields of a `presence` frame. */
export type PresenceSummary = Omit<Presence, 'type'>;

/** GET /v1/users entries (v1.1). */
export interface UserSummary {
  user_id: string;
  name: string | null;
}
