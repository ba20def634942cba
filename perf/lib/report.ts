// Result files: JSON, a markdown summary and a hand-written SVG percentile plot.
import type { StormTally } from './tally.js';
import { writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { LatencySummary } from './hist.js';
import type { Engine } from './types.js';
import { repoRoot } from './targets.js';

export interface RunResult {
  scenario: string;
  target: string;
  target_version: string;
  target_lacks: string;
  started_at: string;
  command: string;
  machine: { cpus: number; memory_bytes: number; node: string; kernel: string; cpu_model: string };
  connections: number;
  connections_open: number;
  duration_s: number;
  rate: number;
  group_size: number;
  senders: number;
  payload_bytes: number;
  workers: number;
  /** Which worker program generated the load: perf/worker.ts ('node') or perf/go/loadgen ('go'). */
  generator_engine: Engine;
  source_addresses: string[];
  accept_per_s: number;
  connect_failed: number;
  sent: number;
  acked: number;
  delivered: number;
  expected_deliveries: number;
  lost: number;
  duplicates: number;
  gaps: number;
  errors: Record<string, number>;
  latency_ms: LatencySummary;
  latency_curve: Array<{ pct: number; ms: number }>;
  delivered_per_s: number;
  server_pids: number[];
  server_cpu_s: number;
  deliveries_per_server_cpu_s: number;
  server_rss_bytes: number;
  server_rss_baseline_bytes: number;
  rss_per_connection_bytes: number;
  memory_fit?: {
    points: Array<{ connections: number; rss_bytes: number }>;
    bytes_per_connection: number;
    intercept_bytes: number;
    r2: number;
  };
  storm?: StormTally;

  server_metrics?: Record<string, number>;
  server_samples: Array<{ t_s: number; cpu_s: number; rss_bytes: number; metrics?: Record<string, number> }>;
  notes: string[];
}

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const COLORS = ['#d62728', '#1f77b4', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b'];

/**
 * Percentile plot in the HdrHistogram style: x = percentile on a log scale of 1/(1-p)
 * (0%, 90%, 99%, 99.9%, 99.99%, 99.999%), y = latency in ms (linear).
 */
export function latencySvg(title: string, series: Array<{ name: string; curve: Array<{ pct: number; ms: number }> }>): string {
  const W = 760,
    H = 420,
    L = 70,
    R = 170,
    T = 40,
    B = 50;
  const pw = W - L - R,
    ph = H - T - B;
  const maxX = 5; // log10(1/(1-0.99999))
  const xOf = (pct: number): number => {
    const p = Math.min(pct, 99.999) / 100;
    return L + (Math.min(maxX, Math.log10(1 / (1 - p))) / maxX) * pw;
  };
  let maxMs = 0;
  for (const s of series) for (const p of s.curve) if (p.pct <= 99.999) maxMs = Math.max(maxMs, p.ms);
  if (maxMs <= 0) maxMs = 1;
  const nice = (x: number): number => {
    const e = 10 ** Math.floor(Math.log10(x));
    const f = x / e;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * e;
  };
  const top = nice(maxMs * 1.05);
  const yOf = (ms: number): number => T + ph - (Math.min(ms, top) / top) * ph;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
  );
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${L}" y="22" font-size="14" font-weight="bold">${esc(title)}</text>`);
  // grid + axes
  for (const [lab, pct] of [
    ['0%', 0],
    ['90%', 90],
    ['99%', 99],
    ['99.9%', 99.9],
    ['99.99%', 99.99],
    ['99.999%', 99.999],
  ] as Array<[string, number]>) {
    const x = xOf(pct).toFixed(1);
    out.push(`<line x1="${x}" y1="${T}" x2="${x}" y2="${T + ph}" stroke="#ddd"/>`);
    out.push(`<text x="${x}" y="${T + ph + 16}" text-anchor="middle">${lab}</text>`);
  }
  for (let i = 0; i <= 5; i++) {
    const v = (top * i) / 5;
    const y = yOf(v).toFixed(1);
    out.push(`<line x1="${L}" y1="${y}" x2="${L + pw}" y2="${y}" stroke="#eee"/>`);
    out.push(`<text x="${L - 6}" y="${y}" text-anchor="end" dominant-baseline="middle">${+v.toPrecision(3)}</text>`);
  }
  out.push(`<rect x="${L}" y="${T}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`);
  out.push(`<text x="${L + pw / 2}" y="${H - 12}" text-anchor="middle">percentile</text>`);
  out.push(
    `<text x="18" y="${T + ph / 2}" text-anchor="middle" transform="rotate(-90 18 ${T + ph / 2})">latency (ms), intended send to receipt</text>`,
  );
  series.forEach((s, i) => {
    const c = COLORS[i % COLORS.length]!;
    const pts = s.curve.filter((p) => p.pct <= 99.999).map((p) => `${xOf(p.pct).toFixed(1)},${yOf(p.ms).toFixed(1)}`);
    if (pts.length > 0) out.push(`<polyline fill="none" stroke="${c}" stroke-width="2" points="${pts.join(' ')}"/>`);
    const ly = T + 10 + i * 18;
    out.push(`<line x1="${L + pw + 12}" y1="${ly}" x2="${L + pw + 32}" y2="${ly}" stroke="${c}" stroke-width="3"/>`);
    const mx = s.curve.find((p) => p.pct === 100)?.ms;
    out.push(
      `<text x="${L + pw + 38}" y="${ly}" dominant-baseline="middle">${esc(s.name)}${mx !== undefined ? ` (max ${mx})` : ''}</text>`,
    );
  });
  out.push('</svg>');
  return out.join('\n');
}

export const kib = (b: number): string => (b / 1024).toFixed(2);
export const mib = (b: number): string => (b / 1048576).toFixed(1);

/** UTC time stamp for result file names: 20261128-030845. */
export function stamp(): string {
  return new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '').replace('T', '-');
}

