/**
 * The mirror applier (docs/multi-region.md): applies another region's event stream, mirrored into
 * this region (`<source>.realchat.events.v1`), to this region's database, so this region serves
 * reads, resume, gap fill and live delivery of conversations homed there from its own copy.
 *
 * Each batch is one transaction, applied in stream order. Idempotent by (conversation, sequence):
 * an entry already in the copy changes nothing and is not delivered again, so a redelivered or
 * replayed batch is harmless. An applied event is also written to this region's outbox, marked
 * with its origin (`origin_region`), for this region's relay, delivery and clients; the applier of
 * any other region skips it on this region's mirrored stream (its `realchat-region` header names
 * the source, not this region), so an event is applied once per region and never loops.
 */
import type { Sql, TxSql } from '../../common/db.js';
import { timedQuery } from '../../common/db.js';
import { decodeEvent, entryOf, type ChatEvent, type EventRecord, type MembersAdded } from '../../common/events.js';
import type { Logger } from '../../common/log.js';
import { applyRehoming } from '../../common/rehome.js';
import type { Envelope } from '../../common/wire.js';
import { isUuid } from '../../common/validate.js';

export interface MirrorApplierDeps {
  sql: Sql;
  /** The region whose stream this applier reads (the mirrored topic's prefix). */
  sourceRegion: string;
  log: Logger;
  queryTimeoutMs: number;
  /** Clock for the hourly pruning of remembered receipts (tests). */
  now?: () => number;
  /** wal: the outbox rows it writes are read by Debezium from the WAL and deleted in the same transaction. */
  outboxMode?: 'table' | 'wal';
}

/** Remembered receipt ids older than this are forgotten (a week: far beyond any redelivery). */
const REMEMBER_RECEIPTS_MS = 7 * 24 * 3600_000;
const PRUNE_EVERY_MS = 3600_000;

/** What one batch did, by outcome (tests, metrics, logs). */
export interface MirrorApplyCounts {
  /** Applied to the copy (and written to the outbox for local delivery). */
  applied: number;
  /** Already in the copy: a redelivery, a replay. */
  duplicate: number;
  /** Not the source's own event (it mirrored it in from a third region, or from this one). */
  foreign: number;
  /** An entry of a conversation this region has no copy of (its creation event was never read). */
  unknownConversation: number;
  /** An entry of a conversation homed here that no failover from the source explains: skipped. */
  homedHere: number;
  /**
   * An entry of the old home of a conversation re-homed here by a failover, that this region did not
   * have (acknowledged there, never mirrored before the loss): appended again with a new sequence
   * number, its message id and idempotency key kept.
   */
  reappended: number;
  /** An entry whose sequence skipped past the copy's last one (applied; the copy has a hole). */
  gaps: number;
  /** Event types this version does not know (a newer producer): skipped, as every consumer does. */
  unknownType: number;
  /** Not a valid event (not JSON, or failing the schema): skipped and logged, never retried forever. */
  invalid: number;
}

export interface MirrorApplier {
  apply(records: readonly EventRecord[]): Promise<MirrorApplyCounts>;
}

type Outcome = Exclude<keyof MirrorApplyCounts, 'gaps'>;

