/**
 * Trace ids and W3C trace context (https://www.w3.org/TR/trace-context/) as plain strings, with no
 * tracing SDK: the gateway makes a trace id for every request whether or not tracing is on, and
 * every role reads the trace an event carries (a `traceparent`, or a bare trace id) for its logs.
 *
 * Trace ids are W3C-shaped (32 lowercase hex characters) so that `trace_id` in the logs is the trace
 * id a tracing backend shows. Cheap enough for every send: a random prefix per generator, then a
 * counter (crypto randomness per request cost the hot path more than the rest of the id handling).
 */
import { randomBytes } from 'node:crypto';

export function traceIdGenerator(): () => string {
  const prefix = randomBytes(12).toString('hex');
  let n = Math.floor(Math.random() * 0x7fffffff);
  return () => {
    n = (n + 1) % 0x100000000;
    return prefix + n.toString(16).padStart(8, '0');
  };
}

// Version 00 exactly; a later version may append fields after the flags (the spec's forward rule).
const TRACEPARENT = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(?:-|$)/;
const ZERO_TRACE = '00000000000000000000000000000000';
const ZERO_SPAN = '0000000000000000';
const TRACE_ID = /^[0-9a-f]{32}$/;

export interface ParsedTraceparent {
  traceId: string;
  spanId: string;
  /** The trace-flags byte (bit 0: sampled). */
  flags: number;
}

/** A valid W3C `traceparent`, or null (an invalid one is ignored, as the spec asks: a new trace starts). */
export function parseTraceparent(value: string | null | undefined): ParsedTraceparent | null {
  // Fixed offsets, no captures: the relay parses one per event.
  if (!value || value.length < 55 || value.length > 512 || !TRACEPARENT.test(value)) return null;
  const version = value.slice(0, 2);
  if (version === 'ff' || (version === '00' && value.length !== 55)) return null;
  const traceId = value.slice(3, 35);
  const spanId = value.slice(36, 52);
  if (traceId === ZERO_TRACE || spanId === ZERO_SPAN) return null;
  return { traceId, spanId, flags: Number.parseInt(value.slice(53, 55), 16) };
}

export function isTraceparent(value: string | null | undefined): value is string {
  return parseTraceparent(value) !== null;
}

/** A bare W3C trace id (what a gateway stores when tracing is off and no context came in). */
export function isTraceId(value: string | null | undefined): value is string {
  return typeof value === 'string' && TRACE_ID.test(value) && value !== ZERO_TRACE;
}

/**
 * The trace id for logs from whatever an event or request carries: the trace id of a traceparent,
 * else the value itself (a bare trace id, or an opaque id from an older writer or the replay CLI).
 */
export function traceIdOf(trace: string | null | undefined): string | null {
  if (!trace) return null;
  return parseTraceparent(trace)?.traceId ?? trace;
}

/** The value names a W3C trace (a traceparent or a bare trace id) that spans can continue. */
export function carriesTrace(value: string | null | undefined): value is string {
  return isTraceparent(value) || isTraceId(value);
}
