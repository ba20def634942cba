/**
 * A circuit breaker per dependency, so callers take their degraded path at once instead of each
 * waiting on a timeout while the dependency is down:
 *
 *   closed ──(failureThreshold failures within windowMs)──▶ open ──(openMs)──▶ half-open
 *   half-open: up to halfOpenProbes calls go through (a new allowance every openMs if none
 *   reports back); a success closes the breaker, a failure opens it for another openMs.
 *
 * One failure does not trip it: a single timeout under load is not an outage, and tripping on it
 * turned every blip into openMs of degraded routing. The clock is injected (tests) and monotonic by
 * default (a wall-clock jump must not hold it open or shut).
 */
export interface BreakerSettings {
  /** Failures within windowMs that open the breaker (1: the first failure does). */
  readonly failureThreshold: number;
  readonly windowMs: number;
  /** Time open before probing. */
  readonly openMs: number;
  /** Calls let through while half-open. */
  readonly halfOpenProbes: number;
}

export type BreakerState = 'closed' | 'open' | 'half_open';

export class CircuitBreaker {
  private current: BreakerState = 'closed';
  /** Times of the recent failures while closed (at most failureThreshold kept). */
  private failures: number[] = [];
  private openedAt = 0;
  private probesLeft = 0;
  private probeWindowAt = 0;

  constructor(
    private readonly settings: BreakerSettings,
    private readonly now: () => number = () => performance.now(),
    /** Told of every state change and the state it left (metrics, logs). */
    private readonly onChange?: (state: BreakerState, from: BreakerState) => void,
  ) {
    if (settings.failureThreshold < 1 || settings.halfOpenProbes < 1)
      throw new Error('breaker: failureThreshold and halfOpenProbes must be >= 1');
  }

  get state(): BreakerState {
    if (this.current === 'open' && this.now() - this.openedAt >= this.settings.openMs) this.enterHalfOpen();
    return this.current;
  }

  /** True when callers should skip the dependency (open, or half-open with every probe taken). */
  get open(): boolean {
    const s = this.state;
    if (s === 'half_open') return this.probesLeft <= 0 && this.now() - this.probeWindowAt < this.settings.openMs;
    return s === 'open';
  }

  /** Asks to call the dependency now; half-open, each yes is one probe. Report the outcome with success()/failure(). */
  allow(): boolean {
    const s = this.state;
    if (s === 'closed') return true;
    if (s === 'open') return false;
    if (this.probesLeft <= 0 && this.now() - this.probeWindowAt >= this.settings.openMs) {
      // Probes that never reported back must not keep it half-open and shut forever.
      this.probesLeft = this.settings.halfOpenProbes;
      this.probeWindowAt = this.now();
    }
    if (this.probesLeft <= 0) return false;
    this.probesLeft--;
    return true;
  }

  success(): void {
    if (this.state === 'half_open') {
      this.failures = [];
      this.transition('closed');
    }
  }

  failure(): void {
    const t = this.now();
    const s = this.state;
    if (s === 'open') return;
    if (s === 'half_open') {
      this.openAt(t);
      return;
    }
    this.failures = this.failures.filter((f) => t - f < this.settings.windowMs);
    this.failures.push(t);
    if (this.failures.length >= this.settings.failureThreshold) this.openAt(t);
  }

  private openAt(t: number): void {
    this.openedAt = t;
    this.failures = [];
    this.transition('open');
  }

  private enterHalfOpen(): void {
    this.probesLeft = this.settings.halfOpenProbes;
    this.probeWindowAt = this.now();
    this.transition('half_open');
  }

  private transition(to: BreakerState): void {
    const from = this.current;
    if (from === to) return;
    this.current = to;
    this.onChange?.(to, from);
  }
}
