/** Regions as the multi-region suites see them: a database with its store, and its event stream carried by hand. */
import { createSql, type Sql } from '../../common/db.js';
import { createLogger } from '../../common/log.js';
import { createMirrorApplier } from '../../delivery/mirror/applier.js';
import type { EventRecord } from '../../common/events.js';
import { pollOutbox } from '../../common/outbox.js';
import { Semaphore } from '../../common/semaphore.js';
import { createChatStore, type ChatStore } from '../../gateway/chat-store.js';
import { migrate } from '../../sql/migrate.js';
import { freshDatabase } from './server.js';

export interface RegionDb {
  name: string;
  url: string;
  sql: Sql;
  /** The gateway's store of that region (REALCHAT_REGION = name). */
  store: ChatStore;
}

/** A region's database (fresh, migrated) and its store. */
export async function regionDb(name: string): Promise<RegionDb> {
  const url = await freshDatabase();
  const sql = createSql({ url, maxConnections: 4, connectTimeoutS: 5, queryTimeoutMs: 10_000, applicationName: `region-${name}` });
  await migrate(sql);
  const store = createChatStore({
    sql,
    region: name,
    queryTimeoutMs: 10_000,
    maxRoomMembers: 100,
    largeRoomMembers: 50,
    maxPageBytes: 1024 * 1024,
    outboxMode: 'table',
    gate: new Semaphore(4, 100),
    sendBatch: { maxBatch: 50, maxInFlight: 1, maxQueued: 1000 },
  });
  return { name, url, sql, store };
}

/**
 * The region's stream as its relay would publish it (and MirrorMaker mirror it): its outbox, in
 * order, as event records; then emptied.
 */
/** What a client can read of a conversation: every entry as served, members with roles, read positions, the conversation's row. */
export async function snapshot(sql: Sql, conv: string) {
  const entries = await sql`SELECT realchat_envelope(m) AS e FROM messages m WHERE conversation_id = ${conv} ORDER BY sequence`;
  const members = await sql`SELECT user_id, role FROM members WHERE conversation_id = ${conv} ORDER BY user_id`;
  const reads = await sql`SELECT user_id, last_read_sequence FROM user_conversation_state WHERE conversation_id = ${conv} ORDER BY user_id`;
  const [c] = await sql`SELECT title, created_by, last_seq, member_count, who_can_add, created_at FROM conversations WHERE id = ${conv}`;
  return { entries: entries.map((r) => r.e), members: [...members], reads: [...reads], conversation: c };
}

export async function drainStream(sql: Sql): Promise<EventRecord[]> {
  const rows = await pollOutbox(sql, 10_000, 10_000);
  await sql`DELETE FROM outbox`;
  return rows.map((row) => ({
    key: row.aggregateid,
    value: row.value,
    type: row.type,
    eventId: row.event_id,
    traceId: row.trace_id,
    originRegion: row.origin_region,
  }));
}

/**
 * Makes a conversation a copy of one homed in `home`, as the mirror applier writes copies
 * (sql/migrations/0013_regions.sql): its writes are then refused here.
 */
export async function makeCopyOf(query: (text: string, params: unknown[]) => Promise<unknown>, conversationId: string, home: string) {
  await query(
    `WITH copy_write AS (SELECT set_config('realchat.copy_write', 'on', true))
     UPDATE conversations SET home_region = $2 FROM copy_write WHERE id = $1`,
    [conversationId, home],
  );
}

/**
 * A running region's stream, as MirrorMaker carries it to another region: every outbox row the
 * region writes is copied into a tap table (its relay deletes the outbox rows it published), and
 * `into` applies what was tapped since the last call to another region's database with its
 * mirror applier, then lets that region's pipeline deliver it.
 */
export async function tapStream(
  from: { query(text: string, params?: unknown[]): Promise<Array<Record<string, unknown>>> },
  sourceRegion: string,
): Promise<{ into(to: { app: { sql: Sql; settled(): Promise<void> } }): Promise<number> }> {
  await from.query(`CREATE TABLE mirror_tap (LIKE outbox INCLUDING ALL)`);
  await from.query(`CREATE FUNCTION mirror_tap() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN INSERT INTO mirror_tap SELECT NEW.*; RETURN NULL; END $$`);
  await from.query(`CREATE TRIGGER mirror_tap AFTER INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION mirror_tap()`);
  const log = createLogger({ level: 'silent', nodeId: `tap-${sourceRegion}`, role: 'mirror' });
  let tapped = 0;
  return {
    async into(to) {
      const rows = (await from.query(
        `SELECT id::text AS id, aggregateid, payload::text AS payload, type, event_id, trace_id FROM mirror_tap WHERE id > $1 ORDER BY id`,
        [tapped],
      )) as Array<{ id: string; aggregateid: string; payload: string; type: string; event_id: string; trace_id: string | null }>;
      if (rows.length === 0) return 0;
      tapped = Number(rows.at(-1)!.id);
      const records: EventRecord[] = rows.map((r) => ({
        key: r.aggregateid,
        value: r.payload,
        type: r.type,
        eventId: r.event_id,
        traceId: r.trace_id,
      }));
      const counts = await createMirrorApplier({ sql: to.app.sql, sourceRegion, log, queryTimeoutMs: 10_000 }).apply(records);
      await to.app.settled();
      return counts.applied;
    },
  };
}
