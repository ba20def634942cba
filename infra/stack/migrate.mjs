// Applies the schema migrations (sql/migrations, through the built dist/sql/migrate.js) before
// the stack's processes start, so relay, delivery, gateways and the Debezium connector (which
// needs public.outbox for its publication) can start in any order.
// usage: node infra/stack/migrate.mjs <postgres url> [timeout_s=30]
import postgres from 'postgres';
import { migrate } from '../../dist/sql/migrate.js';

const [url, timeoutArg = '30'] = process.argv.slice(2);
if (!url) {
  console.error('usage: migrate.mjs <postgres url> [timeout_s]');
  process.exit(2);
}
const deadline = Date.now() + Number(timeoutArg) * 1000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let last = 'no attempt';
while (Date.now() < deadline) {
  const sql = postgres(url, { max: 1, connect_timeout: 5, onnotice: () => {} });
  try {
    const applied = await migrate(sql);
    console.log(JSON.stringify({ migrated: applied }));
    await sql.end({ timeout: 5 });
    process.exit(0);
  } catch (e) {
    last = String(e?.message ? e.message : e);
    await sql.end({ timeout: 1 }).catch(() => {});
    // only connection problems are worth retrying; a broken migration is not
    if (!/ECONNREFUSED|ECONNRESET|CONNECT_TIMEOUT|57P03|the database system is starting up/.test(last)) break;
  }
  await sleep(300);
}
console.error(`migrate: ${last}`);
process.exit(1);
