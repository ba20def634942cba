/**
 * The v1 WebSocket contract (docs/protocol.md). Frames are discriminated unions decoded at the edge:
 * anything that does not decode becomes an AppError('invalid_frame') answered to the client.
 */
import { AppError } from './errors.js';
import { Fields, isPlainObject, isUuid, checkPayload } from './validate.js';
import { isTraceparent } from './trace-id.js';
import type { Envelope, ServerFrame, Via } from './wire.js';

export const PROTOCOL_VERSION = 1;

export type { Envelope, ServerFrame, Via } from './wire.js';
export { CloseCode } from './wire.js';

export type ClientFrame =
  | { type: 'hello'; token: string; resume: Map<string, number>; resumeLastIds: Map<string, string> }
  | {
      type: 'send';
      conversation_id: string;
      idempotency_key: string;
      payload: unknown;
      payloadStoredBytes: number;
      /** The sender's W3C trace context, if it sent a valid one (an invalid one is ignored, as the spec asks). */
      traceparent?: string;
    }
  | {
      type: 'edit';
      conversation_id: string;
      message_id: string;
      idempotency_key: string;
      payload: unknown;
      payloadStoredBytes: number;
    }
  | { type: 'delete'; conversation_id: string; message_id: string; idempotency_key: string }
  /** One of the two bounds: entries after `after_sequence`, or (v1.1) just below `before_sequence`. */
  | { type: 'sync'; conversation_id: string; after_sequence: number; before_sequence: number | null; limit: number }
  | { type: 'read'; conversation_id: string; sequence_number: number }
  | { type: 'typing'; conversation_id: string }
  /** Presence for clients: start / stop watching users (at most REALCHAT_PRESENCE_MAX_WATCHED per connection). */
  | { type: 'presence_subscribe'; user_ids: string[] }
  | { type: 'presence_unsubscribe'; user_ids: string[] }
  | { type: 'ping' };

export const MAX_IDEMPOTENCY_KEY_CHARS = 128;
/** User ids one presence_subscribe / presence_unsubscribe frame may name. */
export const MAX_PRESENCE_IDS_PER_FRAME = 1000;

export interface DecodeLimits {
  maxPayloadBytes: number;
  maxNumberChars: number;
  maxPageMessages: number;
  maxResumeConversations: number;
}

/** Best-effort extraction of the request reference for error frames, from a frame that may be invalid. */
/** Frames answered by their idempotency key (the others by the conversation they name). */
const KEYED_FRAMES: ReadonlySet<unknown> = new Set(['send', 'edit', 'delete']);

/** Frames that carry a client-chosen `ref` (they name no single conversation or key). */
const REF_FRAMES: ReadonlySet<unknown> = new Set(['presence_subscribe', 'presence_unsubscribe']);
export const MAX_REF_CHARS = 128;

export function frameRef(raw: unknown): string | undefined {
  if (!isPlainObject(raw)) return undefined;
  if (REF_FRAMES.has(raw.type)) return typeof raw.ref === 'string' && raw.ref.length <= MAX_REF_CHARS ? raw.ref : undefined;
  const key = raw.idempotency_key;
  if (KEYED_FRAMES.has(raw.type) && typeof key === 'string' && key.length <= MAX_IDEMPOTENCY_KEY_CHARS) return key;
  const conv = raw.conversation_id;
  return isUuid(conv) ? conv : undefined;
}

export function parseJsonFrame(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new AppError('invalid_frame', 'frame is not valid JSON');
  }
}

