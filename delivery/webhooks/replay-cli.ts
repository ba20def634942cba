/**
 * npm run webhooks:replay -- --webhook <uuid> [--since <ISO time>] [--event <uuid>] [--dry-run]
 * Puts dead-lettered webhook deliveries back to pending (DATABASE_URL); the running dispatcher
 * sends them with a fresh retry schedule. They join their conversation's queue by their original
 * row order, so a replayed event can reach the receiver after later events of its conversation
 * that were delivered meanwhile: receivers order by the event (sequence_number), dedup by webhook-id.
 */
import { parseArgs } from 'node:util';
import { createSql } from '../../common/db.js';
import { isUuid } from '../../common/validate.js';

const { values } = parseArgs({
  options: { webhook: { type: 'string' }, since: { type: 'string' }, event: { type: 'string' }, 'dry-run': { type: 'boolean' } },
});
function usage(msg: string): never {
  console.error(
    `webhooks:replay: ${msg}\nusage: webhooks:replay --webhook <uuid> [--since <ISO time>] [--event <uuid>] [--dry-run]  (needs DATABASE_URL)`,
  );
  process.exit(2);
}
const url = process.env.DATABASE_URL;
if (!url) usage('DATABASE_URL is not set');
if (!isUuid(values.webhook)) usage('--webhook must be a UUID');
if (values.event !== undefined && !isUuid(values.event)) usage('--event must be a UUID');
const since = values.since === undefined ? null : new Date(values.since);
if (since && Number.isNaN(since.getTime())) usage('--since must be an ISO-8601 time');

const sql = createSql({ url, maxConnections: 1, connectTimeoutS: 5, queryTimeoutMs: 60_000, applicationName: 'realchat-webhooks-replay' });
try {
  const where = sql`webhook_id = ${values.webhook.toLowerCase()} AND status = 'dead'
    ${since ? sql`AND created_at >= ${since}` : sql``} ${values.event ? sql`AND event_id = ${values.event.toLowerCase()}` : sql``}`;
  if (values['dry-run']) {
    const [row] = await sql<[{ n: number }]>`SELECT count(*)::int AS n FROM webhook_deliveries WHERE ${where}`;
    console.log(JSON.stringify({ would_replay: row.n }));
  } else {
    const rows = await sql`
      UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = clock_timestamp(), locked_until = NULL,
        finished_at = NULL, last_error = 'replayed'
      WHERE ${where} RETURNING id`;
    console.log(JSON.stringify({ replayed: rows.length }));
  }
} finally {
  await sql.end({ timeout: 5 });
}
