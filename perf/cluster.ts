// `cluster` scenario: many idle connections spread round robin over several RealChat gateway
// processes (the distributed stack, infra/stack.sh), held for --duration seconds while a low
// open-loop message rate in small conversations whose members sit on different nodes measures
// end-to-end delivery latency (gateway -> PostgreSQL/outbox -> relay -> Kafka -> delivery worker ->
// node topic -> gateway -> client). Per node: connections (its /metrics realchat_active_connections),
// RSS before connecting and while holding, bytes per connection, CPU.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { randomBytes, randomUUID } from 'node:crypto';
import { loadavg } from 'node:os';
import type { Options } from './lib/args.js';
import { repoRoot, assertLoopback } from './lib/targets.js';
import { pidsListeningOn, machineInfo } from './lib/proc.js';
import { ServerSampler, type ServerSample } from './lib/sampler.js';
import { tokenFor } from './lib/jwt.js';
import { makeConversations, type User } from './lib/realchat-api.js';
import { Workers } from './lib/workers.js';
import { mergeEncoded, summarize, percentileCurve, type LatencySummary } from './lib/hist.js';
import { totalMessages } from './lib/schedule.js';
import { nowMs, sleep } from './lib/clock.js';
import { latencySvg } from './lib/report.js';
import type { ConnSpec, SlotSpec, WorkerMsg, WorkerReport, ConnectResult } from './lib/types.js';

type Log = (s: string) => void;

interface Gateway { name: string; base: string; ws: string; metrics: string; port: number; pids: number[] }
interface StackEntry { name: string; role?: string; pid: number; port?: number | null }

const stackDir = (): string => process.env['STACK_DIR'] || join(repoRoot(), '.cache', 'stack');

function stackStatus(): StackEntry[] {
  try {
    const out = execFileSync('bash', [join(repoRoot(), 'infra', 'stack.sh'), 'status', '--json'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 30_000 });
    const line = out.trim().split('\n').pop() ?? '[]';
    const arr = JSON.parse(line) as StackEntry[];
    return Array.isArray(arr) ? arr.filter((e) => typeof e.pid === 'number') : [];
  } catch {
    return [];
  }
}

async function healthy(base: string): Promise<boolean> {
  try { return (await fetch(`${base}/healthz`, { signal: AbortSignal.timeout(2000) })).ok; } catch { return false; }
}

/** Gateways from --urls, else --gateways N on --base-port.., else every gateway stack.sh reports. */
export async function resolveGateways(o: Options, stack: StackEntry[]): Promise<Gateway[]> {
  let bases: Array<{ name: string; base: string }>;
  if (o.urls.length > 0) bases = o.urls.map((u, i) => ({ name: `node-${i + 1}`, base: u.replace(/^ws/, 'http').replace(/\/v1\/ws$/, '').replace(/\/$/, '') }));
  else if (o.gateways > 0) bases = Array.from({ length: o.gateways }, (_, i) => ({ name: `gateway-${i + 1}`, base: `http://127.0.0.1:${o.basePort + i}` }));
  else {
    const gws = stack.filter((e) => e.role === 'gateway' && typeof e.port === 'number').sort((a, b) => a.port! - b.port!);
    if (gws.length === 0) throw new Error('no gateways: start the stack (GATEWAYS=8 npm run stack:up) or pass --urls / --gateways');
    bases = gws.map((g) => ({ name: g.name, base: `http://127.0.0.1:${g.port}` }));
  }
  const out: Gateway[] = [];
  for (const b of bases) {
    assertLoopback(b.base);
    if (!(await healthy(b.base))) throw new Error(`gateway ${b.name} does not answer at ${b.base}/healthz`);
    const port = Number(new URL(b.base).port || 80);
    const fromStack = stack.find((e) => e.role === 'gateway' && e.port === port);
    out.push({ name: fromStack?.name ?? b.name, base: b.base, ws: `${b.base.replace(/^http/, 'ws')}/v1/ws`, metrics: `${b.base}/metrics`, port, pids: pidsListeningOn(port) });
  }
  return out;
}

function jwtSecret(o: Options): string {
  if (o.jwtSecret) return o.jwtSecret;
  const f = o.jwtSecretFile ?? join(stackDir(), 'jwt-secret');
  if (!existsSync(f)) throw new Error(`no JWT secret: pass --jwt-secret S or --jwt-secret-file F (the gateways' REALCHAT_JWT_SECRET; stack.sh keeps it in ${f})`);
  return readFileSync(f, 'utf8').replace(/\r?\n$/, '');
}

