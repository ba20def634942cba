/**
 * Publishes outbox rows to the event bus in id order, then deletes them. A crash between publish
 * and delete re-publishes the rows (duplicates, absorbed downstream by sequence); rows are never
 * skipped, because the relay reads what is still in the table rather than advancing a cursor
 * (a cursor on id would skip rows committed out of id order). Publishes run one after another
 * (per-key order on the bus); a batch's delete overlaps the next batch's poll and publish.
 */
import type { Sql } from '../common/db.js';
import { deleteOutboxRows, pollOutbox, type OutboxRow } from '../common/outbox.js';
import type { EventBus } from '../common/bus.js';
import type { EventRecord } from '../common/events.js';
import type { Logger } from '../common/log.js';
import type { Metrics } from '../common/metrics.js';
import { Sleeper, backoffMs } from '../common/backoff.js';
import { SpanKind, noTracing, type TraceSpan, type Tracing } from '../common/tracing.js';
import { carriesTrace } from '../common/trace-id.js';

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
  /** A "publish" span per traced event (absent: off). */
  tracing?: Tracing;
  /**
   * Leadership of the Kafka relay (relay/lease.ts); absent for the in-process relay, which is the
   * only publisher of its database. Checked before every publish; deletes are conditional on it.
   */
  fence?: PublishFence;
}

export interface PublishFence {
  /** The fencing token while this relay may publish; null once it may not (lost, or about to expire). */
  token(): number | null;
  /** The database refused a delete under `token`: another relay holds the lease now. */
  fenced(token: number): void;
}

export interface OutboxRelay {
  start(): void;
  /** Called after a local commit so the relay need not wait for the next poll. */
  wake(): void;
  stop(): Promise<void>;
  /** Resolves once the outbox was seen empty (tests, graceful drain). */
  idle(): Promise<void>;
  /** The error of the last round if it failed (readiness); null after a successful one. */
  readonly lastError: unknown;
  /** False once the loop ended by itself (its fence was lost). */
  readonly running: boolean;
}

export function createOutboxRelay(opts: OutboxRelayOptions): OutboxRelay {
  const { sql, bus, log, metrics } = opts;
  const tracing = opts.tracing ?? noTracing();
  const sleeper = new Sleeper();
  let running = false;
  let loop: Promise<void> | null = null;
  let idleWaiters: Array<() => void> = [];
  let lastError: unknown = null;

  /**
   * The previous batch's delete, still running while the next batch is polled and published
   * (pipelined: the delete is a database round trip that need not hold up the next publish). At
   * most one is in flight; its rows are left out of the next poll. Its end wakes the loop.
   */
  let deleting: { ids: string[]; done: Promise<void>; outcome: { ok: boolean } | { err: unknown } | null } | null = null;

  function startDelete(rows: OutboxRow[], token: number | undefined): void {
    const ids = rows.map((r) => r.id);
    const d: NonNullable<typeof deleting> = { ids, done: Promise.resolve(), outcome: null };
    d.done = deleteOutboxRows(sql, ids, opts.queryTimeoutMs, token)
      .then(
        (ok) => {
          d.outcome = { ok };
          if (ok) metrics.outboxPublished.inc(rows.length);
          else {
            // Published but not deleted: the new leader publishes these rows again (duplicates, never a loss).
            log.warn({ token, rows: rows.length }, 'outbox delete refused: the relay lease passed to another relay');
            opts.fence!.fenced(token!);
          }
        },
        (err: unknown) => {
          d.outcome = { err };
        },
      )
      .finally(() => sleeper.wake());
    deleting = d;
  }

  /** Waits for the delete in flight: false when it was fenced; throws its error (its rows are then polled again). */
  async function settleDelete(): Promise<boolean> {
    const d = deleting;
    if (!d) return true;
    await d.done;
    deleting = null;
    const outcome = d.outcome!;
    if ('err' in outcome) throw outcome.err;
    return outcome.ok;
  }

  /** Rows published, or null when the fence is gone (the loop ends). */
  async function pollOnce(): Promise<number | null> {
    if (opts.fence && opts.fence.token() === null) return null;
    const rows = await pollOutbox(sql, opts.batchSize, opts.queryTimeoutMs, deleting?.ids);
    if (rows.length === 0) {
      if (deleting && deleting.outcome === null) return 0;
      return (await settleDelete()) ? 0 : null;
    }
    // Checked again right before the publish: the poll may have taken a while (or the process was paused).
    const token = opts.fence ? opts.fence.token() : undefined;
    if (token === null) return null;
    const records: EventRecord[] = rows.map((r) => ({
      key: r.aggregateid,
      value: r.value,
      type: r.type,
      eventId: r.event_id,
      traceId: r.trace_id,
      ...(r.origin_region ? { originRegion: r.origin_region } : {}),
    }));
    const spans = tracing.enabled ? startPublishSpans(tracing, records) : null;
    try {
      await bus.publish(records);
    } catch (err) {
      for (const span of spans ?? []) span?.end(err);
      throw err;
    }
    for (const span of spans ?? []) span?.end();
    const now = Date.now();
    for (const r of rows) metrics.pipelineSeconds.observe({ stage: 'published' }, (now - r.created_ms) / 1000);
    if (!(await settleDelete())) return null;
    startDelete(rows, token);
    return rows.length;
  }

  async function run(): Promise<void> {
    let failures = 0;
    while (running) {
      try {
        const n = await pollOnce();
        failures = 0;
        lastError = null;
        if (n === null) {
          running = false;
          break;
        }
        // While rows keep coming, poll again at once: the publish just done was the linger.
        if (n > 0) continue;
        // Nothing new, but the last delete has not landed: not idle yet (its end, or a commit, wakes us).
        if (deleting) {
          await sleeper.sleep(opts.pollMs);
          continue;
        }
        const waiters = idleWaiters;
        idleWaiters = [];
        for (const w of waiters) w();
        await sleeper.sleep(opts.pollMs);
        if (opts.lingerMs > 0 && running) await new Promise((r) => setTimeout(r, opts.lingerMs));
      } catch (err) {
        failures++;
        lastError = err;
        metrics.relayErrors.inc();
        const delay = backoffMs(failures);
        log.warn({ err, attempt: failures, retry_in_ms: delay }, 'outbox relay failed; retrying');
        await sleeper.sleep(delay);
      }
    }
    // Stopped: the last delete lands (or fails) before stop() returns.
    await settleDelete().catch(() => {});
    const waiters = idleWaiters;
    idleWaiters = [];
    for (const w of waiters) w();
  }

  return {
    get lastError() {
      return lastError;
    },
    get running() {
      return running;
    },
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
        if (!running) return resolve();
        idleWaiters.push(resolve);
        sleeper.wake();
      });
    },
  };
}

/** One span per event that carries a trace; each record then carries its span's context onward. */
function startPublishSpans(tracing: Tracing, records: EventRecord[]): Array<TraceSpan | null> {
  return records.map((r) => {
    if (!carriesTrace(r.traceId)) return null;
    const span = tracing.start('publish', r.traceId, SpanKind.PRODUCER);
    if (span) r.traceId = span.traceparent;
    return span;
  });
}
