/**
 * The relay publishes outbox rows in id order (common/outbox.ts pollOutbox): a conversation's events
 * reach the topic in the order they committed. Found by tests/event-mirror.test.ts: the poll sorted
 * the text form of the id, so a batch crossing a power of ten ("9", "10") published event 10 first.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import { createSql, type Sql } from '../common/db.js';
import { migrate } from '../sql/migrate.js';
import { pollOutbox } from '../common/outbox.js';
import { freshDatabase } from './harness/server.js';

describe('outbox poll order', () => {
  let sql: Sql;
  beforeAll(async () => {
    sql = createSql({
      url: await freshDatabase(),
      maxConnections: 2,
      connectTimeoutS: 5,
      queryTimeoutMs: 5000,
      applicationName: 'poll-order',
    });
    await migrate(sql);
  });
  afterAll(async () => sql?.end({ timeout: 5 }));

  it('returns the oldest rows by numeric id, across powers of ten', async () => {
    const conv = randomUUID();
    // Ids chosen around 10, 100 and 1000, inserted out of order.
    for (const id of [1000, 9, 100, 10, 99, 999, 8]) {
      await sql`INSERT INTO outbox (id, event_id, aggregateid, type, payload)
                VALUES (${id}, ${randomUUID()}, ${conv}, 'message.created', ${JSON.stringify({ n: id })}::text::jsonb)`;
    }
    expect((await pollOutbox(sql, 5, 5000)).map((r) => Number(r.id))).toEqual([8, 9, 10, 99, 100]);
    expect((await pollOutbox(sql, 10, 5000)).map((r) => Number(r.id))).toEqual([8, 9, 10, 99, 100, 999, 1000]);
  });
});
