/**
 * What one statement costs on the embedded database (PGlite behind pglite-socket, as `npm start`
 * runs it), on this machine: the floor under the embedded default's throughput, since every
 * statement runs on the process's one thread. Migrated schema, in-memory database, 1,000
 * conversations of 2 members; each figure is the median of 5 timed blocks after a warm-up.
 *   node dist/perf/pglite-floor.js [--out perf/results/pglite-floor-STAMP]
 * Writes OUT.json and OUT.md.
 */
import { writeFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { cpus } from 'node:os';
import { startEmbeddedPostgres } from '../common/embedded-postgres.js';
import { createSql, type Sql } from '../common/db.js';
import { migrate } from '../sql/migrate.js';
import { median } from './lib/stats.js';

interface Row {
  what: string;
  batch: number;
  msPerStatement: number;
  usPerMessage: number | null;
}

async function timed(blocks: number, reps: number, run: () => Promise<unknown>): Promise<number> {
  for (let i = 0; i < reps; i++) await run();
  const perBlock: number[] = [];
  for (let b = 0; b < blocks; b++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < reps; i++) await run();
    perBlock.push(Number(process.hrtime.bigint() - t0) / 1e6 / reps);
  }
  return median(perBlock);
}

async function seedConversations(sql: Sql, n: number): Promise<Array<{ c: string; s: string }>> {
  const pairs: Array<{ c: string; s: string }> = [];
  for (let i = 0; i < n; i++) {
    const [c, a, b] = [randomUUID(), randomUUID(), randomUUID()];
    await sql`INSERT INTO conversations (id, created_by) VALUES (${c}, ${a})`;
    await sql`INSERT INTO members (conversation_id, user_id) VALUES (${c}, ${a}), (${c}, ${b})`;
    pairs.push({ c, s: a }, { c, s: b });
  }
  return pairs;
}

async function main(): Promise<void> {
  const outArg = process.argv.indexOf('--out');
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  const out = outArg > 0 ? process.argv[outArg + 1]! : `perf/results/pglite-floor-${stamp}`;
  const db = await startEmbeddedPostgres(null);
  const sql = createSql({ url: db.url, maxConnections: 1, connectTimeoutS: 10, queryTimeoutMs: 60_000, applicationName: 'pglite-floor' });
  const rows: Row[] = [];
  try {
    await migrate(sql);
    const pairs = await seedConversations(sql, 1000);
    let k = 0;
    const batch = (n: number) =>
      JSON.stringify(
        Array.from({ length: n }, (_, i) => {
          const p = pairs[k++ % pairs.length]!;
          return { i, c: p.c, s: p.s, k: `floor-${k}`, p: { text: 'a message of about forty bytes, like most' }, b: 60, t: null };
        }),
      );
    const add = (what: string, n: number, ms: number, perMessage: boolean) =>
      rows.push({ what, batch: n, msPerStatement: ms, usPerMessage: perMessage ? (ms * 1000) / n : null });

    add('SELECT 1 (extended protocol)', 1, await timed(5, 200, () => sql`SELECT 1`), false);
    add('SELECT 1 (simple protocol)', 1, await timed(5, 200, () => sql.unsafe('SELECT 1').simple()), false);
    add(
      'member list of one conversation (delivery routing)',
      1,
      await timed(
        5,
        200,
        () => sql`SELECT ARRAY(SELECT user_id FROM members WHERE conversation_id = ${pairs[k++ % pairs.length]!.c}) AS m`,
      ),
      false,
    );
    for (const n of [1, 17, 100]) {
      const reps = n === 100 ? 10 : 40;
      add(
        'realchat_send_batch (the send path)',
        n,
        await timed(5, reps, () => sql`SELECT * FROM realchat_send_batch(${batch(n)}::text::jsonb, 'table')`),
        true,
      );
    }
    // The relay's side of the same messages: poll a batch and delete it.
    for (const n of [17, 100]) {
      await sql`SELECT * FROM realchat_send_batch(${batch(n * 20)}::text::jsonb, 'table')`;
      const ms = await timed(5, 4, async () => {
        const ids = await sql<{ id: string }[]>`SELECT id::text AS id, payload::text FROM outbox ORDER BY outbox.id LIMIT ${n}`;
        await sql.unsafe(`DELETE FROM outbox WHERE id = ANY('{${ids.map((r) => r.id).join(',')}}'::bigint[])`).simple();
      });
      add('relay: poll + delete', n, ms, true);
    }
  } finally {
    await sql.end({ timeout: 5 });
    await db.close();
  }
  const result = {
    scenario: 'pglite-floor',
    started_at: new Date().toISOString(),
    machine: { cpus: cpus().length, model: cpus()[0]?.model ?? '', node: process.version },
    rows,
  };
  writeFileSync(`${out}.json`, `${JSON.stringify(result, null, 2)}\n`);
  const md = [
    `# PGlite statement floor (${result.started_at}, ${result.machine.cpus} CPUs, Node ${result.machine.node})`,
    '',
    '`node dist/perf/pglite-floor.js` — median of 5 timed blocks, in-memory PGlite behind pglite-socket, postgres.js `max: 1`.',
    '',
    '| statement | batch | ms per statement | µs per message |',
    '| --- | --- | --- | --- |',
    ...rows.map(
      (r) => `| ${r.what} | ${r.batch} | ${r.msPerStatement.toFixed(2)} | ${r.usPerMessage === null ? '' : r.usPerMessage.toFixed(0)} |`,
    ),
    '',
  ].join('\n');
  writeFileSync(`${out}.md`, md);
  process.stdout.write(md);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
