/**
 * One active relay at a time, so per-conversation order holds with several relay processes: the
 * leader holds a PostgreSQL session-level advisory lock on a dedicated connection. If the leader
 * dies, PostgreSQL drops its session and the lock; a standby polling every `retryMs` takes over
 * (failover ≈ retryMs + TCP teardown, or the server's idle/keepalive detection for a hung peer).
 * A leader that cannot confirm its session within `checkTimeoutMs` steps down.
 */
import type { Sql } from '../common/db.js';
import { withTimeout } from '../common/timeout.js';

const OUTBOX_LEASE_KEY = 727275;

type Reserved = Awaited<ReturnType<Sql['reserve']>>;

export class OutboxLease {
  private conn: Reserved | null = null;

  constructor(
    private readonly sql: Sql,
    private readonly checkTimeoutMs: number,
  ) {}

  get held(): boolean {
    return this.conn !== null;
  }

  /** One attempt: true if this process is now the leader. */
  async tryAcquire(): Promise<boolean> {
    if (this.conn) return true;
    const conn = await withTimeout(this.sql.reserve(), this.checkTimeoutMs, 'lease connection');
    try {
      const [row] = await withTimeout(
        conn<{ ok: boolean }[]>`SELECT pg_try_advisory_lock(${OUTBOX_LEASE_KEY}) AS ok`,
        this.checkTimeoutMs,
        'lease acquire',
      );
      if (row!.ok) {
        this.conn = conn;
        return true;
      }
    } catch (err) {
      conn.release();
      throw err;
    }
    conn.release();
    return false;
  }

  /** False when the session holding the lock is gone: stop publishing at once. */
  async stillHeld(): Promise<boolean> {
    if (!this.conn) return false;
    try {
      await withTimeout(this.conn`SELECT 1`, this.checkTimeoutMs, 'lease check');
      return true;
    } catch {
      this.drop();
      return false;
    }
  }

  async release(): Promise<void> {
    const conn = this.conn;
    this.conn = null;
    if (!conn) return;
    try {
      await withTimeout(conn`SELECT pg_advisory_unlock(${OUTBOX_LEASE_KEY})`, this.checkTimeoutMs, 'lease release');
    } catch {
      /* the session is gone, and the lock with it */
    }
    conn.release();
  }

  private drop(): void {
    const conn = this.conn;
    this.conn = null;
    // Returning a broken connection to the pool lets postgres.js replace it.
    conn?.release();
  }
}
