/** The v1 wire contract as seen by a client (docs/protocol.md). Unknown frame types and fields are ignored. */

export type {
  Envelope,
  Welcome,
  Ack,
  MessagesPage,
  Receipt,
  Typing,
  Presence,
  PresenceSummary,
  Synced,
  Rewind,
  ErrorFrame,
  ServerFrame,
  Via,
  EntryKind,
  Role,
  MemberSummary,
  UserSummary,
} from '../common/wire.js';
import type { ServerFrame } from '../common/wire.js';

export type ClientFrame =
  | { type: 'hello'; token: string; resume?: Record<string, number>; resume_last_ids?: Record<string, string> }
  | { type: 'send'; conversation_id: string; idempotency_key: string; payload: unknown }
  | { type: 'edit'; conversation_id: string; message_id: string; idempotency_key: string; payload: unknown }
  | { type: 'delete'; conversation_id: string; message_id: string; idempotency_key: string }
  | { type: 'sync'; conversation_id: string; after_sequence: number; limit?: number }
  /** v1.1: the `limit` entries just below `before_sequence`, ascending. */
  | { type: 'sync'; conversation_id: string; before_sequence: number; limit?: number }
  | { type: 'read'; conversation_id: string; sequence_number: number }
  | { type: 'typing'; conversation_id: string }
  | { type: 'presence_subscribe' | 'presence_unsubscribe'; user_ids: string[]; ref?: string }
  | { type: 'ping' };

export { CloseCode as CloseCodes } from '../common/wire.js';

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
