/** Regions as the multi-region suites see them: a database with its store, and its event stream carried by hand. */
import { createSql, type Sql } from '../../common/db.js';
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
