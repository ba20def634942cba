/**
 * npm run replay -- --conversation <uuid> [--from-sequence N]
 * npm run replay -- --since <ISO time> [--conversation <uuid>]
 * Re-publishes stored messages by inserting them into the outbox again (DATABASE_URL).
 */
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { createSql } from '../common/db.js';
import { isUuid } from '../common/validate.js';
import { replayToOutbox, type ReplayScope } from '../common/outbox.js';

const { values } = parseArgs({
  options: { conversation: { type: 'string' }, 'from-sequence': { type: 'string' }, since: { type: 'string' }, batch: { type: 'string' } },
});
const url = process.env.DATABASE_URL;
function usage(msg: string): never {
  console.error(
    `replay: ${msg}\nusage: replay --conversation <uuid> [--from-sequence N] | --since <ISO time> [--conversation <uuid>]  (needs DATABASE_URL)`,
  );
  process.exit(2);
}
if (!url) usage('DATABASE_URL is not set');
const scope: ReplayScope = {};
if (values.conversation !== undefined) {
  if (!isUuid(values.conversation)) usage('--conversation must be a UUID');
  scope.conversationId = values.conversation.toLowerCase();
}
if (values['from-sequence'] !== undefined) {
  const n = Number(values['from-sequence']);
  if (!Number.isSafeInteger(n) || n < 1) usage('--from-sequence must be a positive integer');
  scope.fromSequence = n;
}
if (values.since !== undefined) {
  const d = new Date(values.since);
  if (Number.isNaN(d.getTime())) usage('--since must be an ISO-8601 time');
  scope.since = d;
}
if (!scope.conversationId && !scope.since) usage('give --conversation or --since');
const batch = values.batch ? Number(values.batch) : 5000;
const sql = createSql({ url, maxConnections: 1, connectTimeoutS: 5, queryTimeoutMs: 60_000, applicationName: 'realchat-replay' });
const traceId = `replay-${randomBytes(6).toString('hex')}`;
try {
  const outboxMode = process.env.REALCHAT_OUTBOX_MODE === 'wal' ? 'wal' : 'table';
  const n = await replayToOutbox(sql, scope, { batch, traceId, outboxMode });
  console.log(JSON.stringify({ replayed: n, trace_id: traceId }));
} finally {
  await sql.end({ timeout: 5 });
}
