/**
 * What an operator sees of a circuit breaker: the `realchat_breaker_open{dependency}` gauge, and a
 * log line when it opens (warn) and when it closes again (info). The once-a-second half-open
 * probes of a long outage are not logged: they would repeat through all of it.
 */
import type { BreakerState } from './breaker.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';

export type BreakerDependency = 'postgres' | 'redis';

const WHILE_OPEN: Record<BreakerDependency, string> = {
  postgres: 'request-path database work is refused unavailable at once',
  redis: 'presence lookups are skipped and deliveries broadcast',
};

/** The onChange callback for a CircuitBreaker of `dependency`; publishes the gauge at 0 at once. */
export function watchBreaker(
  dependency: BreakerDependency,
  log: Logger,
  metrics: Metrics,
): (state: BreakerState, from: BreakerState) => void {
  metrics.breakerOpen.set({ dependency }, 0);
  return (state, from) => {
    metrics.breakerOpen.set({ dependency }, state === 'closed' ? 0 : 1);
    // Only the opening that ends a closed spell: a failed half-open probe opens it again.
    if (state === 'open' && from === 'closed')
      log.warn({ kind: `breaker:${dependency}`, state }, `${dependency} breaker open: ${WHILE_OPEN[dependency]}`);
    if (state === 'closed') log.info({ kind: `breaker:${dependency}`, state }, `${dependency} breaker closed`);
  };
}
