/**
 * The outbox backlog bound: the gateway refuses sends while the relay (or Kafka, or Debezium) is
 * behind, and the relay exports the same figures as metrics.
 */
import type { Sql } from './db.js';
import { readOutboxStats, readSlotLag, type BacklogBounds, type OutboxStats } from './outbox.js';

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
      this.overloaded =
        stats.backlog >= this.bounds.maxRows || (this.bounds.slot !== null && (stats.slotLagBytes ?? 0) > this.bounds.slot.maxLagBytes);
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