/** Results base path (no extension): --out without its .json, else perf/results/<name>-<stamp>. */
export function resultsBase(out: string | undefined, name: string): string {
  return out ? out.replace(/\.json$/, '') : join(repoRoot(), 'perf', 'results', `${name}-${stamp()}`);
}

/** Title, the "Started ..." line and the command, as every results markdown begins. */
export function markdownHead(title: string, started: string, command: string): string[] {
  return [`# ${title}`, '', started, '', '```', command, '```', ''];
}

export function markdown(r: RunResult, svgName: string): string {
  const l = r.latency_ms;
  const lines = [
    ...markdownHead(
      `${r.scenario} · ${r.target} ${r.target_version}`,
      `Started ${r.started_at} on ${r.machine.cpus} CPUs / ${mib(r.machine.memory_bytes)} MiB, Node ${r.machine.node}.`,
      r.command,
    ),
    `Target lacks compared to RealChat: ${r.target_lacks || 'n/a (this is RealChat)'}`,
    '',
    '| metric | value |',
    '| --- | --- |',
    `| connections (open / asked) | ${r.connections_open} / ${r.connections} |`,
    `| accept rate | ${r.accept_per_s.toFixed(0)} conn/s (${r.connect_failed} failed) |`,
    `| generator | ${r.workers} ${r.generator_engine} worker${r.workers === 1 ? '' : 's'}, ${r.source_addresses.length} source addresses |`,
    `| duration | ${r.duration_s} s at ${r.rate} msg/s, group size ${r.group_size}, senders ${r.senders} |`,
    `| sent / acked | ${r.sent} / ${r.acked} |`,
    `| delivered (unique) / expected | ${r.delivered} / ${r.expected_deliveries} (missing at the end of the drain ${r.lost}, duplicates ${r.duplicates}, gaps ${r.gaps}) |`,
    `| delivered per s | ${r.delivered_per_s.toFixed(0)} |`,
    `| latency ms p50 / p95 / p99 / p99.9 / max | ${l.p50} / ${l.p95} / ${l.p99} / ${l.p999} / ${l.max} |`,
    `| server CPU s | ${r.server_cpu_s.toFixed(2)} (deliveries per CPU-s: ${r.deliveries_per_server_cpu_s.toFixed(0)}) |`,
    `| server RSS | ${mib(r.server_rss_bytes)} MiB (baseline ${mib(r.server_rss_baseline_bytes)} MiB) |`,
    `| RSS per connection | ${kib(r.rss_per_connection_bytes)} KiB |`,
  ];
  if (r.memory_fit)
    lines.push(
      `| RSS per connection, fit over ${r.memory_fit.points.map((p) => p.connections).join('/')} | ${kib(r.memory_fit.bytes_per_connection)} KiB (r² ${r.memory_fit.r2.toFixed(3)}) |`,
    );
  if (r.storm)
    lines.push(
      `| storm: dropped / reopened / failed | ${r.storm.dropped} / ${r.storm.reopened} / ${r.storm.failed} |`,
      `| storm: all reconnected / resumed p50 / caught up | ${r.storm.all_reconnected_s.toFixed(2)} s / ${r.storm.resume_p50_s.toFixed(2)} s / ${r.storm.caught_up_s.toFixed(2)} s, lost ${r.storm.lost} |`,
    );
  if (r.server_metrics) for (const [k, v] of Object.entries(r.server_metrics)) lines.push(`| ${k} (last) | ${+v.toPrecision(4)} |`);
  const errs = Object.entries(r.errors);
  lines.push(`| errors | ${errs.length === 0 ? 'none' : errs.map(([k, v]) => `${k}: ${v}`).join(', ')} |`);
  lines.push('', ...r.notes.map((n) => `- ${n}`), '', `![latency](${svgName})`, '');
  return lines.join('\n');
}

export function writeAll(base: string, r: RunResult): { json: string; md: string; svg: string } {
  mkdirSync(dirname(base), { recursive: true });
  const json = `${base}.json`,
    md = `${base}.md`,
    svg = `${base}.svg`;
  writeFileSync(json, JSON.stringify(r, null, 2));
  writeFileSync(
    svg,
    latencySvg(`${r.scenario} · ${r.target} · ${r.connections} conn · ${r.rate} msg/s`, [{ name: r.target, curve: r.latency_curve }]),
  );
  writeFileSync(md, markdown(r, svg.slice(svg.lastIndexOf('/') + 1)));
  return { json, md, svg };
}
