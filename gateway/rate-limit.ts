import { AppError } from '../common/errors.js';
import { LruMap } from '../common/lru.js';

// One function for every bucket: a default closure per bucket would cost each connection ~56 bytes.
const monotonicNow = (): number => performance.now();

/**
 * Token buckets keyed by user (or connection). The map is bounded: when full, the least recently
 * used bucket is dropped, which can only make a limit more lenient for an idle key, never stricter.
 */
export class RateLimiter {
  private readonly buckets: LruMap<string, { tokens: number; at: number }>;

  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
    maxKeys = 100_000,
    private readonly now: () => number = monotonicNow,
  ) {
    this.buckets = new LruMap(maxKeys);
  }

  /** True if the action is allowed (and consumes a token). */
  take(key: string): boolean {
    const t = this.now();
    let b = this.buckets.get(key);
    if (b) {
      b.tokens = Math.min(this.burst, b.tokens + ((t - b.at) / 1000) * this.perSecond);
      b.at = t;
    } else {
      b = { tokens: this.burst, at: t };
      this.buckets.set(key, b);
    }
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }
}

/** A single bucket, kept inside one connection's state (no map lookups on the frame path). */
export class TokenBucket {
  private tokens: number;
  private at: number;

  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
    private readonly now: () => number = monotonicNow,
  ) {
    this.tokens = burst;
    this.at = now();
  }

  take(): boolean {
    const t = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((t - this.at) / 1000) * this.perSecond);
    this.at = t;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}

/**
 * Admits a write that appends a timeline entry (send, edit, delete; REST or WebSocket): the
 * user's send rate, then the outbox backlog bound (`admitSend` throws `unavailable`).
 */
export function admitEntryWrite(deps: { sendLimiter: RateLimiter; admitSend(): void }, userId: string): void {
  if (!deps.sendLimiter.take(userId)) throw new AppError('rate_limited', 'too many messages; slow down', { retryAfterS: 1 });
  deps.admitSend();
}
