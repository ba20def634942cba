/**
 * "Rewind the outbox": re-inserts message.created events for stored messages, so the relay (TS or
 * Debezium) publishes them again. Consumers absorb the duplicates by (conversation_id, sequence).
 * The events are built in SQL from the messages table with the same shape the gateway writes.
 */
import type { Sql } from '../common/db.js';

export interface ReplayScope {
  conversationId?: string;
  /** With conversationId: first sequence to replay (default 1). */
  fromSequence?: number;
  /** Every message created at or after this time (all conversations, or within conversationId). */
  since?: Date;
}

const ISO_MS = 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"';

export async function replayToOutbox(sql: Sql, scope: ReplayScope, opts: { batch: number; traceId: string; outboxMode: 'table' | 'wal' }): Promise<number> {
  if (!scope.conversationId && !scope.since) throw new Error('replay needs --conversation or --since');
  let total = 0;
  // Walk (conversation_id, sequence) in key order, one bounded statement per batch.
  let afterConv = scope.conversationId ?? '00000000-0000-0000-0000-000000000000';
  let afterSeq = scope.conversationId ? Math.max(0, (scope.fromSequence ?? 1) - 1) : 0;
  for (;;) {
    const [r] = await sql<{ n: number; last_conv: string | null; last_seq: number | null }[]>`
      WITH picked AS (
        SELECT id, conversation_id, sender_id, sequence, payload, idempotency_key, created_at
        FROM messages
        WHERE ${scope.conversationId ? sql`conversation_id = ${scope.conversationId} AND sequence > ${afterSeq}` : sql`(conversation_id, sequence) > (${afterConv}::uuid, ${afterSeq})`}
          ${scope.since ? sql`AND created_at >= ${scope.since}` : sql``}
        ORDER BY conversation_id, sequence
        LIMIT ${opts.batch}
      ), ins AS (
        INSERT INTO outbox (event_id, aggregateid, type, payload, trace_id)
        SELECT gen_random_uuid(), p.conversation_id::text, 'message.created',
          jsonb_build_object(
            'schema_version', 1,
            'event_id', gen_random_uuid(),
            'type', 'message.created',
            'conversation_id', p.conversation_id,
            'occurred_at', to_char(p.created_at AT TIME ZONE 'UTC', ${ISO_MS}),
            'message', jsonb_build_object(
              'message_id', p.id,
              'conversation_id', p.conversation_id,
              'sender_id', p.sender_id,
              'sequence_number', p.sequence,
              'payload', p.payload,
              'created_at', to_char(p.created_at AT TIME ZONE 'UTC', ${ISO_MS}),
              'idempotency_key', p.idempotency_key)),
          ${opts.traceId}
        FROM (SELECT * FROM picked ORDER BY conversation_id, sequence) p
        RETURNING 1
      )
      SELECT (SELECT count(*)::int FROM ins) AS n,
             (SELECT conversation_id::text FROM picked ORDER BY conversation_id DESC, sequence DESC LIMIT 1) AS last_conv,
             (SELECT sequence FROM picked ORDER BY conversation_id DESC, sequence DESC LIMIT 1) AS last_seq`;
    // wal mode (Debezium): the inserts are in the WAL; the rows need not stay.
    if (opts.outboxMode === 'wal') await sql`DELETE FROM outbox WHERE trace_id = ${opts.traceId}`;
    if (!r || r.n === 0 || r.last_conv === null || r.last_seq === null) break;
    total += r.n;
    afterConv = r.last_conv;
    afterSeq = r.last_seq;
    if (r.n < opts.batch) break;
  }
  return total;
}