/** pid and all its descendants (PostgreSQL backends, Kafka's JVM under its wrapper). */
function processTree(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const st = readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[1]);
      const l = children.get(ppid) ?? [];
      l.push(Number(d));
      children.set(ppid, l);
    } catch { /* gone */ }
  }
  const out: number[] = [];
  const todo = [root];
  while (todo.length > 0) { const p = todo.pop()!; out.push(p); todo.push(...(children.get(p) ?? [])); }
  return out;
}

const mean = (a: number[]): number => (a.length === 0 ? 0 : a.reduce((x, y) => x + y, 0) / a.length);
const median = (a: number[]): number => { if (a.length === 0) return 0; const s = [...a].sort((x, y) => x - y); const m = s.length >> 1; return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2; };
const inWindow = (s: ServerSample[], from: number, to: number): ServerSample[] => s.filter((x) => x.t_ms >= from && x.t_ms <= to);
const conns = (s: ServerSample | undefined): number | undefined => s?.metrics?.['realchat_active_connections'];
const stamp = (): string => new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '').replace('T', '-');
const mib = (b: number): string => (b / 1048576).toFixed(1);

export interface NodeResult {
  name: string; url: string; port: number; pids: number[];
  connections: number; connections_min: number; connections_end: number;
  rss_baseline_bytes: number; rss_hold_bytes: number; rss_peak_bytes: number; rss_delta_bytes: number; bytes_per_connection: number;
  cpu_s_ramp: number; cpu_s_hold: number; cpu_pct_hold: number; eventloop_lag_p99_max_ms: number;
}

export interface ClusterResult {
  scenario: 'cluster'; target: 'realchat'; target_version: string; started_at: string; finished_at: string; command: string;
  machine: ReturnType<typeof machineInfo>; load_average_at_start: number[];
  gateways: number; connections_requested: number; connections_open_clients: number; connect_failed: number;
  accept_per_s: number; ramp_s: number; ramp_rate_requested: number;
  connections_total: number; connections_per_node: number[]; per_node: NodeResult[];
  rss_delta_total_bytes: number; bytes_per_connection: number; bytes_per_connection_median_node: number;
  hold_s: number; rate: number; group_size: number; conversations: number;
  sent: number; acked: number; delivered: number; expected_deliveries: number; lost: number; duplicates: number; gaps: number;
  dropped_during_hold: number; open_at_end_clients: number;
  latency_ms: LatencySummary; latency_curve: Array<{ pct: number; ms: number }>;
  errors: Record<string, number>;
  infra: Array<{ name: string; pids: number; cpu_s_hold: number; cpu_pct_hold: number; rss_bytes: number; metrics_last?: Record<string, number> }>;
  generator: { workers: number; source_addresses: string[]; rss_bytes: number; cpu_s_hold: number };
  samples: { names: string[]; series: Array<{ t_s: number; conns: Array<number | null>; rss_mib: number[]; cpu_s: number[] }> };
  notes: string[]; failures: string[];
}

