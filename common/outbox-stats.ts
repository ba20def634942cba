/**
 * Outbox backlog figures, shared by the gateway (refuses sends past the bound) and the relay
 * (metrics). The documented ops queries (docs/operations.md) are the same SQL.
 */
import type { Sql } from './db.js';
import { withTimeout } from './db.js';

export interface OutboxStats {
  /** Unpublished rows, counted up to `cap` (so the query cost stays bounded). */
  backlog: number;
  /** Seconds since the oldest unpublished row was written; 0 when empty. */
  oldestAgeS: number;
}

export async function readOutboxStats(sql: Sql, cap: number, timeoutMs: number): Promise<OutboxStats> {
  const [row] = await withTimeout(
    sql<{ backlog: number; oldest_age_s: number | null }[]>`
      SELECT (SELECT count(*)::int FROM (SELECT 1 FROM outbox LIMIT ${cap}) capped) AS backlog,
             (SELECT extract(epoch FROM clock_timestamp() - created_at)::float8 FROM outbox ORDER BY id LIMIT 1) AS oldest_age_s`,
    timeoutMs,
    'outbox stats',
  );
  return { backlog: row!.backlog, oldestAgeS: Math.max(0, row!.oldest_age_s ?? 0) };
}

/**
 * Polls the backlog in the background; `overloaded` turns true once the backlog reaches the bound
 * (the relay or Kafka is behind) and false again below it. A failed poll keeps the last state.
 */
export class BacklogMonitor {
  overloaded = false;
  last: OutboxStats = { backlog: 0, oldestAgeS: 0 };
  private timer: NodeJS.Timeout | null = null;
  private inFlight = false;

  constructor(
    private readonly sql: Sql,
    private readonly bound: number,
    private readonly intervalMs: number,
    private readonly timeoutMs: number,
    private readonly onStats: (s: OutboxStats) => void = () => {},
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.poll(), this.intervalMs);
    this.timer.unref();
    void this.poll();
  }

  async poll(): Promise<void> {
    if (this.inFlight) return;
    this.inFlight = true;
    try {
      this.last = await readOutboxStats(this.sql, this.bound + 1, this.timeoutMs);
      this.overloaded = this.last.backlog >= this.bound;
      this.onStats(this.last);
    } catch {
      // The database being down is reported by the send path itself.
    } finally {
      this.inFlight = false;
    }
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }
}