export function decodeClientFrame(raw: unknown, limits: DecodeLimits): ClientFrame {
  if (!isPlainObject(raw)) throw new AppError('invalid_frame', 'frame must be a JSON object');
  const f = new Fields(raw, 'invalid_frame');
  switch (raw.type) {
    case 'hello': {
      const token = f.string('token', 1, 8192);
      const resume = new Map<string, number>();
      if (raw.resume !== undefined && raw.resume !== null) {
        if (!isPlainObject(raw.resume)) throw new AppError('invalid_frame', 'resume must be an object of conversation_id to last_sequence');
        const entries = Object.entries(raw.resume);
        if (entries.length > limits.maxResumeConversations)
          throw new AppError('invalid_frame', `resume may name at most ${limits.maxResumeConversations} conversations`);
        for (const [conv, seq] of entries) {
          if (!isUuid(conv)) throw new AppError('invalid_frame', 'resume keys must be conversation UUIDs');
          if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 0)
            throw new AppError('invalid_frame', 'resume values must be non-negative integers');
          resume.set(conv.toLowerCase(), seq);
        }
      }
      // v1.4: the message id at each resumed position, so a region that re-numbered the
      // conversation after a failover can tell a position of the lost home's (docs/multi-region.md).
      const resumeLastIds = new Map<string, string>();
      if (raw.resume_last_ids !== undefined && raw.resume_last_ids !== null) {
        if (!isPlainObject(raw.resume_last_ids))
          throw new AppError('invalid_frame', 'resume_last_ids must be an object of conversation_id to message_id');
        const entries = Object.entries(raw.resume_last_ids);
        if (entries.length > limits.maxResumeConversations)
          throw new AppError('invalid_frame', `resume_last_ids may name at most ${limits.maxResumeConversations} conversations`);
        for (const [conv, id] of entries) {
          if (!isUuid(conv) || !isUuid(id)) throw new AppError('invalid_frame', 'resume_last_ids maps conversation UUIDs to message UUIDs');
          resumeLastIds.set(conv.toLowerCase(), id.toLowerCase());
        }
      }
      return { type: 'hello', token, resume, resumeLastIds };
    }
    case 'send': {
      const idempotency_key = f.string('idempotency_key', 1, MAX_IDEMPOTENCY_KEY_CHARS);
      const conversation_id = f.uuid('conversation_id');
      const payload = f.present('payload');
      const { storedBytes } = checkPayload(payload, limits, 'invalid_frame');
      const send = { type: 'send', conversation_id, idempotency_key, payload, payloadStoredBytes: storedBytes } as const;
      return typeof raw.traceparent === 'string' && isTraceparent(raw.traceparent) ? { ...send, traceparent: raw.traceparent } : send;
    }
    case 'edit': {
      const idempotency_key = f.string('idempotency_key', 1, MAX_IDEMPOTENCY_KEY_CHARS);
      const conversation_id = f.uuid('conversation_id');
      const message_id = f.uuid('message_id');
      const payload = f.present('payload');
      const { storedBytes } = checkPayload(payload, limits, 'invalid_frame');
      return { type: 'edit', conversation_id, message_id, idempotency_key, payload, payloadStoredBytes: storedBytes };
    }
    case 'delete':
      return {
        type: 'delete',
        idempotency_key: f.string('idempotency_key', 1, MAX_IDEMPOTENCY_KEY_CHARS),
        conversation_id: f.uuid('conversation_id'),
        message_id: f.uuid('message_id'),
      };
    case 'sync': {
      const conversation_id = f.uuid('conversation_id');
      const limit = f.optionalInt('limit', 1, limits.maxPageMessages, 100);
      if (raw.before_sequence !== undefined && raw.before_sequence !== null) {
        if (raw.after_sequence !== undefined && raw.after_sequence !== null)
          throw new AppError('invalid_frame', 'sync takes after_sequence or before_sequence, not both');
        return {
          type: 'sync',
          conversation_id,
          after_sequence: 0,
          before_sequence: f.int('before_sequence', 1, Number.MAX_SAFE_INTEGER),
          limit,
        };
      }
      return {
        type: 'sync',
        conversation_id,
        after_sequence: f.int('after_sequence', 0, Number.MAX_SAFE_INTEGER),
        before_sequence: null,
        limit,
      };
    }
    case 'read':
      return {
        type: 'read',
        conversation_id: f.uuid('conversation_id'),
        sequence_number: f.int('sequence_number', 0, Number.MAX_SAFE_INTEGER),
      };
    case 'typing':
      return { type: 'typing', conversation_id: f.uuid('conversation_id') };
    case 'presence_subscribe':
    case 'presence_unsubscribe':
      // The per-connection cap (maxWatchedPerConnection) is the server's; one frame may name at most 1,000.
      return { type: raw.type, user_ids: f.uuidList('user_ids', 1, MAX_PRESENCE_IDS_PER_FRAME) };
    case 'ping':
      return { type: 'ping' };
    default:
      throw new AppError(
        'invalid_frame',
        typeof raw.type === 'string' ? `unknown frame type "${raw.type.slice(0, 64)}"` : 'frame needs a string "type"',
      );
  }
}

export function encodeFrame(frame: ServerFrame): string {
  return JSON.stringify(frame);
}

/** A `message` frame: every one the server writes says how it came (`via`, see wire.ts). */
export function encodeMessageFrame(message: Envelope, via: Via): string {
  return encodeFrame({ type: 'message', message, via });
}
