import { EVENT_HEADERS, type EventRecord } from '../common/events.js';
import type { InRecord } from '../common/kafka/index.js';

/** A record of the public event topic as the consumers of the stream see it (worker, notifier, webhooks). */
export function toEventRecord(r: InRecord): EventRecord {
  return {
    key: r.key ?? '',
    value: r.value ?? '',
    type: r.headers[EVENT_HEADERS.type] ?? '',
    eventId: r.headers[EVENT_HEADERS.eventId] ?? r.headers.id ?? '',
    // Debezium carries the stored trace in trace_id only; the TS relay adds the context to continue.
    traceId: r.headers[EVENT_HEADERS.traceparent] ?? r.headers[EVENT_HEADERS.traceId] ?? null,
    // Debezium writes the header with no value for this region's own events.
    originRegion: r.headers[EVENT_HEADERS.region] || null,
  };
}
