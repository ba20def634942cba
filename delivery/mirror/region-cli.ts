/**
 * npm run region -- failover --from <lost region> [--to <this region>]
 * Re-homes in this region (DATABASE_URL, REALCHAT_REGION) every conversation homed in the lost
 * region (docs/multi-region.md, "Regional failover"); prints {"conversations": N}.
 */
import { parseArgs } from 'node:util';
import { loadConfig } from '../../common/config.js';
import { createSql } from '../../common/db.js';
import { failover } from './failover.js';

function usage(msg: string): never {
  console.error(`region: ${msg}\nusage: region failover --from <lost region> [--to <this region>]  (needs DATABASE_URL, REALCHAT_REGION)`);
  process.exit(2);
}
const { positionals, values } = parseArgs({ allowPositionals: true, options: { from: { type: 'string' }, to: { type: 'string' } } });
if (positionals[0] !== 'failover' || positionals.length !== 1) usage('the only command is failover');
let config: ReturnType<typeof loadConfig>;
try {
  config = loadConfig();
} catch (err) {
  usage((err as Error).message);
}
if (!config.databaseUrl) usage('DATABASE_URL is not set');
const to = values.to ?? config.region;
if (to !== config.region) usage(`--to ${to} is not this database's region (REALCHAT_REGION=${config.region}): run it against the new home`);
if (!values.from || !/^[a-z][a-z0-9-]{0,31}$/.test(values.from)) usage('--from must name the lost region');
if (values.from === to) usage(`--from ${values.from} is this region: a region takes over from another one`);
const sql = createSql({
  url: config.databaseUrl,
  maxConnections: 1,
  connectTimeoutS: 5,
  queryTimeoutMs: 60_000,
  applicationName: 'realchat-region',
});
try {
  const r = await failover(sql, { from: values.from, to, queryTimeoutMs: 60_000, outboxMode: config.outboxMode });
  console.log(JSON.stringify({ from: values.from, to, ...r }));
} finally {
  await sql.end({ timeout: 5 });
}
