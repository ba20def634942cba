/** Backpressure: a saturated event loop pauses the delivery consumer, and it resumes once idle. */
import { describe, expect, it } from 'vitest';
import { startLoadMonitor } from '../gateway/load-monitor.js';
import { createMetrics } from '../common/metrics.js';
import { createLogger } from '../common/log.js';
import type { RunningConsumer } from '../common/kafka/index.js';

describe('load monitor', () => {
  it('pauses while the loop is blocked and resumes after', async () => {
    const calls: string[] = [];
    let paused = false;
    const consumer: RunningConsumer = {
      get paused() {
        return paused;
      },
      pause: () => {
        paused = true;
        calls.push('pause');
      },
      resume: () => {
        paused = false;
        calls.push('resume');
      },
      stop: async () => {},
    };
    const metrics = createMetrics({ nodeId: 't', defaultMetrics: false });
    const stop = startLoadMonitor(consumer, { pauseAboveMs: 50, log: createLogger({ level: 'silent', nodeId: 't', role: 't' }), metrics });
    // Saturate the loop: 120 ms of CPU between timer turns, for 1.5 s.
    const until = Date.now() + 1500;
    while (Date.now() < until) {
      const t = Date.now();
      while (Date.now() - t < 120) {
        /* busy */
      }
      await new Promise((r) => setTimeout(r, 1));
    }
    expect(calls).toContain('pause');
    expect((await metrics.consumerPaused.get()).values[0]!.value).toBe(1);
    await new Promise((r) => setTimeout(r, 1500));
    stop();
    expect(calls.at(-1)).toBe('resume');
  });
});
