/**
 * A gateway or relay process started while PostgreSQL is down (a supervisor's restart overlapping
 * a database restart: docs/chaos.md, finding 18) waits for the database and then applies the
 * migrations, instead of exiting 1 at its first query (or exiting 0 because nothing held its event
 * loop while it waited).
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, startPostgres, type PostgresServer } from './harness/postgres.js';
import { repoRoot } from './harness/proc.js';
import { until } from './harness/until.js';

describe.each(['gateway', 'relay'] as const)('%s start with PostgreSQL down (real PostgreSQL, real process)', (role) => {
  let pg: PostgresServer;
  beforeAll(async () => {
    pg = await startPostgres();
  });
  afterAll(() => pg?.stop());

  it('waits for the database, then applies the migrations, instead of exiting', async () => {
    pg.kill();
    const child = spawn(process.execPath, [join(repoRoot(fileURLToPath(import.meta.url)), 'dist', role, 'main.js')], {
      env: {
        PATH: process.env.PATH ?? '',
        LOG_LEVEL: 'info',
        HOST: '127.0.0.1',
        PORT: String(await freePort()),
        METRICS_PORT: String(await freePort()),
        DATABASE_URL: pg.url,
        // Nothing listens there: the start must get past the database before it needs Kafka.
        KAFKA_BROKERS: `127.0.0.1:${await freePort()}`,
        REALCHAT_JWT_SECRET: randomBytes(32).toString('hex'),
        REALCHAT_NODE_ID: `${role}-waits`,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out = (out + b.toString()).slice(-20_000)));
    child.stderr.on('data', (b: Buffer) => (out = (out + b.toString()).slice(-20_000)));
    let exitCode: number | null = null;
    child.once('exit', (code) => (exitCode = code ?? -1));
    const sql = postgres(pg.url, { max: 1, onnotice: () => {}, connect_timeout: 2 });
    try {
      await until(
        `the ${role} says it waits for PostgreSQL`,
        () => out.includes('waiting to apply migrations') || exitCode !== null,
        30_000,
      );
      expect(exitCode, out.slice(-3000)).toBeNull();
      // Down for a while longer than one attempt: still alive.
      await new Promise((r) => setTimeout(r, 2000));
      expect(exitCode, out.slice(-3000)).toBeNull();
      pg.restart();
      // The process applied them (the database is new): the schema is there.
      await until(
        'migrations applied after the database came back',
        async () => exitCode !== null || (await sql`SELECT count(*)::int AS n FROM schema_migrations`.catch(() => [{ n: 0 }]))[0]!.n > 0,
        30_000,
        100,
      );
      expect(exitCode, out.slice(-3000)).toBeNull();
    } finally {
      child.kill('SIGKILL');
      await sql.end({ timeout: 1 });
    }
  });
});
