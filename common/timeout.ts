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

function isCancellable(p: unknown): p is Cancellable {
  return typeof (p as Partial<Cancellable> | null)?.cancel === 'function';
}

/**
 * Rejects with TimeoutError after `ms`. If `p` can be cancelled (a postgres.js query), or
 * `onTimeout` is given, the work is called off too: a query the caller gave up on would otherwise
 * keep running (holding its connection, its locks and whatever gate admitted it) until the server's
 * statement_timeout, or run later from the driver's queue although nobody waits for it.
 */
export async function withTimeout<T>(p: Promise<T>, ms: number, what: string, onTimeout?: () => void): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let settled = false;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(new TimeoutError(`${what} timed out after ${ms} ms`));
      if (settled) return;
      try {
        onTimeout?.();
        // The cancel request is best effort: a server that does not answer is what timed out.
        if (isCancellable(p)) Promise.resolve(p.cancel()).catch(() => {});
      } catch {
        /* best effort */
      }
    }, ms);
    (timer as { unref?: () => void }).unref?.();
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    settled = true;
    clearTimeout(timer);
  }
}
