/**
 * The one retry loop (kafkajs' src/retry is the model): attempts, exponential backoff with full
 * jitter and a cap, and a predicate that says which errors are worth another attempt. Everything
 * that retries goes through here, so every retry in the system is bounded and jittered alike.
 */
import { backoffMs } from './backoff.js';

export interface RetryPolicy {
  /** Attempts after the first one (0: no retry). */
  retries: number;
  /** Backoff ceiling of the first retry; doubles each time up to capMs. 0: retry at once. */
  baseMs: number;
  capMs: number;
  /** Errors for which this is false are thrown at once. Default: every error is retried. */
  isRetriable?: (err: unknown) => boolean;
  /** Before each wait: log, count, reset state. */
  onRetry?: (err: unknown, attempt: number, delayMs: number) => void;
  random?: () => number;
  sleep?: (ms: number) => Promise<void>;
}

const defaultSleep = (ms: number) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    (t as { unref?: () => void }).unref?.();
  });

/** Runs `fn` until it resolves, a non-retriable error, or the retries are spent (the last error is thrown). */
export async function retry<T>(fn: (attempt: number) => Promise<T>, policy: RetryPolicy): Promise<T> {
  const sleep = policy.sleep ?? defaultSleep;
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      if (attempt >= policy.retries || (policy.isRetriable && !policy.isRetriable(err))) throw err;
      const delay = policy.baseMs > 0 ? backoffMs(attempt, policy.baseMs, policy.capMs, policy.random) : 0;
      policy.onRetry?.(err, attempt, delay);
      if (delay > 0) await sleep(delay);
    }
  }
}