export async function runCluster(o: Options, command: string, log: Log): Promise<void> {
  const startedAt = new Date().toISOString();
  const load0 = loadavg();
  const runId = randomBytes(4).toString('hex');
  const stack = stackStatus();
  const gws = await resolveGateways(o, stack);
  const G = gws.length;
  const N = o.connections;
  const g = Math.max(2, Number.isNaN(o.groupSize) ? 2 : o.groupSize);
  const C = Math.min(o.conversations > 0 ? o.conversations : 1000, Math.floor(N / g));
  const rate = Number.isNaN(o.rate) ? 100 : o.rate;
  const W = o.workers > 0 ? o.workers : Math.max(1, Math.ceil(N / 12_000));
  if (Math.ceil(N / W) > 15_000) throw new Error(`${Math.ceil(N / W)} connections per worker: use --workers >= ${Math.ceil(N / 15_000)}`);
  // explicit local ports FIRST_LOCAL_PORT.. below the ephemeral range (see ConnSpec.localPort)
  const FIRST_LOCAL_PORT = 20_000, LAST_LOCAL_PORT = 32_000;
  const A = o.sourceAddrs > 0 ? o.sourceAddrs : Math.max(2, Math.ceil(N / 10_000), Math.ceil(N / (LAST_LOCAL_PORT - FIRST_LOCAL_PORT)));
  if (A > 250) throw new Error('--source-addrs must be <= 250');
  const addrs = Array.from({ length: A }, (_, i) => `127.0.0.${2 + i}`);
  const notes: string[] = [];
  const failures: string[] = [];
  if (G < 2) notes.push('only one gateway: nothing crosses nodes');
  if (g > G) notes.push(`group size ${g} > ${G} gateways: some members of a conversation share a node`);
  const perNode = Math.ceil(N / G);
  if (perNode > 16_000) notes.push(`${perNode} connections per gateway: above ~16k a gateway may hit its 20,000 open-files limit; use more gateways`);
  const secret = jwtSecret(o);
  let version = 'realchat';
  try { version += ` ${(JSON.parse(readFileSync(join(repoRoot(), 'package.json'), 'utf8')) as { version: string }).version}`; } catch { /* ignore */ }
  try { version += ` (${execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: repoRoot(), encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()})`; } catch { /* ignore */ }

  log(`cluster: ${N} connections over ${G} gateways (${gws.map((x) => x.port).join(',')}), ${W} workers, ${A} source addresses; hold ${o.duration} s at ${rate} msg/s in ${C} conversations of ${g}`);
  for (const x of gws) if (x.pids.length === 0) notes.push(`${x.name}: pid not found for port ${x.port} (no RSS/CPU figures for it)`);

  // samplers: one per gateway (pid + its /metrics), the rest of the stack (process trees), generator
  const nodeS = gws.map((x) => new ServerSampler(x.pids, x.metrics));
  for (const s of nodeS) s.start();
  const infraS: Array<{ name: string; s: ServerSampler }> = [];
  const infraEntries = stack.filter((e) => e.role !== 'gateway');
  const redisPort = process.env['REDIS_URL'] ? Number(new URL(process.env['REDIS_URL']).port || 6379) : 0;
  // relay and delivery serve /metrics on their stack port (forwarded deliveries, presence fallbacks, lag)
  for (const e of infraEntries) infraS.push({ name: e.name, s: new ServerSampler(processTree(e.pid), (e.role === 'relay' || e.role === 'delivery') && e.port ? `http://127.0.0.1:${e.port}/metrics` : undefined) });
  if (redisPort) { const p = pidsListeningOn(redisPort); if (p.length) infraS.push({ name: `redis:${redisPort}`, s: new ServerSampler(p) }); }
  for (const x of infraS) x.s.start();

  let workers: Workers | undefined;
  let genS: ServerSampler | undefined;
  const watchdog = setTimeout(() => {
    log('watchdog: run exceeded its time bound, stopping');
    void (async () => { await workers?.close(); process.exit(3); })();
  }, (o.duration + N / o.rampRate + 1200) * 1000);
  watchdog.unref();
  let progress: NodeJS.Timeout | undefined;
  const progressLine = (what: string): void => {
    const last = nodeS.map((s) => s.samples[s.samples.length - 1]);
    const cs = last.map((s) => conns(s) ?? NaN);
    const rss = last.reduce((a, s) => a + (s?.rss_bytes ?? 0), 0);
    log(`${what}: ${cs.reduce((a, b) => a + (Number.isNaN(b) ? 0 : b), 0)} connections on the gateways [${cs.map((c) => (Number.isNaN(c) ? '?' : c)).join(' ')}], gateways RSS ${mib(rss)} MiB, load ${loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  };

  let conn: ConnectResult[] = [];
  let rampStart = 0, rampEnd = 0, sendStart = 0, sendEnd = 0, holdEnd = 0;
  let baseline: number[] = gws.map(() => 0);
  const members = new Map<string, number[]>();
  let reports: WorkerReport[] = [];
  try {
    // identities: HS256 tokens signed here with the stack's secret; conversations via REST, round robin
    // over the gateways (a 401 there means the secret does not match)
    const t0 = Date.now();
    const users: User[] = Array.from({ length: N }, () => { const userId = randomUUID(); return { userId, token: tokenFor(userId, secret, 12 * 3600) }; });
    // conversation c: connections c*g .. c*g+g-1, which sit on consecutive gateways (node = idx mod G)
    const groups = Array.from({ length: C }, (_, c) => Array.from({ length: g }, (_, k) => c * g + k));
    const convIds = await makeConversations(gws.map((x) => x.base), groups.map((m) => m.map((i) => users[i]!)), runId, 16);
    const convOf = new Map<number, string>();
    groups.forEach((m, c) => { members.set(convIds[c]!, m); for (const i of m) convOf.set(i, convIds[c]!); });
    notes.push(`setup: ${N} HS256 tokens signed locally, ${C} conversations of ${g} created via REST (round robin over the gateways) in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    const specs: ConnSpec[] = users.map((u, i) => {
      const c = convOf.get(i);
      return { idx: i, userId: u.userId, token: u.token, convs: c ? [c] : [], localAddress: addrs[i % A]!, url: gws[i % G]!.ws, ...(Math.floor(i / A) <= LAST_LOCAL_PORT - FIRST_LOCAL_PORT ? { localPort: FIRST_LOCAL_PORT + Math.floor(i / A) } : {}) };
    });
    const slots: SlotSpec[] = [];
    for (const [conv, m] of members) for (const i of m) slots.push({ conn: i, conv });

    // RSS baseline per node, after setup, right before connecting
    await sleep(2000);
    const tb = nowMs();
    await sleep(3000);
    baseline = nodeS.map((s) => s.meanRss(tb, nowMs()) ?? 0);
    log(`baseline RSS per gateway (MiB): ${baseline.map(mib).join(' ')}`);

    workers = new Workers(W, log);
    const wk = workers;
    genS = new ServerSampler(wk.procs.map((p) => p.pid!).filter(Boolean));
    genS.start();
    await wk.all((w) => ({ cmd: 'init', init: { workerId: w, target: 'realchat', url: gws[0]!.ws, runId, conns: specs.filter((s) => s.idx % W === w), payloadBytes: o.payloadBytes } }), 'ready', 120_000);

    rampStart = nowMs();
    progress = setInterval(() => progressLine('ramp'), 10_000);
    const res = await wk.some(() => ({ cmd: 'connect', upTo: Number.MAX_SAFE_INTEGER, ratePerS: o.rampRate / W }), 'connected', (N / o.rampRate + 180) * 1000);
    rampEnd = nowMs();
    clearInterval(progress);
    conn = res.map((r) => (r as Extract<WorkerMsg, { ev: 'connected' }>).result);
    if (res.length < W) failures.push(`ramp: only ${res.length}/${W} workers finished connecting within the timeout`);
    const open = conn.reduce((a, r) => a + r.open, 0), failed = conn.reduce((a, r) => a + r.failed, 0);
    log(`ramp done in ${((rampEnd - rampStart) / 1000).toFixed(1)} s: ${open} open, ${failed} failed`);
    await sleep(Math.max(3, o.settle) * 1000);
    progressLine('settled');

    // hold: open-loop messages for the whole duration
    const total = totalMessages(rate, o.duration);
    sendStart = nowMs() + 1000;
    sendEnd = sendStart + o.duration * 1000;
    progress = setInterval(() => progressLine(`holding (${Math.round((nowMs() - sendStart) / 1000)}/${o.duration} s)`), o.progressEvery * 1000);
    log(`holding for ${o.duration} s; sending ${total} messages at ${rate}/s from ${slots.length} sender slots`);
    const sent = await wk.some({ cmd: 'send', startMs: sendStart, rate, total, slots }, 'sent', (o.duration + 180) * 1000);
    if (sent.length < W) failures.push(`send: only ${sent.length}/${W} workers finished their schedule`);
    const left = sendEnd - nowMs();
    if (left > 0) await sleep(left);
    holdEnd = nowMs();
    clearInterval(progress);
    progressLine('hold done');
    await sleep(o.drain * 1000);
  } catch (e) {
    failures.push(e instanceof Error ? e.message : String(e));
    log(`cluster run failed: ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
  } finally {
    if (progress) clearInterval(progress);
    clearTimeout(watchdog);
  }
  if (holdEnd === 0) holdEnd = nowMs();
  try {
    if (workers) reports = (await workers.some({ cmd: 'report' }, 'report', 120_000)).map((m) => (m as Extract<WorkerMsg, { ev: 'report' }>).report);
    if (workers && reports.length < W) failures.push(`report: only ${reports.length}/${W} workers reported`);
  } catch (e) { failures.push(`report: ${String(e)}`); }
  for (const s of [...nodeS, ...infraS.map((x) => x.s), ...(genS ? [genS] : [])]) s.stop();
  await workers?.close();

  const r = build();
  const base = o.out ? o.out.replace(/\.json$/, '') : join(repoRoot(), 'perf', 'results', `cluster-realchat-${stamp()}`);
  mkdirSync(dirname(base), { recursive: true });
  writeFileSync(`${base}.json`, JSON.stringify(r, null, 2));
  writeFileSync(`${base}.svg`, latencySvg(`cluster · ${r.connections_total} conn on ${G} gateways · ${rate} msg/s`, [{ name: 'realchat', curve: r.latency_curve }]));
  writeFileSync(`${base}.md`, clusterMarkdown(r, `${base.slice(base.lastIndexOf('/') + 1)}.svg`));
  const l = r.latency_ms;
  log(`connections ${r.connections_total} on ${G} gateways [${r.connections_per_node.join(' ')}], ${(r.bytes_per_connection / 1024).toFixed(2)} KiB/connection, ` +
    `delivered ${r.delivered}/${r.expected_deliveries} (lost ${r.lost}), p50 ${l.p50} p99 ${l.p99} p99.9 ${l.p999} max ${l.max} ms, failures ${r.failures.length}`);
  log(`wrote ${relative(process.cwd(), base)}.json (+ .md, .svg)`);
  if (failures.length > 0) process.exitCode = 1;

  function build(): ClusterResult {
    const hist = mergeEncoded(reports.map((x) => x.hist));
    const sum = (f: (x: WorkerReport) => number): number => reports.reduce((a, x) => a + f(x), 0);
    const errors: Record<string, number> = {};
    for (const x of reports) for (const [k, v] of Object.entries(x.errors)) errors[k] = (errors[k] ?? 0) + v;
    const acked = new Map<string, number>();
    for (const x of reports) for (const [c, n] of Object.entries(x.acked_per_conv)) acked.set(c, (acked.get(c) ?? 0) + n);
    const uniq = new Map<string, number>();
    for (const x of reports) for (const [i, c, n] of x.unique_per_conn_conv) uniq.set(`${i}|${c}`, n);
    let expected = 0, lost = 0;
    for (const [c, ms] of members) {
      const a = acked.get(c) ?? 0;
      expected += a * ms.length;
      for (const i of ms) lost += Math.max(0, a - (uniq.get(`${i}|${c}`) ?? 0));
    }
    const hs = sendStart || rampEnd || nowMs(), he = holdEnd;
    const holdS = Math.max(0.001, (he - hs) / 1000);
    const per: NodeResult[] = gws.map((x, i) => {
      const s = nodeS[i]!;
      const w = inWindow(s.samples, hs, he);
      const cs = w.map(conns).filter((v): v is number => typeof v === 'number');
      const last = [...s.samples].reverse().find((q) => conns(q) !== undefined && q.t_ms <= he + 1500);
      const c = cs.length ? mean(cs) : conns(last) ?? 0;
      const rssHold = s.meanRss(hs, he) ?? 0;
      const delta = rssHold - (baseline[i] ?? 0);
      const lag = Math.max(0, ...w.map((q) => q.metrics?.['nodejs_eventloop_lag_p99_seconds'] ?? 0)) * 1000;
      const cpuHold = s.cpuBetween(hs, he) ?? 0;
      return {
        name: x.name, url: x.base, port: x.port, pids: x.pids,
        connections: Math.round(c), connections_min: cs.length ? Math.min(...cs) : 0, connections_end: conns(last) ?? 0,
        rss_baseline_bytes: baseline[i] ?? 0, rss_hold_bytes: rssHold, rss_peak_bytes: Math.max(0, ...s.samples.map((q) => q.rss_bytes)),
        rss_delta_bytes: delta, bytes_per_connection: c > 0 ? delta / c : 0,
        cpu_s_ramp: rampEnd > rampStart ? s.cpuBetween(rampStart, rampEnd) ?? 0 : 0, cpu_s_hold: cpuHold, cpu_pct_hold: (100 * cpuHold) / holdS,
        eventloop_lag_p99_max_ms: Math.round(lag * 10) / 10,
      };
    });
    const connTotal = per.reduce((a, n) => a + n.connections, 0);
    const deltaTotal = per.reduce((a, n) => a + n.rss_delta_bytes, 0);
    const open = conn.reduce((a, x) => a + x.open, 0), failed = conn.reduce((a, x) => a + x.failed, 0);
    const first = conn.length ? Math.min(...conn.map((x) => x.first_attempt_ms)) : 0, lastOpen = conn.length ? Math.max(...conn.map((x) => x.last_open_ms)) : 0;
    const span = (lastOpen - first) / 1000;
    const dropped = Object.entries(errors).filter(([k]) => k.startsWith('closed_')).reduce((a, [, v]) => a + v, 0);
    // series every 5 s (a row per sample would be large at 1 Hz x 8 nodes)
    const t0 = nodeS[0]?.samples[0]?.t_ms ?? 0;
    const series: ClusterResult['samples']['series'] = [];
    const ref = nodeS[0]?.samples ?? [];
    for (let k = 0; k < ref.length; k += 5) {
      const t = ref[k]!.t_ms;
      const near = nodeS.map((s) => s.samples.reduce<ServerSample | undefined>((b, q) => (!b || Math.abs(q.t_ms - t) < Math.abs(b.t_ms - t) ? q : b), undefined));
      series.push({ t_s: Math.round((t - (sendStart || t0)) / 100) / 10, conns: near.map((q) => conns(q) ?? null), rss_mib: near.map((q) => Math.round((q?.rss_bytes ?? 0) / 104857.6) / 10), cpu_s: near.map((q) => Math.round((q?.cpu_s ?? 0) * 100) / 100) });
    }
    const out: ClusterResult = {
      scenario: 'cluster', target: 'realchat', target_version: version, started_at: startedAt, finished_at: new Date().toISOString(), command,
      machine: machineInfo(), load_average_at_start: load0.map((x) => Math.round(x * 100) / 100),
      gateways: G, connections_requested: N, connections_open_clients: open, connect_failed: failed,
      accept_per_s: open > 0 && span > 0 ? open / span : 0, ramp_s: (rampEnd - rampStart) / 1000, ramp_rate_requested: o.rampRate,
      connections_total: connTotal, connections_per_node: per.map((n) => n.connections), per_node: per,
      rss_delta_total_bytes: deltaTotal, bytes_per_connection: connTotal > 0 ? deltaTotal / connTotal : 0,
      bytes_per_connection_median_node: median(per.filter((n) => n.connections > 0).map((n) => n.bytes_per_connection)),
      hold_s: holdS, rate, group_size: g, conversations: members.size,
      sent: sum((x) => x.sent), acked: sum((x) => x.acked), delivered: sum((x) => x.delivered), expected_deliveries: expected, lost,
      duplicates: sum((x) => x.duplicates), gaps: sum((x) => x.gaps), dropped_during_hold: dropped, open_at_end_clients: sum((x) => x.open),
      latency_ms: summarize(hist), latency_curve: percentileCurve(hist), errors,
      infra: infraS.map(({ name, s }) => {
        const cpu = s.cpuBetween(hs, he) ?? 0;
        const m = [...s.samples].reverse().find((q) => q.metrics)?.metrics;
        const keep = m ? Object.fromEntries(Object.entries(m).filter(([k]) => k.startsWith('realchat_') && k !== 'realchat_active_connections')) : undefined;
        return { name, pids: s.pids.length, cpu_s_hold: cpu, cpu_pct_hold: (100 * cpu) / holdS, rss_bytes: s.meanRss(hs, he) ?? 0, ...(keep ? { metrics_last: keep } : {}) };
      }),
      generator: { workers: W, source_addresses: addrs, rss_bytes: genS?.meanRss(hs, he) ?? 0, cpu_s_hold: genS?.cpuBetween(hs, he) ?? 0 },
      samples: { names: gws.map((x) => x.name), series },
      notes: [
        ...notes,
        'connections per node: mean of the gateway\'s realchat_active_connections (connections that completed hello) over the hold',
        'bytes per connection (per node) = (mean RSS over the hold - mean RSS over 3 s before connecting) / that node\'s connections; total = sum of deltas / sum of connections',
        'latency = receipt time on each member (sender included) minus the intended send time of the open-loop schedule; the path crosses gateway, PostgreSQL, relay, Kafka, delivery worker and the node topic',
        `infra rows: CPU and RSS of each non-gateway stack process tree over the hold (trees taken at the start of the run)`,
      ],
      failures,
    };
    hist.destroy();
    return out;
  }
}

export function clusterMarkdown(r: ClusterResult, svgName: string): string {
  const l = r.latency_ms;
  const kib = (b: number): string => (b / 1024).toFixed(2);
  const lines = [
    `# cluster · ${r.target_version}`,
    '',
    `Started ${r.started_at} on ${r.machine.cpus} CPUs / ${mib(r.machine.memory_bytes)} MiB, Node ${r.machine.node}; load average at start ${r.load_average_at_start.join(' ')}.`,
    '',
    '```',
    r.command,
    '```',
    '',
    '| metric | value |',
    '| --- | --- |',
    `| gateways | ${r.gateways} |`,
    `| connections on the gateways (mean over the hold) | **${r.connections_total}** (asked ${r.connections_requested}; clients open after ramp ${r.connections_open_clients}, failed ${r.connect_failed}) |`,
    `| connections per node | ${r.connections_per_node.join(' / ')} |`,
    `| ramp | ${r.ramp_s.toFixed(1)} s, accept ${r.accept_per_s.toFixed(0)} conn/s (asked ${r.ramp_rate_requested}/s) |`,
    `| hold | ${r.hold_s.toFixed(0)} s at ${r.rate} msg/s, ${r.conversations} conversations of ${r.group_size} (members on different nodes) |`,
    `| memory per connection (all nodes) | **${kib(r.bytes_per_connection)} KiB** (RSS delta ${mib(r.rss_delta_total_bytes)} MiB; median node ${kib(r.bytes_per_connection_median_node)} KiB) |`,
    `| sent / acked | ${r.sent} / ${r.acked} |`,
    `| delivered (unique) / expected | ${r.delivered} / ${r.expected_deliveries} (lost ${r.lost}, duplicates ${r.duplicates}, gaps ${r.gaps}) |`,
    `| latency ms p50 / p95 / p99 / p99.9 / max | **${l.p50} / ${l.p95} / ${l.p99} / ${l.p999} / ${l.max}** (${l.count} deliveries) |`,
    `| dropped during the run / client connections open at the end | ${r.dropped_during_hold} / ${r.open_at_end_clients} |`,
    `| errors | ${Object.keys(r.errors).length === 0 ? 'none' : Object.entries(r.errors).map(([k, v]) => `${k}: ${v}`).join(', ')} |`,
    `| generator | ${r.generator.workers} workers, ${r.generator.source_addresses.length} source addresses, RSS ${mib(r.generator.rss_bytes)} MiB, CPU ${r.generator.cpu_s_hold.toFixed(1)} s over the hold |`,
    '',
    '## Per node',
    '',
    '| node | port | connections (mean / min / end) | RSS before → holding (MiB) | bytes/conn | CPU ramp s | CPU hold % | loop lag p99 max ms |',
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
    ...r.per_node.map((n) => `| ${n.name} | ${n.port} | ${n.connections} / ${n.connections_min} / ${n.connections_end} | ${mib(n.rss_baseline_bytes)} → ${mib(n.rss_hold_bytes)} | ${n.bytes_per_connection.toFixed(0)} | ${n.cpu_s_ramp.toFixed(1)} | ${n.cpu_pct_hold.toFixed(1)} | ${n.eventloop_lag_p99_max_ms} |`),
  ];
  if (r.infra.length > 0) {
    lines.push('', '## Rest of the stack (over the hold)', '', '| process | pids | CPU % | RSS MiB |', '| --- | --- | --- | --- |');
    lines[lines.length - 2] = '| process | pids | CPU % | RSS MiB | metrics at the end |';
    lines[lines.length - 1] = '| --- | --- | --- | --- | --- |';
    for (const x of r.infra) lines.push(`| ${x.name} | ${x.pids} | ${x.cpu_pct_hold.toFixed(1)} | ${mib(x.rss_bytes)} | ${x.metrics_last ? Object.entries(x.metrics_last).map(([k, v]) => `${k.replace(/^realchat_/, '')} ${v}`).join(', ') : ''} |`);
  }
  if (r.failures.length > 0) lines.push('', '## Failures', '', ...r.failures.map((f) => `- ${f}`));
  lines.push('', ...r.notes.map((n) => `- ${n}`), '', `![latency](${svgName})`, '');
  return lines.join('\n');
}
