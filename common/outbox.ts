/**
 * Every statement on the outbox table, in one place: the gateway's insert (in the transaction of
 * the state change), the relay's poll and delete, the backlog figures (gateway bound, relay and
 * lag CLI metrics, and the ops queries of docs/operations.md), and the replay ("rewind the
 * outbox"). Column names follow the Debezium outbox event router's defaults.
 */
import type { Sql, TxSql } from './db.js';
import type { ChatEvent } from './events.js';
import { withTimeout } from './timeout.js';

export type OutboxMode = 'table' | 'wal';

/** Inserts events in the caller's transaction. wal mode: Debezium reads the insert from the WAL; the row need not stay. */
export async function insertOutboxEvents(tx: TxSql, events: readonly ChatEvent[], traceId: string | null, mode: OutboxMode): Promise<void> {
  if (events.length === 0) return;
  // Text cast to jsonb explicitly: a jsonb-typed parameter would be JSON-encoded once more by the driver.
  await tx`INSERT INTO outbox (event_id, aggregateid, type, payload, trace_id)
           SELECT e, a, t, p::jsonb, ${traceId}::text
           FROM unnest(${events.map((e) => e.event_id)}::uuid[], ${events.map((e) => e.conversation_id)}::text[],
                       ${events.map((e) => e.type)}::text[], ${events.map((e) => JSON.stringify(e))}::text[]) AS x(e, a, t, p)`;
  if (mode === 'wal') await tx`DELETE FROM outbox WHERE event_id = ANY(${events.map((e) => e.event_id)}::uuid[])`;
}

export interface OutboxRow {
  id: string;
  event_id: string;
  aggregateid: string;
  type: string;
  /** The event's JSON text exactly as stored. */
  value: string;
  trace_id: string | null;
  /** The region a mirrored event came from (its `realchat-region` header); null for this region's own. */
  origin_region: string | null;
  /** When the row was written (epoch ms). */
  created_ms: number;
}

/**
 * The oldest unpublished rows, in id order. `ORDER BY outbox.id`, qualified: a bare `id` names the
 * output column, the text `id::text`, and sorts "10" before "9" (events of one conversation then
 * left in the wrong order whenever a batch crossed a power of ten).
 */
export function pollOutbox(sql: Sql, limit: number, timeoutMs: number, exceptIds: readonly string[] = []): Promise<OutboxRow[]> {
  // `exceptIds`: rows already published whose delete is still in flight (the relay's pipeline).
  const except = exceptIds.length > 0 ? sql`WHERE outbox.id <> ALL(${exceptIds as string[]}::bigint[])` : sql``;
  return withTimeout(
    sql<OutboxRow[]>`SELECT id::text AS id, event_id, aggregateid, type, payload::text AS value, trace_id, origin_region,
                            (extract(epoch FROM created_at) * 1000)::float8 AS created_ms
                     FROM outbox ${except} ORDER BY outbox.id LIMIT ${limit}`,
    timeoutMs,
    'outbox poll',
  );
}

/**
 * Removes published rows. With `leaseToken` (the Kafka relay), only while that relay lease token is
 * current and unexpired on the database's clock; false when it is not (nothing was deleted: the
 * caller lost its leadership). The lease row is locked FOR SHARE, so a takeover waits for this
 * statement and no delete ever commits after another relay took over.
 *
 * The delete does not wait for its WAL flush (`synchronous_commit = off` for this transaction
 * only): a delete lost in a crash only makes the rows published again, duplicates that consumers
 * drop by sequence, and the flush wait was a third of the relay's cycle (10-12 ms of 25-37 ms at
 * 500 msg/s). One simple-protocol query carries both statements, so they are one implicit
 * transaction and one round trip; the values are checked integers, never caller text.
 */
