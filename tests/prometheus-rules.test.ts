/**
 * The Prometheus rules in infra/prometheus/ are checked and unit-tested with promtool (Debian's
 * `prometheus` package, installed by infra/setup-debian.sh), and may only name metrics RealChat
 * registers: a renamed metric would otherwise leave an alert that can never fire.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { metricNamesIn, registeredMetricNames } from './harness/metric-names.js';

const DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'infra', 'prometheus');

function promtool(args: string[]): { status: number | null; output: string } {
  const r = spawnSync('promtool', args, { cwd: DIR, encoding: 'utf8', timeout: 60_000 });
  if (r.error) throw new Error(`promtool is missing (${r.error.message}): run infra/setup-debian.sh (Debian package prometheus)`);
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

describe('Prometheus rules (infra/prometheus)', () => {
  it('promtool is installed', () => {
    expect(execFileSync('promtool', ['--version'], { encoding: 'utf8' })).toMatch(/promtool, version/);
  });

  it('promtool check rules / check config accept them', () => {
    const rules = promtool(['check', 'rules', 'rules.yml']);
    expect(rules.status, rules.output).toBe(0);
    const config = promtool(['check', 'config', 'prometheus.yml']);
    expect(config.status, config.output).toBe(0);
  });

  it('promtool test rules: the unit tests pass', () => {
    const r = promtool(['test', 'rules', 'rules.test.yml']);
    expect(r.status, r.output).toBe(0);
    expect(r.output).toContain('SUCCESS');
  });

  it('a broken expectation fails promtool (the tests can fail)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'realchat-rules-'));
    try {
      copyFileSync(join(DIR, 'rules.yml'), join(dir, 'rules.yml'));
      const tests = readFileSync(join(DIR, 'rules.test.yml'), 'utf8');
      expect(tests).toContain('value: 12000');
      writeFileSync(join(dir, 'rules.test.yml'), tests.replace('value: 12000', 'value: 24000'));
      const r = spawnSync('promtool', ['test', 'rules', 'rules.test.yml'], { cwd: dir, encoding: 'utf8', timeout: 60_000 });
      expect(r.status).not.toBe(0);
      expect(`${r.stdout}${r.stderr}`).toMatch(/FAILED[\s\S]*group_topic:realchat_consumer_lag:sum/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('every metric the rules name is registered by RealChat (or is a Prometheus/Node default)', async () => {
    const known = await registeredMetricNames();
    const doc = parse(readFileSync(join(DIR, 'rules.yml'), 'utf8')) as {
      groups: Array<{ rules: Array<{ expr: string; record?: string }> }>;
    };
    const recorded = new Set(doc.groups.flatMap((g) => g.rules.flatMap((r) => (r.record ? [r.record] : []))));
    const used = new Set(doc.groups.flatMap((g) => g.rules.flatMap((r) => metricNamesIn(r.expr))));
    expect(used.size).toBeGreaterThan(10);
    const unknown = [...used].filter((m) => !known.has(m) && !recorded.has(m));
    expect(unknown).toEqual([]);
  });
});
