/**
 * Records on the gateway delivery topics (realchat.node.<node_id>, and the broadcast topic
 * realchat.deliveries.v1): internal to RealChat, written by delivery workers and gateways, read
 * by gateways. Not the public event stream (that is events.ts / docs/events.md).
 *
 * Version 2 (what delivery workers write): one record per node per consumed batch, so a busy
 * worker writes a handful of records per batch instead of one per event and recipient node:
 *   {"v":2,"w":<ms when written>,"d":[{"r":[user_id...] | null,"e":<event JSON text, embedded as is>,"t":trace_id | null}, ...]}
 * `r: null` means every member (the node resolves them). Deliveries are in stream order. `t` is the
 * event's trace: the delivery worker's route span as a W3C traceparent (or the trace as it came).
 * Version 1 (still read, for a rolling upgrade; typing still uses it):
 *   {"schema_version":1,"recipients":...,"event":<event>}  or an ephemeral frame (below).
 */
import { EventDecodeError } from './events.js';
import { isPlainObject, isUuid } from './validate.js';

/** Kafka topic of one gateway node's deliveries (node ids are validated to be topic-safe). */
export function nodeTopic(nodeId: string): string {
  return `realchat.node.${nodeId}`;
}

export interface NodeDelivery {
  recipients: readonly string[] | null;
  /** The event's JSON text exactly as stored in the outbox (not re-encoded). */
  eventJson: string;
  traceId: string | null;
}

export function encodeNodeBatch(deliveries: readonly NodeDelivery[], writtenAtMs: number = Date.now()): string {
  const parts = deliveries.map((d) => `{"r":${JSON.stringify(d.recipients)},"e":${d.eventJson},"t":${JSON.stringify(d.traceId)}}`);
  return `{"v":2,"w":${writtenAtMs},"d":[${parts.join(',')}]}`;
}

/** An ephemeral frame (typing) for other nodes: never stored, never retried. */
export interface EphemeralDelivery {
  recipients: string[] | null;
  conversation_id: string;
  except_user: string;
  origin: string;
  frame: Record<string, unknown>;
}

export function encodeEphemeralValue(e: EphemeralDelivery): string {
  return JSON.stringify({ schema_version: 1, ...e });
}

export type DecodedNodeRecord =
  | {
      kind: 'events';
      deliveries: Array<{ recipients: string[] | null; event: unknown; traceId: string | null }>;
      /** When the delivery worker wrote the record (v2), for the hop latency. */
      writtenAtMs: number | null;
    }
  | { kind: 'ephemeral'; delivery: EphemeralDelivery };

function fail(msg: string): never {
  throw new EventDecodeError(msg);
}

function recipientsOf(v: unknown): string[] | null {
  if (v !== null && !(Array.isArray(v) && v.every(isUuid))) fail('delivery recipients must be null or user ids');
  return v as string[] | null;
}

/** Decodes either version; `traceId` of a v1 record comes from its headers. */
export function decodeNodeRecord(text: string, headerTraceId: string | null = null): DecodedNodeRecord {
  const v: unknown = JSON.parse(text);
  if (!isPlainObject(v)) fail('delivery record must be a JSON object');
  if (v.v === 2) {
    if (!Array.isArray(v.d)) fail('delivery batch needs d');
    return {
      kind: 'events',
      writtenAtMs: typeof v.w === 'number' ? v.w : null,
      deliveries: v.d.map((x: unknown) => {
        if (!isPlainObject(x)) fail('delivery batch entries must be objects');
        return { recipients: recipientsOf(x.r), event: x.e, traceId: typeof x.t === 'string' ? x.t : null };
      }),
    };
  }
  if (v.schema_version !== 1) fail('delivery record needs v 2 or schema_version 1');
  const recipients = recipientsOf(v.recipients);
  if (isPlainObject(v.frame)) {
    if (!isUuid(v.conversation_id) || !isUuid(v.except_user) || typeof v.origin !== 'string')
      fail('ephemeral delivery needs conversation_id, except_user, origin');
    return {
      kind: 'ephemeral',
      delivery: { recipients, conversation_id: v.conversation_id, except_user: v.except_user, origin: v.origin, frame: v.frame },
    };
  }
  return { kind: 'events', writtenAtMs: null, deliveries: [{ recipients, event: v.event, traceId: headerTraceId }] };
}
