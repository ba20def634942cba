/**
 * Publishes outbox rows to the event bus in id order, then deletes them. A crash between publish
 * and delete re-publishes the rows (duplicates, absorbed downstream by sequence); rows are never
 * skipped, because the relay reads what is still in the table rather than advancing a cursor
 * (a cursor on id would skip rows committed out of id order).
 */
import type { Sql } from '../common/db.js';
import { deleteOutboxRows, pollOutbox } from '../common/outbox.js';
import type { EventBus } from '../common/bus.js';
import type { EventRecord } from '../common/events.js';
import type { Logger } from '../common/log.js';
import type { Metrics } from '../common/metrics.js';
import { Sleeper, backoffMs } from '../common/backoff.js';

export interface OutboxRelayOptions {
  sql: Sql;
  bus: EventBus;
  log: Logger;
  metrics: Metrics;
  batchSize: number;
  pollMs: number;
  /**
   * After a wake-up, wait this long before polling, so the commits of the next few milliseconds
   * go out in the same batch: the broker's cost is per request, and one commit wakes the relay.
   */
  lingerMs: number;
  queryTimeoutMs: number;
}

export interface OutboxRelay {
  start(): void;
  /** Called after a local commit so the relay need not wait for the next poll. */
  wake(): void;
  stop(): Promise<void>;
  /** Resolves once the outbox was seen empty (tests, graceful drain). */
  idle(): Promise<void>;
}

export function createOutboxRelay(opts: OutboxRelayOptions): OutboxRelay {
  const { sql, bus, log, metrics } = opts;
  const sleeper = new Sleeper();
  let running = false;
  let loop: Promise<void> | null = null;
  let idleWaiters: Array<() => void> = [];

  async function pollOnce(): Promise<number> {
    const rows = await pollOutbox(sql, opts.batchSize, opts.queryTimeoutMs);
    if (rows.length === 0) return 0;
    const records: EventRecord[] = rows.map((r) => ({
      key: r.aggregateid,
      value: r.value,
      type: r.type,
      eventId: r.event_id,
      traceId: r.trace_id,
    }));
    await bus.publish(records);
    await deleteOutboxRows(
      sql,
      rows.map((r) => r.id),
      opts.queryTimeoutMs,
    );
    metrics.outboxPublished.inc(rows.length);
    const now = Date.now();
    for (const r of rows) metrics.pipelineSeconds.observe({ stage: 'published' }, (now - r.created_ms) / 1000);
    return rows.length;
  }

  async function run(): Promise<void> {
    let failures = 0;
    while (running) {
      try {
        const n = await pollOnce();
        failures = 0;
        if (n === opts.batchSize) continue;
        const waiters = idleWaiters;
        idleWaiters = [];
        for (const w of waiters) w();
        await sleeper.sleep(opts.pollMs);
        if (opts.lingerMs > 0 && running) await new Promise((r) => setTimeout(r, opts.lingerMs));
      } catch (err) {
        failures++;
        metrics.relayErrors.inc();
        const delay = backoffMs(failures);
        log.warn({ err, attempt: failures, retry_in_ms: delay }, 'outbox relay failed; retrying');
        await sleeper.sleep(delay);
      }
    }
  }

  return {
    start() {
      if (running) return;
      running = true;
      loop = run();
    },
    wake() {
      sleeper.wake();
    },
    async stop() {
      running = false;
      sleeper.wake();
      await loop;
      for (const w of idleWaiters) w();
      idleWaiters = [];
    },
    idle() {
      return new Promise((resolve) => {
        idleWaiters.push(resolve);
        sleeper.wake();
      });
    },
  };
}