export async function deleteOutboxRows(sql: Sql, ids: readonly string[], timeoutMs: number, leaseToken?: number): Promise<boolean> {
  if (ids.length === 0) return true;
  for (const id of ids) if (!/^[0-9]{1,19}$/.test(id)) throw new Error(`outbox id ${JSON.stringify(id)} is not an integer`);
  const idArray = `'{${ids.join(',')}}'::bigint[]`;
  const relaxed = 'SET LOCAL synchronous_commit = off;';
  if (leaseToken === undefined) {
    await withTimeout(sql.unsafe(`${relaxed} DELETE FROM outbox WHERE id = ANY(${idArray})`).simple(), timeoutMs, 'outbox delete');
    return true;
  }
  if (!Number.isSafeInteger(leaseToken)) throw new Error(`lease token ${leaseToken} is not an integer`);
  const results = (await withTimeout(
    sql
      .unsafe(`${relaxed}
      WITH lease AS (
        SELECT token FROM relay_lease WHERE name = 'outbox' AND token = ${leaseToken} AND expires_at > now() FOR SHARE
      ), deleted AS (
        DELETE FROM outbox WHERE id = ANY(${idArray}) AND EXISTS (SELECT 1 FROM lease) RETURNING 1
      )
      SELECT EXISTS (SELECT 1 FROM lease) AS current, (SELECT count(*) FROM deleted) AS n`)
      .simple(),
    timeoutMs,
    'outbox delete',
  )) as unknown as Array<Array<{ current: boolean }>>;
  // A multi-statement query answers one result per statement: the SELECT is the last.
  return results[results.length - 1]![0]!.current;
}

export interface OutboxStats {
  /** Unpublished rows, counted up to `cap` (so the query cost stays bounded). */
  backlog: number;
  /** Seconds since the oldest unpublished row was written; 0 when empty. */
  oldestAgeS: number;
  /** wal mode: WAL bytes the CDC slot has not confirmed (-1: slot missing); null in table mode. */
  slotLagBytes: number | null;
}

export interface BacklogBounds {
  maxRows: number;
  slot: { name: string; maxLagBytes: number } | null;
}

export async function readOutboxStats(sql: Sql, cap: number, timeoutMs: number): Promise<OutboxStats> {
  const [row] = await withTimeout(
    sql<{ backlog: number; oldest_age_s: number | null }[]>`
      SELECT (SELECT count(*)::int FROM (SELECT 1 FROM outbox LIMIT ${cap}) capped) AS backlog,
             (SELECT extract(epoch FROM clock_timestamp() - created_at)::float8 FROM outbox ORDER BY id LIMIT 1) AS oldest_age_s`,
    timeoutMs,
    'outbox stats',
  );
  return { backlog: row!.backlog, oldestAgeS: Math.max(0, row!.oldest_age_s ?? 0), slotLagBytes: null };
}

/** WAL retained for a logical replication slot; -1 if the slot does not exist. */
export async function readSlotLag(sql: Sql, slot: string, timeoutMs: number): Promise<number> {
  const rows = await withTimeout(
    sql<{ lag: number | null }[]>`
      SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::float8 AS lag
      FROM pg_replication_slots WHERE slot_name = ${slot}`,
    timeoutMs,
    'slot lag',
  );
  return rows[0] ? (rows[0].lag ?? 0) : -1;
}

// ---- replay ("rewind the outbox") ---------------------------------------------------------------

export interface ReplayScope {
  conversationId?: string;
  /** With conversationId: first sequence to replay (default 1). */
  fromSequence?: number;
  /** Every message created at or after this time (all conversations, or within conversationId). */
  since?: Date;
}

/**
 * The creation of each conversation in scope (a replay from its start, or created since), as the
 * conversation.members_added event without an entry that the creation wrote, with the members it
 * was created with (realchat_initial_members): written before the conversation's entries, so a
 * consumer rebuilt from the replay alone learns every member and the owner (`added_by`).
 */
