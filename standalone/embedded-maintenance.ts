/**
 * Vacuum and checkpoints for the embedded database. PGlite runs PostgreSQL as one backend with no
 * background processes: no autovacuum (`autovacuum` says on, and nothing ever runs) and no
 * checkpointer (a checkpoint happens only at shutdown). Measured (docs/operations.md, "Embedded
 * default"): without this, the outbox, a queue whose every row is deleted once published, keeps
 * the space of every event ever written, rows updated on every send (sequences, read marks) leave
 * a dead version each time, and the WAL grows without bound (~2.7 KB per message), all of which a
 * restart after a crash would also have to replay.
 *
 * Every round vacuums the outbox (cheap: its live rows are few, and the empty tail is truncated)
 * and checkpoints (the WAL before it can then be recycled: EMBEDDED_SETTINGS keeps it small);
 * every `fullEvery`-th round also vacuums and analyzes the whole database (the planner's
 * statistics are never refreshed otherwise either). PGlite has one connection, so maintenance
 * holds up every other query while it runs: a round took 83-122 ms at 1,000 msg/s, a full one
 * about a second with 60,000 messages stored, hence the spacing.
 */
import type { Sql } from '../common/db.js';
import type { Logger } from '../common/log.js';
import { Sleeper } from '../common/backoff.js';
import { withTimeout } from '../common/timeout.js';

export interface EmbeddedMaintenanceOptions {
  sql: Sql;
  log: Logger;
  /** Between rounds. */
  intervalMs: number;
  /** Every this many rounds the whole database is vacuumed and analyzed (the first after that many rounds, not at start). */
  fullEvery: number;
  timeoutMs: number;
}

export interface EmbeddedMaintenance {
  stop(): Promise<void>;
}

export function startEmbeddedMaintenance(opts: EmbeddedMaintenanceOptions): EmbeddedMaintenance {
  const { sql, log } = opts;
  const sleeper = new Sleeper();
  let running = true;

  // Simple protocol: VACUUM may not run inside a transaction block; nothing here is caller text.
  const run = (statement: string) => withTimeout(sql.unsafe(statement).simple(), opts.timeoutMs, statement);

  async function runOnce(full: boolean): Promise<void> {
    const started = Date.now();
    await run('VACUUM outbox');
    if (full) await run('VACUUM (ANALYZE)');
    await run('CHECKPOINT');
    const ms = Date.now() - started;
    // Every query of this process waited that long: worth a line when it was long.
    if (ms >= 1000) log.info({ full, ms }, 'embedded database maintained (other queries waited meanwhile)');
    else log.debug({ full, ms }, 'embedded database maintained');
  }

  const loop = (async () => {
    let round = 0;
    while (running) {
      await sleeper.sleep(opts.intervalMs);
      if (!running) break;
      round++;
      try {
        await runOnce(round % opts.fullEvery === 0);
      } catch (err) {
        // The next round tries again; a database that is down is reported by the paths that serve users.
        log.warn({ err }, 'embedded database maintenance failed');
      }
    }
  })();

  return {
    async stop() {
      running = false;
      sleeper.wake();
      await loop;
    },
  };
}
