/**
 * What one /metrics scrape costs a process holding many sockets, and how much of it blocks the
 * event loop: prom-client's default metrics as they come (process_open_fds lists /proc/self/fd
 * synchronously) against ours (common/metrics.ts: the count from the directory's size, never on
 * the loop). The descriptors are /dev/null opened N times: listing /proc/self/fd costs the same
 * per entry whatever the descriptor is. Each figure is the median of 21 scrapes after 5 warm-ups.
 *   node dist/perf/metrics-scrape.js [--fds 1000,5000,12500,19000] [--out perf/results/metrics-scrape-STAMP]
 * Writes OUT.json and OUT.md.
 */
import { closeSync, openSync, writeFileSync } from 'node:fs';
import { Registry, collectDefaultMetrics } from 'prom-client';
import { createMetrics } from '../common/metrics.js';
import { cliArg } from './lib/cli.js';
import { machineInfo } from './lib/proc.js';
import { markdownHead, resultsBase } from './lib/report.js';
import { median } from './lib/stats.js';

interface Row {
  fds: number;
  variant: 'prom-client' | 'realchat';
  /** Wall time of one `registry.metrics()`. */
  scrapeMs: number;
  /** The part of it that ran before its first await: the event loop was blocked that long. */
  blockedMs: number;
  openFdsReported: number;
}

async function measure(registry: Registry): Promise<{ scrapeMs: number; blockedMs: number; openFds: number }> {
  const scrape: number[] = [];
  const blocked: number[] = [];
  let text = '';
  for (let i = 0; i < 26; i++) {
    const t0 = performance.now();
    const pending = registry.metrics();
    const t1 = performance.now();
    text = await pending;
    const t2 = performance.now();
    if (i >= 5) {
      blocked.push(t1 - t0);
      scrape.push(t2 - t0);
    }
  }
  const line = text.split('\n').find((l) => l.startsWith('process_open_fds'));
  return { scrapeMs: median(scrape), blockedMs: median(blocked), openFds: Number(line?.split(' ').at(-1)) };
}

async function main(): Promise<void> {
  const steps = cliArg('fds', '1000,5000,12500,19000').split(',').map(Number);
  const out = resultsBase(cliArg('out', '') || undefined, 'metrics-scrape');
  const started = new Date().toISOString();
  const theirs = new Registry();
  collectDefaultMetrics({ register: theirs });
  const ours = createMetrics({ nodeId: 'n' }).registry;
  const rows: Row[] = [];
  const held: number[] = [];
  try {
    for (const n of steps) {
      while (held.length < n) held.push(openSync('/dev/null', 'r'));
      for (const [variant, registry] of [
        ['prom-client', theirs],
        ['realchat', ours],
      ] as const) {
        const m = await measure(registry);
        rows.push({ fds: n, variant, scrapeMs: m.scrapeMs, blockedMs: m.blockedMs, openFdsReported: m.openFds });
      }
    }
  } finally {
    for (const fd of held) closeSync(fd);
  }
  const meta = { started, ...machineInfo() };
  writeFileSync(`${out}.json`, `${JSON.stringify({ meta, rows }, null, 2)}\n`);
  const md = [
    ...markdownHead(
      '/metrics scrape cost by open descriptors',
      `${meta.started}, ${meta.cpus} CPUs, Linux ${meta.kernel}, Node ${meta.node}. Median of 21 scrapes.`,
      `node dist/perf/metrics-scrape.js --fds ${steps.join(',')} --out ${out}`,
    ),
    '| descriptors held | default metrics of | scrape ms | event loop blocked ms | process_open_fds |',
    '| --- | --- | --- | --- | --- |',
    ...rows.map((r) => `| ${r.fds} | ${r.variant} | ${r.scrapeMs.toFixed(2)} | ${r.blockedMs.toFixed(2)} | ${r.openFdsReported} |`),
    '',
  ].join('\n');
  writeFileSync(`${out}.md`, md);
  process.stdout.write(md);
}

await main();
