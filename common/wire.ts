/**
 * The v1 wire shapes shared by the server and the SDK (docs/protocol.md): plain types and constants
 * only, no imports, so browsers bundle it as is. The server's decoded forms live in protocol.ts.
 */

/** Immutable once committed: every path (ack, live, resume, REST, Kafka) carries the same values. */
export interface Envelope {
  message_id: string;
  conversation_id: string;
  sender_id: string;
  sequence_number: number;
  payload: unknown;
  created_at: string;
  idempotency_key: string;
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
}

export type ServerFrame =
  | Welcome
  | MessageFrame
  | Synced
  | Ack
  | MessagesPage
  | Receipt
  | Typing
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
  unread: number;
}
