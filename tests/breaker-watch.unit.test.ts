/**
 * watchBreaker (common/breaker-watch.ts): a breaker's state as the gauge and log lines an operator
 * reads. An outage's repeated half-open probes (open → half_open → open ...) must not repeat the
 * "open" line, and the gauge counts half-open as not closed.
 */
import { describe, expect, it } from 'vitest';
import { watchBreaker } from '../common/breaker-watch.js';
import { CircuitBreaker } from '../common/breaker.js';
import { createLogger } from '../common/log.js';
import { createMetrics } from '../common/metrics.js';
import { LogSink } from './harness/server.js';

describe('watchBreaker', () => {
  it('gauges open and half-open as 1 and closed as 0; logs the first opening and the closing only', async () => {
    const logs = new LogSink();
    const log = createLogger({ level: 'info', nodeId: 'n1', role: 'test', destination: logs });
    const metrics = createMetrics({ nodeId: 'n1', defaultMetrics: false });
    let now = 0;
    const b = new CircuitBreaker(
      { failureThreshold: 2, windowMs: 1000, openMs: 100, halfOpenProbes: 1 },
      () => now,
      watchBreaker('redis', log, metrics),
    );
    const gauge = async () => (await metrics.breakerOpen.get()).values.find((v) => v.labels.dependency === 'redis')?.value;
    expect(await gauge()).toBe(0);

    b.failure();
    expect(await gauge()).toBe(0);
    b.failure();
    expect(b.state).toBe('open');
    expect(await gauge()).toBe(1);
    // A long outage: every probe fails and opens it again.
    for (let i = 0; i < 3; i++) {
      now += 100;
      expect(b.allow()).toBe(true);
      expect(await gauge()).toBe(1);
      b.failure();
    }
    now += 100;
    expect(b.allow()).toBe(true);
    b.success();
    expect(await gauge()).toBe(0);

    const lines = logs.find((l) => l.kind === 'breaker:redis');
    expect(lines.map((l) => [l.level, l.state])).toEqual([
      ['warn', 'open'],
      ['info', 'closed'],
    ]);
  });
});
