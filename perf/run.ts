// RealChat load generator and benchmark runner.  `node dist/perf/run.js <scenario> [options]`
// (see --help). Loopback only; every run is bounded in connections and time and stops by itself.
import { dirname, join, relative } from 'node:path';
import { writeFileSync, mkdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { parseArgs, forScenario, USAGE, type Options } from './lib/args.js';
import { startTarget, repoRoot, assertLoopback, DEFAULT_SECRET, LACKS, type RunningTarget } from './lib/targets.js';
import { makeUsers, makeConversations, type User } from './lib/realchat-api.js';
import { tokenFor } from './lib/jwt.js';
import { ServerSampler, baselineRss } from './lib/sampler.js';
import { machineInfo } from './lib/proc.js';
import { leastSquares } from './lib/fit.js';
import { totalMessages } from './lib/schedule.js';
import { nowMs, sleep } from './lib/clock.js';
import { writeAll, latencySvg, stamp, resultsBase, type RunResult } from './lib/report.js';
import type { ConnSpec, Scenario, SlotSpec, Target, WorkerMsg, WorkerReport } from './lib/types.js';
import { Workers, workerCount, sourceAddresses, ensureGoWorker } from './lib/workers.js';
import { mergeConnect, stormTally, tallyReports, type ConnectTally } from './lib/tally.js';
import { runCluster } from './cluster.js';

const log = (s: string): void => {
  process.stderr.write(`[perf ${new Date().toISOString().slice(11, 19)}] ${s}\n`);
};

/** Split connection indices into groups of size g; a remainder of one joins the last group. */
export function makeGroups(n: number, g: number): number[][] {
  const groups: number[][] = [];
  for (let i = 0; i < n; i += g) groups.push(Array.from({ length: Math.min(g, n - i) }, (_, k) => i + k));
  if (groups.length > 1 && groups[groups.length - 1]!.length < 2) {
    const last = groups.pop()!;
    groups[groups.length - 1]!.push(...last);
  }
  return groups;
}

async function runScenario(oIn: Options, sc: Scenario, target: Target, command: string, compare: boolean): Promise<RunResult> {
  const o = forScenario({ ...oIn, target }, sc, compare);
  const runId = randomBytes(4).toString('hex');
  const startedAt = new Date().toISOString();
  const notes: string[] = [];
  const N = o.connections;
  const W = workerCount(N, o.workers);
  const addrs = sourceAddresses(N, o.sourceAddrs);
  const A = addrs.length;
  if (o.url) assertLoopback(o.url);

  log(
    `${sc} against ${target}: ${N} connections, ${W} ${o.engine} workers, ${A} source addresses, ${o.duration}s, rate ${o.rate}/s, group ${o.groupSize}`,
  );
  if (o.engine === 'go') notes.push(`generator: Go workers (perf/go/loadgen), GOMAXPROCS ${o.goProcs} each`);
  const rt: RunningTarget = await startTarget(target, {
    url: target === 'realchat' ? o.url : undefined,
    port: o.port,
    log,
    startRealchat: o.startServer,
  });
  let workers: Workers | undefined;
  const sampler = new ServerSampler(o.serverPids.length > 0 ? o.serverPids : rt.pids, rt.metricsUrl);
  const watchdog = setTimeout(
    () => {
      log('watchdog: run exceeded its time bound, stopping');
      void (async () => {
        await workers?.close();
        await rt.stop();
        process.exit(3);
      })();
    },
    (o.duration + (o.steps?.length ?? 1) * (o.settle + N / o.rampRate + 30) + o.drain + 600) * 1000,
  );
  watchdog.unref();
  try {
    if (sampler['pids'].length === 0) notes.push('server pid unknown: no CPU/RSS figures');
    sampler.start();

    // identities and conversations
    const groups = sc === 'idle' ? [] : makeGroups(N, o.groupSize);
    let users: User[];
    let convIds: string[];
    if (target === 'realchat') {
      const secret = o.jwtSecret ?? (rt.startedByUs ? DEFAULT_SECRET : undefined);
      const auth = o.auth === 'jwt' && secret ? 'jwt' : 'dev';
      const t0 = Date.now();
      users = await makeUsers(rt.httpBase!, N, auth, secret ?? '', runId);
      convIds = await makeConversations(
        rt.httpBase!,
        groups.map((g) => g.map((i) => users[i]!)),
        runId,
      );
      notes.push(
        `setup: ${N} users (${auth} tokens) and ${convIds.length} conversations via REST in ${((Date.now() - t0) / 1000).toFixed(1)} s`,
      );
    } else {
      users = Array.from({ length: N }, (_, i) => {
        const userId = `u${runId}-${i}`;
        return { userId, token: target === 'centrifugo' ? tokenFor(userId, DEFAULT_SECRET) : target === 'ws' ? userId : '' };
      });
      convIds = groups.map((_, gi) => `c${runId}-${gi}`);
    }
    const convOf = new Array<string[]>(N).fill([]).map(() => [] as string[]);
    const members = new Map<string, number[]>();
    groups.forEach((g, gi) => {
      members.set(convIds[gi]!, g);
      for (const i of g) convOf[i]!.push(convIds[gi]!);
    });
    const specs: ConnSpec[] = users.map((u, i) => ({
      idx: i,
      userId: u.userId,
      token: u.token,
      convs: convOf[i]!,
      localAddress: addrs[i % A]!,
    }));

    // sender slots: message k is sent by slots[k % S]
    const slots: SlotSpec[] = [];
    if (sc === 'pairs' || sc === 'reconnect-storm') {
      for (let i = 0; i < N; i++) if (convOf[i]!.length > 0) slots.push({ conn: i, conv: convOf[i]![0]! });
    } else if (sc === 'group') {
      const k = Math.max(1, o.senders);
      for (let s = 0; s < k; s++)
        groups.forEach((g, gi) => {
          if (s < g.length) slots.push({ conn: g[s]!, conv: convIds[gi]! });
        });
    }

    // baseline RSS after setup (users, conversations), right before connecting
    const [baseline = 0] = await baselineRss([sampler]);

    workers = new Workers(W, log, { engine: o.engine, goProcs: o.goProcs });
    const wk = workers;
    await wk.all(
      (w) => ({
        cmd: 'init',
        init: { workerId: w, target, url: rt.url, runId, conns: specs.filter((s) => s.idx % W === w), payloadBytes: o.payloadBytes },
      }),
      'ready',
      60_000,
    );

    // connection ramp (in steps for the idle memory fit)
    const levels = sc === 'idle' && o.steps && o.steps.length > 0 ? o.steps : [N];
    const points: Array<{ connections: number; rss_bytes: number }> = [];
    let conn: ConnectTally = { open: 0, failed: 0, accept_per_s: 0 };
    for (const level of levels) {
      const rampTimeout = (level / o.rampRate + 120) * 1000;
      const res = await wk.all(
        (w) => ({ cmd: 'connect', upTo: Math.floor((level - 1 - w) / W) + 1, ratePerS: o.rampRate / W }),
        'connected',
        rampTimeout,
      );
      const m = mergeConnect(res.map((r) => (r as Extract<WorkerMsg, { ev: 'connected' }>).result));
      conn = { open: conn.open + m.open, failed: conn.failed + m.failed, accept_per_s: m.accept_per_s };
      log(`ramp to ${level}: ${conn.open} open, ${conn.failed} failed, accept ${m.accept_per_s.toFixed(0)}/s`);
      if (levels.length > 1) {
        await sleep(o.settle * 1000);
        const t = nowMs();
        await sleep(3000);
        const rss = sampler.meanRss(t - 1, nowMs());
        if (rss !== undefined) points.push({ connections: conn.open, rss_bytes: rss });
      }
    }

    let sendStart = nowMs(),
      sendEnd = nowMs();
    let stormAt = 0;
    if (sc === 'idle') {
      log(`holding ${conn.open} connections for ${o.duration} s`);
      sendStart = nowMs();
      await sleep(o.duration * 1000);
      sendEnd = nowMs();
    } else {
      const total = totalMessages(o.rate, o.duration);
      sendStart = nowMs() + 1000;
      sendEnd = sendStart + o.duration * 1000;
      const p = wk.all({ cmd: 'send', startMs: sendStart, rate: o.rate, total, slots }, 'sent', (o.duration + 120) * 1000);
      let ps: Promise<unknown> = Promise.resolve();
      if (sc === 'reconnect-storm') {
        stormAt = sendStart + (o.duration * 1000) / 2;
        ps = wk.all({ cmd: 'storm', atMs: stormAt, ratePerS: o.stormRate / W }, 'stormed', (o.duration + N / o.stormRate + 180) * 1000);
      }
      log(`sending ${total} messages at ${o.rate}/s from ${slots.length} sender slots`);
      await Promise.all([p, ps]);
      const left = sendEnd - nowMs();
      if (left > 0) await sleep(left);
      await sleep(o.drain * 1000);
    }

    const reports = (await wk.all({ cmd: 'report' }, 'report', 60_000)).map((m) => (m as Extract<WorkerMsg, { ev: 'report' }>).report);
    const measureEnd = nowMs();
    sampler.stop();
    await sampler.sampleOnce();
    await wk.close();

    return buildResult({
      o,
      sc,
      target,
      rt,
      startedAt,
      command,
      notes,
      W,
      addrs,
      conn,
      reports,
      members,
      sampler,
      baseline,
      points,
      sendStart,
      sendEnd,
      measureEnd,
      stormAt,
    });
  } finally {
    clearTimeout(watchdog);
    sampler.stop();
    await workers?.close();
    await rt.stop();
  }
}

interface BuildIn {
  o: Options;
  sc: Scenario;
  target: Target;
  rt: RunningTarget;
  startedAt: string;
  command: string;
  notes: string[];
  W: number;
  addrs: string[];
  conn: ConnectTally;
  reports: WorkerReport[];
  members: Map<string, number[]>;
  sampler: ServerSampler;
  baseline: number;
  points: Array<{ connections: number; rss_bytes: number }>;
  sendStart: number;
  sendEnd: number;
  measureEnd: number;
  stormAt: number;
}

function buildResult(b: BuildIn): RunResult {
  const { o, reports, sampler } = b;
  // loss: for each conversation, every member should have every acked message
  const tally = tallyReports(reports, b.members);
  const { delivered, lost } = tally;
  const lastRecv = Math.max(0, ...reports.map((r) => r.last_recv_ms));
  const sendSpan = Math.max(0.001, (Math.max(lastRecv, b.sendEnd) - b.sendStart) / 1000);
  const cpu = sampler.cpuBetween(b.sendStart - 1000, b.measureEnd) ?? 0;
  const last = sampler.samples[sampler.samples.length - 1];
  const rssLoaded =
    b.sc === 'idle'
      ? (sampler.meanRss(b.sendStart, b.sendEnd) ?? last?.rss_bytes ?? 0)
      : Math.max(0, ...sampler.samples.map((s) => s.rss_bytes));
  const result: RunResult = {
    scenario: b.sc,
    target: b.target,
    target_version: b.rt.version,
    target_lacks: LACKS[b.target],
    started_at: b.startedAt,
    command: b.command,
    machine: machineInfo(),
    connections: o.connections,
    connections_open: b.conn.open,
    duration_s: o.duration,
    rate: o.rate,
    group_size: b.sc === 'idle' ? 0 : o.groupSize,
    senders: b.sc === 'group' ? o.senders : b.sc === 'idle' ? 0 : o.connections,
    payload_bytes: o.payloadBytes,
    workers: b.W,
    generator_engine: o.engine,
    source_addresses: b.addrs,
    accept_per_s: b.conn.accept_per_s,
    connect_failed: b.conn.failed,
    sent: tally.sent,
    acked: tally.acked,
    delivered,
    expected_deliveries: tally.expected_deliveries,
    lost,
    duplicates: tally.duplicates,
    gaps: tally.gaps,
    errors: tally.errors,
    latency_ms: tally.latency_ms,
    latency_curve: tally.latency_curve,
    delivered_per_s: b.sc === 'idle' ? 0 : delivered / sendSpan,
    server_pids: sampler['pids'],
    server_cpu_s: cpu,
    deliveries_per_server_cpu_s: cpu > 0 ? delivered / cpu : 0,
    server_rss_bytes: rssLoaded,
    server_rss_baseline_bytes: b.baseline,
    rss_per_connection_bytes: b.conn.open > 0 ? (rssLoaded - b.baseline) / b.conn.open : 0,
    server_samples: sampler.samples.map((s) => ({
      t_s: Math.round(s.t_ms - b.sendStart) / 1000,
      cpu_s: s.cpu_s,
      rss_bytes: s.rss_bytes,
      ...(s.metrics ? { metrics: s.metrics } : {}),
    })),
    notes: b.notes,
  };
  if (last?.metrics) result.server_metrics = last.metrics;
  if (b.points.length >= 2) {
    const pts = [{ connections: 0, rss_bytes: b.baseline }, ...b.points];
    const f = leastSquares(
      pts.map((p) => p.connections),
      pts.map((p) => p.rss_bytes),
    );
    result.memory_fit = { points: pts, bytes_per_connection: f.slope, intercept_bytes: f.intercept, r2: f.r2 };
  }
  if (b.sc === 'reconnect-storm') {
    result.storm = stormTally(reports, lost);
    if (b.target === 'ws') b.notes.push('ws peer has no resume: messages sent while a client was away are lost by design');
  }
  if (b.sc !== 'idle')
    b.notes.push('latency = receipt time on each recipient (sender included) minus the intended send time of the open-loop schedule');
  if (b.sc === 'idle')
    b.notes.push(`rss_per_connection_bytes = (mean RSS while holding ${b.conn.open} connections - RSS before connecting) / ${b.conn.open}`);
  return result;
}

async function compareMode(o: Options, command: string): Promise<void> {
  const scenarios: Scenario[] = ['idle', 'pairs', 'group'];
  const ts = stamp();
  const dir = join(repoRoot(), 'perf', 'results');
  const results: RunResult[] = [];
  const failures: string[] = [];
  for (const sc of scenarios) {
    for (const t of o.targets) {
      try {
        const r = await runScenario(o, sc, t, command, true);
        const base = join(dir, `${sc}-${t}-${ts}`);
        writeAll(base, r);
        results.push(r);
        log(
          `${sc}/${t}: p99 ${r.latency_ms.p99} ms, delivered/s ${r.delivered_per_s.toFixed(0)}, rss/conn ${(r.rss_per_connection_bytes / 1024).toFixed(2)} KiB`,
        );
      } catch (e) {
        failures.push(`${sc}/${t}: ${e instanceof Error ? e.message : String(e)}`);
        log(`${sc}/${t} FAILED: ${String(e)}`);
      }
    }
  }
  const base = o.out ?? join(dir, `compare-${ts}`);
  mkdirSync(dirname(base), { recursive: true });
  writeFileSync(`${base}.json`, JSON.stringify({ command, started: ts, results, failures }, null, 2));
  const md = compareMarkdown(results, o.targets, command, failures, base);
  writeFileSync(`${base}.md`, md);
  log(`wrote ${relative(process.cwd(), base)}.md`);
  process.stdout.write(md);
}

function compareMarkdown(results: RunResult[], targets: Target[], command: string, failures: string[], base: string): string {
  const get = (sc: string, t: string): RunResult | undefined => results.find((r) => r.scenario === sc && r.target === t);
  const rows: Array<[string, string, (r: RunResult) => number, boolean]> = [
    ['idle', 'RSS per connection (KiB)', (r) => r.rss_per_connection_bytes / 1024, false],
    ['idle', 'accept rate (conn/s)', (r) => r.accept_per_s, true],
    ['pairs', 'latency p50 (ms)', (r) => r.latency_ms.p50, false],
    ['pairs', 'latency p99 (ms)', (r) => r.latency_ms.p99, false],
    ['pairs', 'latency max (ms)', (r) => r.latency_ms.max, false],
    ['pairs', 'server CPU s', (r) => r.server_cpu_s, false],
    ['pairs', 'lost deliveries', (r) => r.lost, false],
    ['group', 'deliveries per server CPU-s', (r) => r.deliveries_per_server_cpu_s, true],
    ['group', 'delivered per s', (r) => r.delivered_per_s, true],
    ['group', 'latency p50 (ms)', (r) => r.latency_ms.p50, false],
    ['group', 'latency p99 (ms)', (r) => r.latency_ms.p99, false],
    ['group', 'lost deliveries', (r) => r.lost, false],
  ];
  const fmt = (x: number): string => (Math.abs(x) >= 100 ? x.toFixed(0) : +x.toPrecision(3) + '');
  const out = [
    '# RealChat vs peers',
    '',
    '```',
    command,
    '```',
    '',
    `Same machine, same run; ratio = peer / RealChat. Higher is better for rates, lower for the rest.`,
    '',
  ];
  out.push(`| scenario | metric | ${targets.join(' | ')} |`, `| --- | --- | ${targets.map(() => '---').join(' | ')} |`);
  for (const [sc, name, f] of rows) {
    const rc = get(sc, 'realchat');
    const cells = targets.map((t) => {
      const r = get(sc, t);
      if (!r) return 'n/a';
      const v = f(r);
      if (t === 'realchat' || !rc) return fmt(v);
      const base0 = f(rc);
      return `${fmt(v)} (${base0 !== 0 ? (v / base0).toFixed(2) + '×' : '–'})`;
    });
    out.push(`| ${sc} | ${name} | ${cells.join(' | ')} |`);
  }
  const any = results[0];
  if (any)
    out.push(
      '',
      `Parameters: ${any.connections} connections; pairs at ${get('pairs', targets[0]!)?.rate ?? '?'} msg/s; group of ${get('group', targets[0]!)?.group_size ?? '?'} at ${get('group', targets[0]!)?.rate ?? '?'} msg/s; ${any.duration_s} s each; ${any.machine.cpus} CPUs, Node ${any.machine.node}; generator: ${any.generator_engine} workers.`,
    );
  out.push('', '## What each peer lacks compared to RealChat', '');
  for (const t of targets) if (t !== 'realchat') out.push(`- **${t}**: ${LACKS[t]}`);
  if (failures.length) out.push('', '## Failed runs', '', ...failures.map((f) => `- ${f}`));
  for (const sc of ['pairs', 'group']) {
    const series = targets
      .map((t) => get(sc, t))
      .filter((r): r is RunResult => !!r)
      .map((r) => ({ name: r.target, curve: r.latency_curve }));
    if (series.length) {
      writeFileSync(`${base}-${sc}.svg`, latencySvg(`${sc}: latency by percentile`, series));
      out.push('', `![${sc}](${base.slice(base.lastIndexOf('/') + 1)}-${sc}.svg)`);
    }
  }
  return out.join('\n') + '\n';
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  let o: Options;
  try {
    o = parseArgs(argv);
  } catch (e) {
    process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n\n${USAGE}`);
    process.exit(2);
  }
  if (o.help) {
    process.stdout.write(USAGE);
    return;
  }
  const command = `npm run perf -- ${argv.join(' ')}`;
  // a first build of the Go worker happens here, before any target starts or anything is measured
  if (o.engine === 'go') ensureGoWorker(log);
  if (o.scenario === 'compare') {
    await compareMode(o, command);
    return;
  }
  if (o.scenario === 'cluster') {
    await runCluster(o, command, log);
    return;
  }
  const r = await runScenario(o, o.scenario as Scenario, o.target, command, false);
  const base = resultsBase(o.out, `${o.scenario}-${o.target}`);
  const files = writeAll(base, r);
  const l = r.latency_ms;
  log(
    `open ${r.connections_open}/${r.connections}, accept ${r.accept_per_s.toFixed(0)}/s, sent ${r.sent}, acked ${r.acked}, delivered ${r.delivered}/${r.expected_deliveries} (lost ${r.lost}), ` +
      `p50 ${l.p50} p99 ${l.p99} max ${l.max} ms, cpu ${r.server_cpu_s.toFixed(2)} s, rss/conn ${(r.rss_per_connection_bytes / 1024).toFixed(2)} KiB`,
  );
  if (r.memory_fit)
    log(`memory fit: ${(r.memory_fit.bytes_per_connection / 1024).toFixed(2)} KiB/connection (r2 ${r.memory_fit.r2.toFixed(3)})`);
  if (r.storm) log(`storm: ${JSON.stringify(r.storm)}`);
  log(`wrote ${relative(process.cwd(), files.json)} (+ .md, .svg)`);
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    log(`failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    process.exit(1);
  },
);
