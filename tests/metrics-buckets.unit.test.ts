/** Histogram resolution where the targets are (common/metrics.ts): GC pauses and pipeline stages below 50 ms. */
import { describe, expect, it } from 'vitest';
import { createMetrics } from '../common/metrics.js';

function bounds(m: ReturnType<typeof createMetrics>, name: string): number[] {
  const metric = m.registry.getSingleMetric(name) as unknown as { upperBounds: number[] } | undefined;
  if (!metric) throw new Error(`${name} is not registered`);
  return metric.upperBounds;
}

describe('histogram buckets', () => {
  it('GC pauses are told apart between 1 and 100 ms (prom-client alone has 1 / 10 / 100 ms)', () => {
    const b = bounds(createMetrics({ nodeId: 'n' }), 'nodejs_gc_duration_seconds');
    for (const v of [0.002, 0.005, 0.02, 0.03, 0.05, 0.075]) expect(b).toContain(v);
  });

  it('pipeline stages have 10 ms steps up to 50 ms (the Kafka hop and 1,000 msg/s targets)', () => {
    const b = bounds(createMetrics({ nodeId: 'n' }), 'realchat_pipeline_seconds');
    for (const v of [0.01, 0.02, 0.03, 0.04, 0.05]) expect(b).toContain(v);
  });
});
