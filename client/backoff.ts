/** Exponential backoff with full jitter: a random delay in [0, min(cap, base * 2^attempt)). */
export interface BackoffOptions {
  baseMs: number;
  capMs: number;
  random: () => number;
}

export function backoffDelay(attempt: number, o: BackoffOptions): number {
  const ceiling = Math.min(o.capMs, o.baseMs * 2 ** Math.min(Math.max(attempt, 0), 30));
  return Math.floor(o.random() * ceiling);
}
