/** The circuit breaker's states on a fake clock: closed → open after N failures in a window → half-open probes → closed or open again. */
import { describe, expect, it } from 'vitest';
import { CircuitBreaker, type BreakerSettings, type BreakerState } from '../common/breaker.js';
import { loadConfig } from '../common/config.js';

function setup(settings: Partial<BreakerSettings> = {}) {
  let t = 1_000;
  const changes: BreakerState[] = [];
  const b = new CircuitBreaker(
    { failureThreshold: 3, windowMs: 1000, openMs: 500, halfOpenProbes: 2, ...settings },
    () => t,
    (s) => changes.push(s),
  );
  return { b, changes, advance: (ms: number) => (t += ms) };
}

describe('circuit breaker', () => {
  it('one failure does not trip it; N failures within the window do', () => {
    const { b } = setup();
    b.failure();
    expect(b.state).toBe('closed');
    expect(b.allow()).toBe(true);
    b.failure();
    expect(b.open).toBe(false);
    b.failure();
    expect(b.state).toBe('open');
    expect(b.open).toBe(true);
    expect(b.allow()).toBe(false);
  });

  it('failures spread wider than the window never trip it', () => {
    const { b, advance } = setup();
    for (let i = 0; i < 10; i++) {
      b.failure();
      advance(600);
    }
    expect(b.state).toBe('closed');
  });

  it('after the cool-down it lets a limited number of probes through; a success closes it', () => {
    const { b, advance, changes } = setup();
    for (let i = 0; i < 3; i++) b.failure();
    advance(499);
    expect(b.allow()).toBe(false);
    advance(1);
    expect(b.state).toBe('half_open');
    expect(b.allow()).toBe(true);
    expect(b.allow()).toBe(true);
    // Both probes are out: the rest keep taking the degraded path.
    expect(b.allow()).toBe(false);
    expect(b.open).toBe(true);
    b.success();
    expect(b.state).toBe('closed');
    expect(b.allow()).toBe(true);
    expect(changes).toEqual(['open', 'half_open', 'closed']);
  });

  it('a failed probe opens it again for another cool-down', () => {
    const { b, advance, changes } = setup();
    for (let i = 0; i < 3; i++) b.failure();
    advance(500);
    expect(b.allow()).toBe(true);
    b.failure();
    expect(b.state).toBe('open');
    advance(499);
    expect(b.allow()).toBe(false);
    advance(1);
    expect(b.allow()).toBe(true);
    expect(changes).toEqual(['open', 'half_open', 'open', 'half_open']);
  });

  it('probes that never report back do not keep it shut: new ones are allowed after another cool-down', () => {
    const { b, advance } = setup({ halfOpenProbes: 1 });
    for (let i = 0; i < 3; i++) b.failure();
    advance(500);
    expect(b.allow()).toBe(true);
    expect(b.allow()).toBe(false);
    advance(500);
    expect(b.allow()).toBe(true);
  });

  it('a closed breaker forgets failures once it closes: it takes N fresh ones to open again', () => {
    const { b, advance } = setup();
    for (let i = 0; i < 3; i++) b.failure();
    advance(500);
    b.allow();
    b.success();
    b.failure();
    b.failure();
    expect(b.state).toBe('closed');
    b.failure();
    expect(b.state).toBe('open');
  });

  it('settings come per dependency from the environment', () => {
    const c = loadConfig({
      REALCHAT_BREAKER_REDIS_FAILURES: '5',
      REALCHAT_BREAKER_REDIS_WINDOW_MS: '2000',
      REALCHAT_BREAKER_REDIS_OPEN_MS: '700',
      REALCHAT_BREAKER_REDIS_PROBES: '2',
      REALCHAT_BREAKER_POSTGRES_FAILURES: '9',
    });
    expect(c.breakers.redis).toEqual({ failureThreshold: 5, windowMs: 2000, openMs: 700, halfOpenProbes: 2 });
    expect(c.breakers.postgres.failureThreshold).toBe(9);
    // The older knob still sets the registry's open time.
    expect(loadConfig({ REALCHAT_PRESENCE_BREAKER_MS: '3000' }).breakers.redis.openMs).toBe(3000);
    expect(() => loadConfig({ REALCHAT_BREAKER_POSTGRES_PROBES: '0' })).toThrow(/REALCHAT_BREAKER_POSTGRES_PROBES/);
  });
});
