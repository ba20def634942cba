/**
 * Regional failover (docs/multi-region.md): this region takes over as the home of every
 * conversation homed in a lost region. Per conversation, in one transaction: the copy becomes the
 * home (`home_region` NULL, `home_epoch` + 1), the takeover point (the last sequence applied from
 * the old home) is recorded in `region_failovers`, and a `conversation.rehomed` event goes out on
 * this region's stream, which every other region (the old home once it returns included) applies
 * to its copy. Sequencing continues after the takeover point; the old home's entries above it
 * that arrive later are re-appended by the mirror applier (delivery/mirror/applier.ts).
 */
import type { Sql } from '../../common/db.js';
import { timedQuery } from '../../common/db.js';

/** Conversations re-homed per transaction: bounded statements, and progress on a huge region. */
const BATCH = 1000;

export async function failover(
  sql: Sql,
  opts: { from: string; to: string; queryTimeoutMs: number; outboxMode: 'table' | 'wal' },
): Promise<{ conversations: number }> {
  if (opts.from === opts.to) throw new Error(`cannot fail over from region ${opts.from} to itself`);
  let total = 0;
  for (;;) {
    const moved = await timedQuery(
      sql.begin(async (tx) => {
        await tx`SET LOCAL realchat.copy_write = 'on'`;
        const [r] = await tx<{ n: number }[]>`
          WITH picked AS (
            SELECT id FROM conversations WHERE home_region = ${opts.from} ORDER BY id LIMIT ${BATCH} FOR UPDATE
          ), moved AS (
            UPDATE conversations c SET home_region = NULL, home_epoch = c.home_epoch + 1
            FROM picked WHERE c.id = picked.id
            RETURNING c.id, c.home_epoch, c.last_seq
          ), recorded AS (
            INSERT INTO region_failovers (conversation_id, home_epoch, from_region, takeover_seq)
            SELECT id, home_epoch, ${opts.from}, last_seq FROM moved
          ), events AS (
            SELECT m.*, gen_random_uuid() AS eid FROM moved m
          ), sent AS (
            INSERT INTO outbox (event_id, aggregateid, type, payload)
            SELECT e.eid, e.id::text, 'conversation.rehomed',
                   jsonb_build_object('schema_version', 1, 'event_id', e.eid, 'type', 'conversation.rehomed',
                     'conversation_id', e.id,
                     'occurred_at', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                     'home_region', ${opts.to}::text, 'previous_home_region', ${opts.from}::text,
                     'home_epoch', e.home_epoch, 'takeover_sequence', e.last_seq)
            FROM events e ORDER BY e.id
          )
          SELECT count(*)::int AS n FROM moved`;
        // Debezium mode: the rows were read from the WAL; the table stays empty.
        if (opts.outboxMode === 'wal') await tx`DELETE FROM outbox WHERE xmin = pg_current_xact_id()::xid`;
        return r!.n;
      }),
      opts.queryTimeoutMs,
      'failover batch',
    );
    total += moved;
    if (moved < BATCH) return { conversations: total };
  }
}
