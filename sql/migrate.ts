import { readdir, readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isUnavailableError, type Sql } from '../common/db.js';
import type { Logger } from '../common/log.js';
import { retry } from '../common/retry.js';
import { withTimeout } from '../common/timeout.js';

/** Works from source (sql/) and from the build (dist/sql/): the .sql files stay in the repo's sql/migrations. */
export function migrationsDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates = [join(here, 'migrations'), join(here, '..', '..', 'sql', 'migrations')];
  const found = candidates.find((c) => existsSync(join(c, '0001_init.sql')));
  if (!found) throw new Error(`sql/migrations not found (looked in ${candidates.join(', ')})`);
  return found;
}

/**
 * Applies numbered forward-only migrations once each. An advisory lock serializes concurrent
 * starters (several gateway processes booting at once against one database).
 */
export async function migrate(sql: Sql, dir = migrationsDir()): Promise<string[]> {
  const files = (await readdir(dir)).filter((f) => /^\d{4}_.+\.sql$/.test(f)).sort();
  const applied: string[] = [];
  await sql.begin(async (tx) => {
    await tx`SELECT pg_advisory_xact_lock(727274)`;
    await tx`CREATE TABLE IF NOT EXISTS schema_migrations (
      version TEXT PRIMARY KEY,
      applied_at TIMESTAMPTZ NOT NULL DEFAULT now())`;
    const done = new Set((await tx<{ version: string }[]>`SELECT version FROM schema_migrations`).map((r) => r.version));
    for (const file of files) {
      if (done.has(file)) continue;
      await tx.unsafe(await readFile(join(dir, file), 'utf8'));
      await tx`INSERT INTO schema_migrations (version) VALUES (${file})`;
      applied.push(file);
    }
  });
  return applied;
}

/**
 * migrate() at a role's start, waiting for the database (about a minute at most) while it is not
 * reachable: a role restarted while PostgreSQL restarts (a supervisor's restart overlapping a
 * database restart) would otherwise exit at its first query and leave the pace of its next
 * attempt to the supervisor (docs/chaos.md, finding 18). Each attempt is bounded too, against a
 * server that stops answering.
 */
export function migrateWhenReachable(sql: Sql, log: Logger, attemptTimeoutMs = 60_000): Promise<string[]> {
  return retry(() => withTimeout(migrate(sql), attemptTimeoutMs, 'migrations'), {
    retries: 40,
    baseMs: 250,
    capMs: 2000,
    isRetriable: isUnavailableError,
    onRetry: (err, attempt, delayMs) =>
      log.warn({ err, attempt, delay_ms: delayMs }, 'PostgreSQL not reachable yet: waiting to apply migrations'),
    // A timer that holds the process: at a role's start nothing else does, and retry()'s own sleep is unref'd.
    sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
  });
}
