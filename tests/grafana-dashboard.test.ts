/**
 * infra/grafana/realchat.json may only query metrics the code registers (common/metrics.ts and the
 * prom-client defaults): a renamed metric must break this test, not leave an empty panel.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { metricNamesIn, registeredMetricNames } from './harness/metric-names.js';

const FILE = join(dirname(fileURLToPath(import.meta.url)), '..', 'infra', 'grafana', 'realchat.json');

interface Panel {
  type: string;
  title: string;
  targets?: Array<{ expr: string }>;
  panels?: Panel[];
}

const dashboard = JSON.parse(readFileSync(FILE, 'utf8')) as { uid: string; title: string; panels: Panel[] };
const panels = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
const queries = panels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr })));

describe('Grafana dashboard (infra/grafana/realchat.json)', () => {
  it('covers what matters', () => {
    expect(dashboard.uid).toBe('realchat-overview');
    const all = queries.map((q) => q.expr).join('\n');
    for (const metric of [
      'realchat_messages_accepted_total',
      'realchat_end_to_end_seconds_bucket',
      'realchat_pipeline_seconds_bucket',
      'realchat_outbox_backlog',
      'realchat_consumer_lag',
      'realchat_active_connections',
      'realchat_sends_refused_backlog_total',
      'nodejs_eventloop_lag_p99_seconds',
      'nodejs_gc_duration_seconds_sum',
    ])
      expect(all).toContain(metric);
  });

  it('queries only metrics RealChat registers', async () => {
    const known = await registeredMetricNames();
    expect(queries.length).toBeGreaterThan(15);
    const unknown = queries.flatMap((q) =>
      metricNamesIn(q.expr)
        .filter((m) => !known.has(m))
        .map((m) => `${q.panel}: ${m}`),
    );
    expect(unknown).toEqual([]);
  });

  it('the check catches a metric that does not exist', async () => {
    const known = await registeredMetricNames();
    const names = metricNamesIn(
      'sum by (stage, le) (rate(realchat_no_such_metric_bucket{stage="x"}[$__rate_interval])) / ignoring (le) up',
    );
    expect(names.sort()).toEqual(['realchat_no_such_metric_bucket', 'up']);
    expect(known.has('realchat_no_such_metric_bucket')).toBe(false);
    expect(known.has('realchat_end_to_end_seconds_bucket')).toBe(true);
  });
});
