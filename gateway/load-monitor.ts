/**
 * Backpressure for the delivery consumer: while the event loop is saturated, stop reading the
 * delivery topics (the lag grows in Kafka, visible in metrics) instead of buffering in memory.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { RunningConsumer } from '../common/kafka/index.js';
import type { Logger } from '../common/log.js';
import type { Metrics } from '../common/metrics.js';

export function startLoadMonitor(consumer: RunningConsumer, opts: { pauseAboveMs: number; log: Logger; metrics: Metrics }): () => void {
  const h = monitorEventLoopDelay({ resolution: 10 });
  h.enable();
  const timer = setInterval(() => {
    const meanMs = h.mean / 1e6;
    h.reset();
    if (!consumer.paused && meanMs > opts.pauseAboveMs) {
      consumer.pause();
      opts.metrics.consumerPaused.set(1);
      opts.log.warn({ loop_delay_ms: Math.round(meanMs) }, 'overloaded: pausing delivery consumption');
    } else if (consumer.paused && meanMs < opts.pauseAboveMs / 2) {
      consumer.resume();
      opts.metrics.consumerPaused.set(0);
      opts.log.info({ loop_delay_ms: Math.round(meanMs) }, 'resuming delivery consumption');
    }
  }, 500);
  timer.unref();
  return () => {
    clearInterval(timer);
    h.disable();
  };
}
