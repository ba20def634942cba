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
  /** wal mode: WAL bytes the CDC slot has not confirmed (-1: slot missing); null in table mode. */
  slotLagBytes: number | null;
}

export interface BacklogBounds {
  maxRows: number;
  slot: { name: string; maxLagBytes: number } | null;
}

export async function readOutboxStats(sql: Sql, cap: number, timeoutMs: number): Promise<OutboxStats> {
  const [row] = await withTimeout(
    sql<{ backlog: number; oldest_age_s: number | null }[]>`
      SELECT (SELECT count(*)::int FROM (SELECT 1 FROM outbox LIMIT ${cap}) capped) AS backlog,
             (SELECT extract(epoch FROM clock_timestamp() - created_at)::float8 FROM outbox ORDER BY id LIMIT 1) AS oldest_age_s`,
    timeoutMs,
    'outbox stats',
  );
  return { backlog: row!.backlog, oldestAgeS: Math.max(0, row!.oldest_age_s ?? 0), slotLagBytes: null };
}

/** WAL retained for a logical replication slot; -1 if the slot does not exist. */
export async function readSlotLag(sql: Sql, slot: string, timeoutMs: number): Promise<number> {
  const rows = await withTimeout(
    sql<{ lag: number | null }[]>`
      SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::float8 AS lag
      FROM pg_replication_slots WHERE slot_name = ${slot}`,
    timeoutMs,
    'slot lag',
  );
  return rows[0] ? (rows[0].lag ?? 0) : -1;
}

/**
 * Polls the backlog in the background; `overloaded` turns true once the backlog reaches the bound
 * (the relay or Kafka is behind) and false again below it. A failed poll keeps the last state.
 */
export class BacklogMonitor {
  overloaded = false;
  last: OutboxStats = { backlog: 0, oldestAgeS: 0, slotLagBytes: null };
  private timer: NodeJS.Timeout | null = null;
  private inFlight = false;

  constructor(
    private readonly sql: Sql,
    private readonly bounds: BacklogBounds,
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
      const stats = await readOutboxStats(this.sql, this.bounds.maxRows + 1, this.timeoutMs);
      if (this.bounds.slot) stats.slotLagBytes = await readSlotLag(this.sql, this.bounds.slot.name, this.timeoutMs);
      this.last = stats;
      this.overloaded = stats.backlog >= this.bounds.maxRows || (this.bounds.slot !== null && (stats.slotLagBytes ?? 0) > this.bounds.slot.maxLagBytes);
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