async function replayCreations(
  sql: Sql,
  scope: ReplayScope,
  opts: { batch: number; traceId: string; outboxMode: 'table' | 'wal' },
): Promise<number> {
  if (scope.conversationId && (scope.fromSequence ?? 1) > 1) return 0;
  let total = 0;
  let afterId = '00000000-0000-0000-0000-000000000000';
  for (;;) {
    const [r] = await sql<{ n: number; last_id: string | null }[]>`
      WITH picked AS (
        SELECT c.id, c.created_by, c.created_at, c.large FROM conversations c
        WHERE c.id > ${afterId}::uuid
          ${scope.conversationId ? sql`AND c.id = ${scope.conversationId}` : sql``}
          ${scope.since ? sql`AND c.created_at >= ${scope.since}` : sql``}
        ORDER BY c.id LIMIT ${opts.batch}
      ), ins AS (
        INSERT INTO outbox (event_id, aggregateid, type, payload, trace_id)
        SELECT (e.ev->>'event_id')::uuid, e.id::text, 'conversation.members_added', e.ev, ${opts.traceId}
        FROM (SELECT p.id, jsonb_build_object('schema_version', 1, 'event_id', gen_random_uuid(),
                       'type', 'conversation.members_added', 'conversation_id', p.id,
                       'occurred_at', to_char(p.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                       'user_ids', to_jsonb(realchat_initial_members(p.id)), 'added_by', p.created_by, 'last_sequence', 0)
                     || CASE WHEN p.large THEN '{"large": true}'::jsonb ELSE '{}'::jsonb END AS ev
              FROM picked p) e
        ORDER BY e.id
        RETURNING 1
      )
      SELECT (SELECT count(*)::int FROM ins) AS n, (SELECT p.id::text FROM picked p ORDER BY p.id DESC LIMIT 1) AS last_id`;
    if (opts.outboxMode === 'wal') await sql`DELETE FROM outbox WHERE trace_id = ${opts.traceId}`;
    if (!r || r.n === 0 || r.last_id === null) return total;
    total += r.n;
    afterId = r.last_id;
    if (r.n < opts.batch) return total;
  }
}

export async function replayToOutbox(
  sql: Sql,
  scope: ReplayScope,
  opts: { batch: number; traceId: string; outboxMode: 'table' | 'wal' },
): Promise<number> {
  if (!scope.conversationId && !scope.since) throw new Error('replay needs --conversation or --since');
  let total = await replayCreations(sql, scope, opts);
  // Walk (conversation_id, sequence) in key order, one bounded statement per batch.
  let afterConv = scope.conversationId ?? '00000000-0000-0000-0000-000000000000';
  let afterSeq = scope.conversationId ? Math.max(0, (scope.fromSequence ?? 1) - 1) : 0;
  for (;;) {
    const [r] = await sql<{ n: number; last_conv: string | null; last_seq: number | null }[]>`
      WITH picked AS (
        SELECT m AS entry, m.conversation_id, m.sequence
        FROM messages m
        WHERE ${scope.conversationId ? sql`conversation_id = ${scope.conversationId} AND sequence > ${afterSeq}` : sql`(conversation_id, sequence) > (${afterConv}::uuid, ${afterSeq})`}
          ${scope.since ? sql`AND created_at >= ${scope.since}` : sql``}
        ORDER BY conversation_id, sequence
        LIMIT ${opts.batch}
      ), ins AS (
        -- Every kind of entry, as the transaction that wrote it did (realchat_entry_event, 0008_timeline.sql),
        -- with its current state: an edited message carries its latest payload, a deleted one none.
        INSERT INTO outbox (event_id, aggregateid, type, payload, trace_id)
        SELECT (e.ev->>'event_id')::uuid, e.conversation_id::text, e.ev->>'type', e.ev, ${opts.traceId}
        FROM (SELECT p.conversation_id, p.sequence, realchat_entry_event(p.entry, c.large) AS ev
              FROM picked p JOIN conversations c ON c.id = p.conversation_id) e
        ORDER BY e.conversation_id, e.sequence
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
