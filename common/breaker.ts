/**
 * A minimal circuit breaker: after a failure the dependency is skipped for `openMs` (callers take
 * their degraded path at once instead of waiting on timeouts), then tried again.
 */
export class CircuitBreaker {
  private openUntil = 0;

  constructor(
    private readonly openMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  get open(): boolean {
    return this.now() < this.openUntil;
  }

  trip(): void {
    this.openUntil = this.now() + this.openMs;
  }
}
