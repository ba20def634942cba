/**
 * One active relay at a time, so per-conversation order holds with several relay processes.
 *
 * Leadership is a lease row (sql/migrations/0007_relay_lease.sql) with an expiry on the database's
 * clock and a fencing token that every takeover increments. A session advisory lock was not
 * enough: a paused (SIGSTOPped) leader keeps its session, so the lock, for as long as TCP lets it,
 * and the outbox stalls; and nothing stopped it from acting once it resumed.
 *
 * - The leader renews every `renewMs` (expiry = the database's now() + ttl). A renewal that fails
 *   or is refused (the token is no longer current) ends the leadership at once.
 * - Independently of renewals, the leader counts its lease down on its own monotonic clock, from
 *   the moment it *sent* the last successful renewal, and considers itself leader only until
 *   ttl - margin has passed: the database's expiry is later than that in real time, so the leader
 *   stops before any standby can take over (clocks run at the same rate; the margin covers drift
 *   and the time from the check to the act).
 * - A standby takes over once the lease expired (database clock) or once the holder's backend is
 *   gone (the holder crashed: no need to wait for the expiry), incrementing the token.
 * - Deletes of published outbox rows are conditional on the token (common/outbox.ts), so a leader
 *   that lost the lease while paused cannot remove rows; the new leader publishes them again.
 */
import type { Sql } from '../common/db.js';
import { withTimeout } from '../common/timeout.js';

const LEASE = 'outbox';

export interface OutboxLeaseOptions {
  /**
   * A client of its own with one connection (and no max lifetime), whose backend pid is recorded in
   * the row: when that backend goes away (the process died), a standby takes over without waiting.
   * Not a reserved connection of a shared pool: a reserved connection that broke cannot be handed
   * back safely, while a one-connection client reconnects by itself.
   */
  sql: Sql;
  /** Unique per process (two processes must never share it). */
  holder: string;
  ttlMs: number;
  /** Leadership ends this long before the lease's expiry, by the local monotonic clock. */
  marginMs: number;
  /** Bound on each lease statement. */
  timeoutMs: number;
  /** Monotonic milliseconds. The wall clock can jump (NTP, an operator), which would stretch the lease. */
  monotonicMs?: () => number;
}

export class OutboxLease {
  private current: number | null = null;
  private validUntil = 0;
  private readonly now: () => number;

  constructor(private readonly opts: OutboxLeaseOptions) {
    this.now = opts.monotonicMs ?? (() => performance.now());
  }

  /** True while this process may act as the leader: it holds a token whose local deadline has not passed. */
  get held(): boolean {
    return this.current !== null && this.now() < this.validUntil;
  }

  /** The fencing token of the current leadership (null: not the leader). */
  get token(): number | null {
    return this.held ? this.current : null;
  }

  /** One attempt: true if this process is now the leader (with a new token). */
  async tryAcquire(): Promise<boolean> {
    const sentAt = this.now();
    const rows = await this.statement(
      this.opts.sql<{ token: number }[]>`
        UPDATE relay_lease SET holder = ${this.opts.holder}, holder_pid = pg_backend_pid(), token = token + 1,
               expires_at = now() + make_interval(secs => ${this.opts.ttlMs}::float8 / 1000)
        WHERE name = ${LEASE}
          AND (expires_at <= now() OR holder = ${this.opts.holder} OR holder_pid IS NULL
               OR NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = relay_lease.holder_pid))
        RETURNING token`,
      'lease acquire',
    );
    if (rows.length === 0) return false;
    this.current = rows[0]!.token;
    this.validUntil = sentAt + this.opts.ttlMs - this.opts.marginMs;
    return true;
  }

  /**
   * Extends the lease. False (and no longer the leader) when the token is not current any more or
   * the lease already expired on the database's clock; a failed statement also ends the leadership
   * and rejects.
   */
  async renew(): Promise<boolean> {
    const token = this.current;
    if (token === null) return false;
    const sentAt = this.now();
    try {
      const rows = await this.statement(
        this.opts.sql<{ token: number }[]>`
          UPDATE relay_lease SET expires_at = now() + make_interval(secs => ${this.opts.ttlMs}::float8 / 1000),
                 holder_pid = pg_backend_pid()
          WHERE name = ${LEASE} AND token = ${token} AND expires_at > now()
          RETURNING token`,
        'lease renew',
      );
      if (rows.length === 0) {
        this.stepDown();
        return false;
      }
      if (this.current === token) this.validUntil = sentAt + this.opts.ttlMs - this.opts.marginMs;
      return true;
    } catch (err) {
      this.stepDown();
      throw err;
    }
  }

  /** Ends the leadership locally (the database refused an act under this token, or the process stops). */
  stepDown(): void {
    this.current = null;
    this.validUntil = 0;
  }

  /** Hands the lease over at once (clean stop), so a standby need not wait for the expiry. */
  async release(): Promise<void> {
    const token = this.current;
    this.stepDown();
    if (token === null) return;
    await this.statement(
      this.opts.sql`UPDATE relay_lease SET expires_at = '-infinity', holder_pid = NULL WHERE name = ${LEASE} AND token = ${token}`,
      'lease release',
    ).catch(() => {
      /* it expires by itself */
    });
  }

  private statement<T>(q: Promise<T>, what: string): Promise<T> {
    return withTimeout(q, this.opts.timeoutMs, what);
  }
}
