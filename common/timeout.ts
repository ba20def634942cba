/**
 * A deadline for any promise: every network call has one. No Node imports, so the SDK (browsers)
 * shares it; the timer never keeps a Node process alive.
 */
export class TimeoutError extends Error {
  override name = 'TimeoutError';
}

/**
 * Work that can be called off: a postgres.js query (`.cancel()` removes it from the driver's queue,
 * or asks the server to cancel it once sent), or anything shaped like one.
 */
export interface Cancellable {
  cancel(): unknown;
}

/** What postgres.js keeps on a query: `state` once it was written to a connection, `active` while it is the one running there. */
interface QueryState {
  state?: unknown;
  active?: boolean;
}

/**
 * Whether calling `cancel()` now is safe. postgres.js 3.4 pipelines queries on a connection; a
 * query cancelled while it waits in that pipeline (written, not yet running) is skipped when its
 * turn comes, and the connection then hands each later query the answer of the one before it (a
 * send batch resolved with another batch's rows: acknowledged, never stored; the cancelled query
 * never settles). tests/postgres-cancel.test.ts shows it on a real server. Such a query is left to
 * run: nobody waits for its answer, and what it costs is one statement.
 */
export function cancellableNow(p: unknown): p is Cancellable {
  if (typeof (p as Partial<Cancellable> | null)?.cancel !== 'function') return false;
  const q = p as QueryState;
  return !(q.state !== undefined && q.state !== null && q.active !== true);
}

/**
 * Calls the work off, best effort, without leaving a rejection unhandled. postgres.js 3.4's
 * `Query.cancel()` returns `this.canceller && (this.canceller(this), this.canceller = null)`, i.e.
 * null, and drops the promise of its cancel request; that request opens a connection of its own,
 * so a cancel issued while the server is restarting rejected with ECONNREFUSED and nobody handled
 * it (docs/chaos.md finding 18). The canceller is therefore called here, where its promise can be
 * caught; anything else shaped like a query falls back to `cancel()`.
 */
export function cancelQuietly(work: Cancellable): void {
  const q = work as Cancellable & { canceller?: ((query: unknown) => unknown) | null };
  try {
    const canceller = q.canceller;
    if (typeof canceller === 'function') {
      q.canceller = null;
      Promise.resolve(canceller(q)).catch(() => {});
    } else Promise.resolve(work.cancel()).catch(() => {});
  } catch {
    /* best effort: a server that does not answer is usually what the caller gave up on */
  }
}

/**
 * Runs `fn` once the current event-loop turn has read its sockets. A deadline is a plain timer, and
 * after a turn that ran longer than it (a reconnect storm's hellos: 300-700 ms on a gateway; the
 * whole machine stalled for seconds on two cores), Node runs due timers before it reads the
 * sockets: an answer already waiting there would be reported as a timeout. A setImmediate runs
 * right after those reads, so an answer that arrived in time settles first. Browsers (the SDK
 * shares this file) have no setImmediate; a zero timer is the nearest they offer.
 */
function afterPendingReads(fn: () => void): void {
  const immediate = (globalThis as { setImmediate?: (f: () => void) => unknown }).setImmediate;
  if (immediate) immediate(fn);
  else setTimeout(fn, 0);
}

/** A deadline's timer: `fn` runs `ms` later, after that turn's socket reads; it never keeps a process alive. */
export function deadlineTimer(ms: number, fn: () => void): ReturnType<typeof setTimeout> {
  const timer = setTimeout(() => afterPendingReads(fn), ms);
  (timer as { unref?: () => void }).unref?.();
  return timer;
}

/**
 * Rejects with TimeoutError after `ms`, unless `p` settled in the turn that read its answer
 * (afterPendingReads). If `p` can be cancelled (a postgres.js query), or `onTimeout` is given, the
 * work is called off too: a query the caller gave up on would otherwise keep running (holding its
 * connection, its locks and whatever gate admitted it) until the server's statement_timeout, or
 * run later from the driver's queue although nobody waits for it.
 */
export async function withTimeout<T>(p: Promise<T>, ms: number, what: string, onTimeout?: () => void): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let settled = false;
  const timeout = new Promise<never>((_, reject) => {
    timer = deadlineTimer(ms, () => {
      if (settled) return;
      reject(new TimeoutError(`${what} timed out after ${ms} ms`));
      try {
        onTimeout?.();
      } catch {
        /* best effort */
      }
      if (cancellableNow(p)) cancelQuietly(p);
    });
  });
  const done = () => {
    settled = true;
  };
  p.then(done, done);
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
