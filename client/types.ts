/** The v1 wire contract as seen by a client (docs/protocol.md). Unknown frame types and fields are ignored. */

export interface Envelope {
  message_id: string;
  conversation_id: string;
  sender_id: string;
  sequence_number: number;
  payload: unknown;
  created_at: string;
  idempotency_key: string;
}

export interface Welcome {
  type: 'welcome';
  user_id: string;
  session_id: string;
  node_id: string;
  heartbeat_interval_ms: number;
  protocol_version?: number;
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
}

export type ServerFrame =
  | Welcome
  | { type: 'message'; message: Envelope }
  | Synced
  | Ack
  | MessagesPage
  | Receipt
  | Typing
  | { type: 'pong' }
  | { type: 'reconnect'; reason: string; retry_after_ms: number }
  | ErrorFrame;

export type ClientFrame =
  | { type: 'hello'; token: string; resume?: Record<string, number> }
  | { type: 'send'; conversation_id: string; idempotency_key: string; payload: unknown }
  | { type: 'sync'; conversation_id: string; after_sequence: number; limit?: number }
  | { type: 'read'; conversation_id: string; sequence_number: number }
  | { type: 'typing'; conversation_id: string }
  | { type: 'ping' };

/** Close codes: 4000-4499 reconnect (and resume); 4500-4999 do not. */
export const CloseCodes = {
  draining: 4000,
  idleTimeout: 4001,
  slowConsumer: 4002,
  helloTimeout: 4003,
  resyncFailed: 4004,
  unauthorized: 4500,
  protocolViolation: 4501,
} as const;

export function isFatalClose(code: number): boolean {
  return code >= 4500 && code <= 4999;
}

/**
 * The minimal WebSocket surface the SDK needs. Both the browser's WebSocket and the `ws` package
 * (Node) satisfy it; pass the constructor as `WebSocket` in the client options.
 */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  // Handlers take `any` so both the DOM and the `ws` event types fit; the SDK reads
  // `data` (message) and `code`/`reason` (close) only.
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: any) => void) | null;
  onclose: ((ev: any) => void) | null;
  onerror: ((ev: any) => void) | null;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** Decodes a text frame; returns null for anything that is not a typed JSON object. */
export function decodeServerFrame(data: unknown): ServerFrame | null {
  if (typeof data !== 'string') return null;
  let v: unknown;
  try {
    v = JSON.parse(data);
  } catch {
    return null;
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return null;
  if (typeof (v as { type?: unknown }).type !== 'string') return null;
  return v as ServerFrame;
}