export function createMirrorApplier(deps: MirrorApplierDeps): MirrorApplier {
  const { sql, sourceRegion, log } = deps;
  const now = deps.now ?? Date.now;
  let prunedAt = now();

  /** The copy's row, locked: its home and last sequence decide what an entry does. */
  async function copyOf(tx: TxSql, conversationId: string): Promise<{ home_region: string | null; last_seq: number } | null> {
    const [row] = await tx<{ home_region: string | null; last_seq: number }[]>`
      SELECT home_region, last_seq FROM conversations WHERE id = ${conversationId} FOR UPDATE`;
    return row ?? null;
  }

  async function toOutbox(
    tx: TxSql,
    record: EventRecord,
    event: { event_id: string; conversation_id: string; type: string },
  ): Promise<void> {
    await tx`
      INSERT INTO outbox (event_id, aggregateid, type, payload, trace_id, origin_region)
      VALUES (${event.event_id}, ${event.conversation_id}, ${event.type}, ${record.value}::text::jsonb, ${record.traceId}, ${sourceRegion})
      ON CONFLICT (event_id) DO NOTHING`;
  }

  /** The creation: the copy's conversation row, its initial members and their state rows. */
  async function create(tx: TxSql, e: MembersAdded): Promise<Outcome> {
    const a = e.conversation;
    const home = a?.home_region && a.home_region !== '' ? a.home_region : sourceRegion;
    const creator = a?.created_by ?? e.added_by;
    const inserted = await tx`
      INSERT INTO conversations (id, title, created_by, created_at, updated_at, who_can_add, large, member_count, home_region)
      VALUES (${e.conversation_id}, ${a?.title ?? null}, ${creator}, ${a?.created_at ?? e.occurred_at}, ${a?.created_at ?? e.occurred_at},
              ${a?.who_can_add ?? 'members'}, ${e.large === true}, ${e.user_ids.length}, ${home})
      ON CONFLICT (id) DO NOTHING`;
    if (inserted.count === 0) return 'duplicate';
    const members = e.user_ids.map((u) => ({ conversation_id: e.conversation_id, user_id: u, role: u === creator ? 'owner' : 'member' }));
    if (members.length > 0) {
      await tx`INSERT INTO members ${tx(members)} ON CONFLICT DO NOTHING`;
      await tx`INSERT INTO user_conversation_state ${tx(members.map(({ role: _, ...m }) => m))} ON CONFLICT DO NOTHING`;
    }
    return 'applied';
  }

  /** The entry's effect on the rest of the copy, as the home's own write had it (sql/migrations/0008_timeline.sql). */
  async function effects(tx: TxSql, e: ChatEvent, m: Envelope): Promise<void> {
    const c = e.conversation_id;
    switch (e.type) {
      case 'message.created':
        // Sending is reading: the sender's read position moves to its message.
        await tx`
          INSERT INTO user_conversation_state AS s (user_id, conversation_id, last_read_sequence)
          VALUES (${m.sender_id}, ${c}, ${m.sequence_number})
          ON CONFLICT (user_id, conversation_id) DO UPDATE SET last_read_sequence = EXCLUDED.last_read_sequence
            WHERE s.last_read_sequence < EXCLUDED.last_read_sequence`;
        return;
      case 'message.edited':
        await tx`
          UPDATE messages SET payload = ${JSON.stringify(m.payload)}::text::jsonb, edited_at = ${m.created_at}, payload_bytes = NULL
          WHERE id = ${m.ref_message_id!} AND conversation_id = ${c} AND deleted_at IS NULL`;
        return;
      case 'message.deleted':
        await tx`UPDATE messages SET deleted_at = ${m.created_at} WHERE id = ${m.ref_message_id!} AND conversation_id = ${c}`;
        await tx`
          UPDATE messages SET payload = 'null'::jsonb, payload_bytes = NULL
          WHERE conversation_id = ${c} AND id = ANY(${e.erased_message_ids}::uuid[])`;
        return;
      case 'conversation.members_added': {
        const rows = e.user_ids.map((u) => ({ conversation_id: c, user_id: u, role: 'member' }));
        if (rows.length > 0) {
          await tx`INSERT INTO members ${tx(rows)} ON CONFLICT DO NOTHING`;
          await tx`INSERT INTO user_conversation_state ${tx(rows.map(({ role: _, ...r }) => r))} ON CONFLICT DO NOTHING`;
        }
        await countMembers(tx, c, e.large === true);
        return;
      }
      case 'conversation.members_removed':
        await tx`DELETE FROM members WHERE conversation_id = ${c} AND user_id = ANY(${e.user_ids}::uuid[])`;
        await countMembers(tx, c, null);
        return;
      case 'conversation.role_changed':
        await tx`UPDATE members SET role = ${e.role} WHERE conversation_id = ${c} AND user_id = ${e.user_id}`;
        return;
      default:
        return;
    }
  }

  async function countMembers(tx: TxSql, conversationId: string, large: boolean | null): Promise<void> {
    await tx`
      UPDATE conversations SET member_count = (SELECT count(*)::int FROM members WHERE conversation_id = ${conversationId}),
             large = large OR ${large === true}
      WHERE id = ${conversationId}`;
  }

  /** A timeline entry: stored at the home's sequence unless it is there already. */
  async function entry(tx: TxSql, record: EventRecord, e: ChatEvent, m: Envelope, counts: MirrorApplyCounts): Promise<Outcome> {
    const copy = await copyOf(tx, e.conversation_id);
    if (!copy) return 'unknownConversation';
    if (copy.home_region === null) {
      const [taken] = await tx<{ takeover_seq: number }[]>`
        SELECT takeover_seq FROM region_failovers WHERE conversation_id = ${e.conversation_id} AND from_region = ${sourceRegion}
        ORDER BY home_epoch DESC LIMIT 1`;
      if (!taken) return 'homedHere';
      const free =
        m.sequence_number <= taken.takeover_seq &&
        (await tx`SELECT 1 FROM messages WHERE conversation_id = ${e.conversation_id} AND sequence = ${m.sequence_number}`).length === 0;
      // Below the takeover point and missing here: a hole of the copy, filled at its own number.
      if (!free) return reappend(tx, e, m);
    }
    const inserted = await tx`
      INSERT INTO messages (id, conversation_id, sender_id, sequence, payload, idempotency_key, created_at, kind, ref_message_id)
      VALUES (${m.message_id}, ${m.conversation_id}, ${m.sender_id}, ${m.sequence_number}, ${JSON.stringify(m.payload)}::text::jsonb,
              ${m.idempotency_key}, ${m.created_at}, ${m.kind ?? 'message'}, ${m.ref_message_id ?? null})
      ON CONFLICT DO NOTHING`;
    if (inserted.count === 0) return 'duplicate';
    if (m.sequence_number > copy.last_seq + 1) {
      counts.gaps++;
      log.warn(
        { conversation_id: e.conversation_id, message_id: m.message_id, sequence: m.sequence_number, copy_last_sequence: copy.last_seq },
        'mirrored entry skips past the copy: the copy has a hole until the missing entries arrive',
      );
    }
    await effects(tx, e, m);
    await tx`
      UPDATE conversations SET last_seq = GREATEST(last_seq, ${m.sequence_number}), updated_at = GREATEST(updated_at, ${m.created_at})
      WHERE id = ${e.conversation_id}`;
    await toOutbox(tx, record, e);
    return 'applied';
  }

  /**
   * An old home's entry after the takeover point: this region numbers it now. Skipped when its
   * message, or its sender's idempotency key, is already here (a retry the client made in this
   * region after the failover is the same send).
   */
  async function reappend(tx: TxSql, e: ChatEvent, m: Envelope): Promise<Outcome> {
    const c = e.conversation_id;
    const seen = await tx`
      SELECT 1 FROM messages WHERE id = ${m.message_id} OR (sender_id = ${m.sender_id} AND idempotency_key = ${m.idempotency_key}) LIMIT 1`;
    if (seen.length > 0) return 'duplicate';
    const [bumped] = await tx<{ last_seq: number; large: boolean }[]>`
      UPDATE conversations SET last_seq = last_seq + 1, updated_at = date_trunc('milliseconds', clock_timestamp())
      WHERE id = ${c} RETURNING last_seq, large`;
    const inserted = await tx`
      INSERT INTO messages (id, conversation_id, sender_id, sequence, payload, idempotency_key, created_at, kind, ref_message_id)
      VALUES (${m.message_id}, ${c}, ${m.sender_id}, ${bumped!.last_seq}, ${JSON.stringify(m.payload)}::text::jsonb,
              ${m.idempotency_key}, ${m.created_at}, ${m.kind ?? 'message'}, ${m.ref_message_id ?? null})
      ON CONFLICT DO NOTHING`;
    // A send with the same key committed meanwhile: the whole batch is applied again, and then it is seen.
    if (inserted.count === 0) throw new Error(`re-append of message ${m.message_id} raced a write of the same key; retrying the batch`);
    const renumbered = { ...m, sequence_number: bumped!.last_seq };
    await effects(tx, e, renumbered);
    // This region's own event now (a new number, no origin): built as every entry's event is.
    await tx`
      INSERT INTO outbox (event_id, aggregateid, type, payload)
      SELECT (x.ev->>'event_id')::uuid, ${c}, x.ev->>'type', x.ev
      FROM (SELECT realchat_entry_event(m, ${bumped!.large}) AS ev FROM messages m WHERE m.id = ${m.message_id}) x`;
    log.info(
      {
        conversation_id: c,
        message_id: m.message_id,
        old_sequence: m.sequence_number,
        sequence: bumped!.last_seq,
        source_region: sourceRegion,
      },
      'entry of the lost home re-appended',
    );
    return 'reappended';
  }

  /**
   * Another region took over as the conversation's home (its failover): the copy follows the new
   * home. Entries above the takeover point are the old home's unmirrored ones: they leave the copy
   * and come back, renumbered, on the new home's stream.
   */
  async function rehomed(tx: TxSql, record: EventRecord, raw: Record<string, unknown>): Promise<Outcome> {
    const { conversation_id: c, home_region: home, home_epoch: epoch, takeover_sequence: takeover } = raw;
    if (typeof c !== 'string' || typeof home !== 'string' || !Number.isSafeInteger(epoch) || !Number.isSafeInteger(takeover))
      return 'invalid';
    const from = typeof raw.previous_home_region === 'string' ? raw.previous_home_region : undefined;
    const outcome = await applyRehoming(
      tx,
      { conversation_id: c, home_region: home, home_epoch: epoch as number, takeover_sequence: takeover as number, from_region: from },
      log,
    );
    if (outcome !== 'applied') return outcome;
    await toOutbox(tx, record, { event_id: String(raw.event_id), conversation_id: c, type: 'conversation.rehomed' });
    return 'applied';
  }

  async function one(tx: TxSql, record: EventRecord, counts: MirrorApplyCounts): Promise<Outcome> {
    if (record.originRegion && record.originRegion !== sourceRegion) return 'foreign';
    let event: ChatEvent | null;
    try {
      const raw = JSON.parse(record.value) as Record<string, unknown>;
      // Not a ChatEvent: no client frame and no route, only copies follow it.
      if (raw?.type === 'conversation.rehomed' && isUuid(raw.event_id)) return rehomed(tx, record, raw);
      event = decodeEvent(raw);
    } catch (err) {
      // The source's own consumers dead-letter such a record; a copy can only skip it.
      log.error(
        { err, source_region: sourceRegion, event_id: record.eventId, conversation_id: record.key },
        'mirrored record is not a valid event: skipped',
      );
      return 'invalid';
    }
    if (!event) return 'unknownType';
    const m = entryOf(event);
    if (m) return entry(tx, record, event, m, counts);
    if (event.type === 'conversation.members_added') {
      const outcome = await create(tx, event);
      if (outcome === 'applied') await toOutbox(tx, record, event);
      return outcome;
    }
    if (event.type === 'conversation.read') {
      const copy = await copyOf(tx, event.conversation_id);
      if (!copy) return 'unknownConversation';
      // A receipt has no sequence to deduplicate by: its event id is remembered instead.
      const fresh = await tx`INSERT INTO mirror_applied_events (event_id) VALUES (${event.event_id}) ON CONFLICT DO NOTHING`;
      if (fresh.count === 0) return 'duplicate';
      // Read positions merge by maximum (each region may record them).
      await tx`
        INSERT INTO user_conversation_state AS s (user_id, conversation_id, last_read_sequence)
        VALUES (${event.user_id}, ${event.conversation_id}, ${event.read_sequence})
        ON CONFLICT (user_id, conversation_id) DO UPDATE SET last_read_sequence = EXCLUDED.last_read_sequence
          WHERE s.last_read_sequence < EXCLUDED.last_read_sequence`;
      await toOutbox(tx, record, event);
      return 'applied';
    }
    return 'unknownType';
  }

  return {
    async apply(records) {
      const counts: MirrorApplyCounts = {
        applied: 0,
        duplicate: 0,
        foreign: 0,
        unknownConversation: 0,
        homedHere: 0,
        reappended: 0,
        gaps: 0,
        unknownType: 0,
        invalid: 0,
      };
      if (records.length === 0) return counts;
      await timedQuery(
        sql.begin(async (tx) => {
          // This transaction writes copies on their homes' behalf (the fence, 0013_regions.sql).
          await tx`SET LOCAL realchat.copy_write = 'on'`;
          for (const r of records) counts[await one(tx, r, counts)]++;
          if (deps.outboxMode === 'wal') await tx`DELETE FROM outbox WHERE xmin = pg_current_xact_id()::xid`;
        }),
        deps.queryTimeoutMs,
        'mirror apply',
      );
      if (now() - prunedAt >= PRUNE_EVERY_MS) {
        prunedAt = now();
        // Bounded per round: a backlog of old rows goes over several hours, never in one long statement.
        await timedQuery(
          sql`DELETE FROM mirror_applied_events WHERE event_id IN (
                SELECT event_id FROM mirror_applied_events WHERE applied_at < now() - ${REMEMBER_RECEIPTS_MS} * interval '1 millisecond' LIMIT 10000)`,
          deps.queryTimeoutMs,
          'mirror prune',
        );
      }
      if (counts.unknownConversation > 0 || counts.homedHere > 0)
        log.warn({ source_region: sourceRegion, ...counts }, 'mirrored entries not applied: no copy of their conversation, or homed here');
      return counts;
    },
  };
}
