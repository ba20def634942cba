// `cluster` scenario: many idle connections spread round robin over several RealChat gateway
// processes (the distributed stack, infra/stack.sh), held for --duration seconds while a low
// open-loop message rate in small conversations whose members sit on different nodes measures
// end-to-end delivery latency (gateway -> PostgreSQL/outbox -> relay -> Kafka -> delivery worker ->
// node topic -> gateway -> client). Per node: connections (its /metrics realchat_active_connections),
// RSS before connecting and while holding, bytes per connection, CPU.
//
// A run: begin (gateways, plan, samplers) -> setup (identities, conversations, RSS baseline, workers)
// -> ramp (open every connection) -> hold (messages for --duration s) -> collect (worker reports)
// -> report (results files). A failure after begin is recorded and the results are still written.
import { existsSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { randomBytes, randomUUID } from 'node:crypto';
import { loadavg } from 'node:os';
import type { Options } from './lib/args.js';
import { assertLoopback, realchatVersion } from './lib/targets.js';
import { pidsListeningOn, machineInfo } from './lib/proc.js';
import { processTree, stackDir, stackStatus, type StackEntry } from './lib/stack.js';
import { ServerSampler, baselineRss, type ServerSample } from './lib/sampler.js';
import { tokenFor } from './lib/jwt.js';
import { makeConversations, type User } from './lib/realchat-api.js';
import { Workers, workerCount, sourceAddresses } from './lib/workers.js';
import type { LatencySummary } from './lib/hist.js';
import { mergeConnect, stormTally, tallyReports, type StormTally } from './lib/tally.js';
import { totalMessages } from './lib/schedule.js';
import { nowMs, sleep } from './lib/clock.js';
import { latencySvg, markdownHead, kib, mib, resultsBase } from './lib/report.js';
import { scrape, windowQuantiles, type HistSnapshot } from './lib/prom-hist.js';
import { median } from './lib/stats.js';
import type { ConnSpec, Engine, SlotSpec, WorkerMsg, ConnectResult, WorkerReport } from './lib/types.js';

type Log = (s: string) => void;

interface Gateway {
  name: string;
  base: string;
  ws: string;
  metrics: string;
  port: number;
  pids: number[];
}

// explicit local ports FIRST_LOCAL_PORT.. below the ephemeral range (see ConnSpec.localPort)
const FIRST_LOCAL_PORT = 20_000,
  LAST_LOCAL_PORT = 32_000;

async function healthy(base: string): Promise<boolean> {
  try {
    return (await fetch(`${base}/healthz`, { signal: AbortSignal.timeout(2000) })).ok;
  } catch {
    return false;
  }
}

/** Gateways from --urls, else --gateways N on --base-port.., else every gateway stack.sh reports. */
export async function resolveGateways(options: Options, stack: StackEntry[]): Promise<Gateway[]> {
  let bases: Array<{ name: string; base: string }>;
  if (options.urls.length > 0)
    bases = options.urls.map((url, i) => ({
      name: `node-${i + 1}`,
      base: url
        .replace(/^ws/, 'http')
        .replace(/\/v1\/ws$/, '')
        .replace(/\/$/, ''),
    }));
  else if (options.gateways > 0)
    bases = Array.from({ length: options.gateways }, (_, i) => ({
      name: `gateway-${i + 1}`,
      base: `http://127.0.0.1:${options.basePort + i}`,
    }));
  else {
    const fromStatus = stack
      .filter((entry) => entry.role === 'gateway' && typeof entry.port === 'number')
      .sort((a, b) => a.port! - b.port!);
    if (fromStatus.length === 0) throw new Error('no gateways: start the stack (GATEWAYS=8 npm run stack:up) or pass --urls / --gateways');
    bases = fromStatus.map((entry) => ({ name: entry.name, base: `http://127.0.0.1:${entry.port}` }));
  }
  const gateways: Gateway[] = [];
  for (const { name, base } of bases) {
    assertLoopback(base);
    if (!(await healthy(base))) throw new Error(`gateway ${name} does not answer at ${base}/healthz`);
    const port = Number(new URL(base).port || 80);
    const fromStack = stack.find((entry) => entry.role === 'gateway' && entry.port === port);
    gateways.push({
      name: fromStack?.name ?? name,
      base,
      ws: `${base.replace(/^http/, 'ws')}/v1/ws`,
      metrics: `${base}/metrics`,
      port,
      pids: pidsListeningOn(port),
    });
  }
  return gateways;
}

function jwtSecret(options: Options): string {
  if (options.jwtSecret) return options.jwtSecret;
  const file = options.jwtSecretFile ?? join(stackDir(), 'jwt-secret');
  if (!existsSync(file))
    throw new Error(
      `no JWT secret: pass --jwt-secret S or --jwt-secret-file F (the gateways' REALCHAT_JWT_SECRET; stack.sh keeps it in ${file})`,
    );
  return readFileSync(file, 'utf8').replace(/\r?\n$/, '');
}

const mean = (values: number[]): number => (values.length === 0 ? 0 : values.reduce((a, b) => a + b, 0) / values.length);
const inWindow = (samples: ServerSample[], from: number, to: number): ServerSample[] =>
  samples.filter((s) => s.t_ms >= from && s.t_ms <= to);
/** A gateway's own count of connections that completed hello, from its /metrics. */
const activeConnections = (sample: ServerSample | undefined): number | undefined => sample?.metrics?.['realchat_active_connections'];

export interface NodeResult {
  name: string;
  url: string;
  port: number;
  pids: number[];
  connections: number;
  connections_min: number;
  connections_end: number;
  rss_baseline_bytes: number;
  rss_hold_bytes: number;
  rss_peak_bytes: number;
  rss_delta_bytes: number;
  bytes_per_connection: number;
  cpu_s_ramp: number;
  cpu_s_hold: number;
  cpu_pct_hold: number;
  eventloop_lag_p99_max_ms: number;
}

export interface ClusterResult {
  scenario: 'cluster';
  target: 'realchat';
  target_version: string;
  started_at: string;
  finished_at: string;
  command: string;
  machine: ReturnType<typeof machineInfo>;
  load_average_at_start: number[];
  gateways: number;
  connections_requested: number;
  connections_open_clients: number;
  connect_failed: number;
  accept_per_s: number;
  ramp_s: number;
  ramp_rate_requested: number;
  connections_total: number;
  connections_per_node: number[];
  per_node: NodeResult[];
  rss_delta_total_bytes: number;
  bytes_per_connection: number;
  bytes_per_connection_median_node: number;
  hold_s: number;
  rate: number;
  group_size: number;
  /** Members of each conversation that never connected (not counted in group_size or the deliveries). */
  offline_members: number;
  conversations: number;
  sent: number;
  acked: number;
  delivered: number;
  expected_deliveries: number;
  lost: number;
  duplicates: number;
  gaps: number;
  dropped_during_hold: number;
  open_at_end_clients: number;
  /** --storm: every connection dropped halfway through the hold and reconnected (resume from its sequences). */
  storm?: StormTally;
  latency_ms: LatencySummary;
  latency_curve: Array<{ pct: number; ms: number }>;
  errors: Record<string, number>;
  infra: Array<{
    name: string;
    pids: number;
    cpu_s_hold: number;
    cpu_pct_hold: number;
    rss_bytes: number;
    metrics_last?: Record<string, number>;
  }>;
  /**
   * Every stack process with a /metrics endpoint (gateways, relays, delivery workers), over the hold:
   * CPU per 1,000 acked messages, GC pause p99, event-loop lag p99 (worst 1-s sample), and the
   * pipeline stages it reports (realchat_pipeline_seconds: time since commit, ms).
   */
  processes: ProcessStats[];
  /** Which worker program generated the load: perf/worker.ts ('node') or perf/go/loadgen ('go'). */
  generator_engine: Engine;
  generator: { workers: number; source_addresses: string[]; rss_bytes: number; cpu_s_hold: number };
  samples: { names: string[]; series: Array<{ t_s: number; conns: Array<number | null>; rss_mib: number[]; cpu_s: number[] }> };
  notes: string[];
  failures: string[];
}

interface ProcessStats {
  name: string;
  cpu_s_hold: number;
  cpu_ms_per_1000_messages: number;
  gc_pause_p99_ms: number | null;
  eventloop_lag_p99_max_ms: number | null;
  stages: Record<string, { count: number; p50_ms: number; p99_ms: number }>;
}

/** What the run does, fixed before anything connects. */
interface ClusterPlan {
  runId: string;
  startedAt: string;
  loadAtStart: number[];
  version: string;
  /** HS256 secret the gateways verify tokens with. */
  jwtSecret: string;
  gateways: Gateway[];
  connections: number;
  /** Members per conversation: consecutive connections, so on consecutive gateways. */
  groupSize: number;
  conversations: number;
  /** Members of each conversation that never connect (a large room past REALCHAT_LARGE_ROOM_MEMBERS). */
  offlineMembers: number;
  /** Open-loop msg/s while holding. */
  rate: number;
  workers: number;
  sourceAddresses: string[];
}

/** One per gateway (its pids and /metrics), one per other stack process tree, the generator's workers. */
interface Samplers {
  nodes: ServerSampler[];
  infra: Array<{ name: string; sampler: ServerSampler }>;
  generator: ServerSampler | undefined;
}

/** nowMs() at each phase boundary; 0 = not reached. */
interface Timeline {
  rampStart: number;
  rampEnd: number;
  sendStart: number;
  holdEnd: number;
  /** When the storm dropped every connection (0: no storm). */
  stormAt: number;
}

/** A run in progress: what each phase found, for the report (a phase not reached leaves its initial value). */
interface ClusterRun {
  options: Options;
  command: string;
  log: Log;
  plan: ClusterPlan;
  samplers: Samplers;
  notes: string[];
  failures: string[];
  workers: Workers | undefined;
  /** conversation id -> connection indices of its members */
  members: Map<string, number[]>;
  /** per gateway: mean RSS right before connecting */
  baselineRss: number[];
  connectResults: ConnectResult[];
  reports: WorkerReport[];
  timeline: Timeline;
  /** Histograms of every process with /metrics at the start of the hold and after the drain. */
  histograms: { urls: Map<string, string>; before: Map<string, HistSnapshot | undefined>; after: Map<string, HistSnapshot | undefined> };
}

const HISTOGRAMS = ['nodejs_gc_duration_seconds', 'realchat_pipeline_seconds'] as const;

async function snapshotHistograms(run: ClusterRun, into: Map<string, HistSnapshot | undefined>): Promise<void> {
  await Promise.all([...run.histograms.urls].map(async ([name, url]) => into.set(name, await scrape(url, HISTOGRAMS))));
}

const RESULT_NOTES: readonly string[] = [
  "connections per node: mean of the gateway's realchat_active_connections (connections that completed hello) over the hold",
  "bytes per connection (per node) = (mean RSS over the hold - mean RSS over 3 s before connecting) / that node's connections; total = sum of deltas / sum of connections",
  'latency = receipt time on each member (sender included) minus the intended send time of the open-loop schedule; the path crosses gateway, PostgreSQL, relay, Kafka, delivery worker and the node topic',
  'infra rows: CPU and RSS of each non-gateway stack process tree over the hold (trees taken at the start of the run)',
];

export async function runCluster(options: Options, command: string, log: Log): Promise<void> {
  const run = await begin(options, command, log);
  const watchdog = setTimeout(
    () => {
      log('watchdog: run exceeded its time bound, stopping');
      void (async () => {
        await run.workers?.close();
        process.exit(3);
      })();
    },
    (options.duration + run.plan.connections / options.rampRate + 1200) * 1000,
  );
  watchdog.unref();
  try {
    const { workers, slots } = await setup(run);
    await ramp(run, workers);
    await hold(run, workers, slots);
  } catch (e) {
    run.failures.push(e instanceof Error ? e.message : String(e));
    log(`cluster run failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
  } finally {
    clearTimeout(watchdog);
  }
  if (run.timeline.holdEnd === 0) run.timeline.holdEnd = nowMs();
  await collect(run);
  report(run);
}

/** Find the gateways, plan the run from the options, start sampling every process of the stack. */
async function begin(options: Options, command: string, log: Log): Promise<ClusterRun> {
  const startedAt = new Date().toISOString();
  const loadAtStart = loadavg();
  const runId = randomBytes(4).toString('hex');
  const stack = stackStatus();
  const gateways = await resolveGateways(options, stack);
  const connections = options.connections;
  const groupSize = Math.max(2, Number.isNaN(options.groupSize) ? 2 : options.groupSize);
  const plan: ClusterPlan = {
    runId,
    startedAt,
    loadAtStart,
    gateways,
    connections,
    groupSize,
    offlineMembers: options.offlineMembers,
    conversations: Math.min(options.conversations > 0 ? options.conversations : 1000, Math.floor(connections / groupSize)),
    rate: Number.isNaN(options.rate) ? 100 : options.rate,
    workers: workerCount(connections, options.workers),
    sourceAddresses: sourceAddresses(connections, options.sourceAddrs, Math.ceil(connections / (LAST_LOCAL_PORT - FIRST_LOCAL_PORT))),
    jwtSecret: jwtSecret(options),
    version: realchatVersion(),
  };
  const notes = planNotes(plan);
  if (options.engine === 'go') notes.push(`generator: Go workers (perf/go/loadgen), GOMAXPROCS ${options.goProcs} each`);

  log(
    `cluster: ${connections} connections over ${gateways.length} gateways (${gateways.map((gateway) => gateway.port).join(',')}), ${plan.workers} ${options.engine} workers, ${plan.sourceAddresses.length} source addresses; hold ${options.duration} s at ${plan.rate} msg/s in ${plan.conversations} conversations of ${groupSize}`,
  );
  for (const gateway of gateways)
    if (gateway.pids.length === 0) notes.push(`${gateway.name}: pid not found for port ${gateway.port} (no RSS/CPU figures for it)`);
  return {
    options,
    command,
    log,
    plan,
    samplers: startSamplers(gateways, stack),
    notes,
    failures: [],
    workers: undefined,
    members: new Map(),
    baselineRss: gateways.map(() => 0),
    connectResults: [],
    reports: [],
    timeline: { rampStart: 0, rampEnd: 0, sendStart: 0, holdEnd: 0, stormAt: 0 },
    histograms: {
      urls: new Map([
        ...gateways.map((g) => [g.name, g.metrics] as [string, string]),
        ...stack
          .filter((e) => (e.role === 'relay' || e.role === 'delivery') && e.port)
          .map((e) => [e.name, `http://127.0.0.1:${e.port}/metrics`] as [string, string]),
      ]),
      before: new Map(),
      after: new Map(),
    },
  };
}

/** Where the plan falls short of what the scenario is meant to measure. */
function planNotes(plan: ClusterPlan): string[] {
  const notes: string[] = [];
  const gatewayCount = plan.gateways.length;
  if (gatewayCount < 2) notes.push('only one gateway: nothing crosses nodes');
  if (plan.groupSize > gatewayCount)
    notes.push(`group size ${plan.groupSize} > ${gatewayCount} gateways: some members of a conversation share a node`);
  const perNode = Math.ceil(plan.connections / gatewayCount);
  if (perNode > 16_000)
    notes.push(`${perNode} connections per gateway: above ~16k a gateway may hit its 20,000 open-files limit; use more gateways`);
  return notes;
}

function startSamplers(gateways: Gateway[], stack: StackEntry[]): Samplers {
  const nodes = gateways.map((gateway) => new ServerSampler(gateway.pids, gateway.metrics));
  for (const sampler of nodes) sampler.start();
  const infra: Samplers['infra'] = [];
  const redisPort = process.env['REDIS_URL'] ? Number(new URL(process.env['REDIS_URL']).port || 6379) : 0;
  // relay and delivery serve /metrics on their stack port (forwarded deliveries, presence fallbacks, lag)
  for (const entry of stack.filter((e) => e.role !== 'gateway')) {
    const metricsUrl =
      (entry.role === 'relay' || entry.role === 'delivery') && entry.port ? `http://127.0.0.1:${entry.port}/metrics` : undefined;
    infra.push({ name: entry.name, sampler: new ServerSampler(processTree(entry.pid), metricsUrl) });
  }
  if (redisPort) {
    const pids = pidsListeningOn(redisPort);
    if (pids.length) infra.push({ name: `redis:${redisPort}`, sampler: new ServerSampler(pids) });
  }
  for (const { sampler } of infra) sampler.start();
  return { nodes, infra, generator: undefined };
}

/** One progress line: connections each gateway reports, the gateways' RSS, the machine's load. */
function progressLine(run: ClusterRun, what: string): void {
  const latest = run.samplers.nodes.map((sampler) => sampler.samples[sampler.samples.length - 1]);
  const perNode = latest.map((sample) => activeConnections(sample) ?? NaN);
  const total = perNode.reduce((sum, count) => sum + (Number.isNaN(count) ? 0 : count), 0);
  const rss = latest.reduce((sum, sample) => sum + (sample?.rss_bytes ?? 0), 0);
  run.log(
    `${what}: ${total} connections on the gateways [${perNode.map((count) => (Number.isNaN(count) ? '?' : count)).join(' ')}], gateways RSS ${mib(rss)} MiB, load ${loadavg()
      .map((l) => l.toFixed(1))
      .join(' ')}`,
  );
}

/** Identities and conversations, the RSS baseline, then the workers, each given its share of the connections. */
async function setup(run: ClusterRun): Promise<{ workers: Workers; slots: SlotSpec[] }> {
  const { plan } = run;
  // identities: HS256 tokens signed here with the stack's secret; conversations via REST, round robin
  // over the gateways (a 401 there means the secret does not match)
  const setupStart = Date.now();
  const users: User[] = Array.from({ length: plan.connections }, () => {
    const userId = randomUUID();
    return { userId, token: tokenFor(userId, plan.jwtSecret, 12 * 3600) };
  });
  // conversation c: connections c*g .. c*g+g-1, which sit on consecutive gateways (node = idx mod G)
  const groups = Array.from({ length: plan.conversations }, (_, conv) =>
    Array.from({ length: plan.groupSize }, (_, k) => conv * plan.groupSize + k),
  );
  // members who never connect: only their ids are needed (a token is never used)
  const offline = (): User[] => Array.from({ length: plan.offlineMembers }, () => ({ userId: randomUUID(), token: '' }));
  const conversationIds = await makeConversations(
    plan.gateways.map((gateway) => gateway.base),
    groups.map((group) => [...group.map((i) => users[i]!), ...offline()]),
    plan.runId,
    16,
  );
  const conversationOf = new Map<number, string>();
  groups.forEach((group, conv) => {
    run.members.set(conversationIds[conv]!, group);
    for (const i of group) conversationOf.set(i, conversationIds[conv]!);
  });
  run.notes.push(
    `setup: ${plan.connections} HS256 tokens signed locally, ${plan.conversations} conversations of ${plan.groupSize}${plan.offlineMembers > 0 ? ` (+${plan.offlineMembers} offline members each)` : ''} created via REST (round robin over the gateways) in ${((Date.now() - setupStart) / 1000).toFixed(1)} s`,
  );
  const specs = users.map((user, i) => connectionSpec(plan, i, user, conversationOf.get(i)));
  const slots: SlotSpec[] = [];
  for (const [conv, members] of run.members) for (const conn of members) slots.push({ conn, conv });

  // RSS baseline per node, after setup, right before connecting
  run.baselineRss = await baselineRss(run.samplers.nodes);
  run.log(`baseline RSS per gateway (MiB): ${run.baselineRss.map(mib).join(' ')}`);

  const workers = new Workers(plan.workers, run.log, { engine: run.options.engine, goProcs: run.options.goProcs });
  run.workers = workers;
  const generator = new ServerSampler(workers.procs.map((proc) => proc.pid!).filter(Boolean));
  run.samplers.generator = generator;
  generator.start();
  await workers.all(
    (workerId) => ({
      cmd: 'init',
      init: {
        workerId,
        target: 'realchat',
        url: plan.gateways[0]!.ws,
        runId: plan.runId,
        conns: specs.filter((spec) => spec.idx % plan.workers === workerId),
        payloadBytes: run.options.payloadBytes,
      },
    }),
    'ready',
    120_000,
  );
  return { workers, slots };
}

/** Connection i: gateway i mod G, source address i mod A, explicit local port while the range lasts. */
function connectionSpec(plan: ClusterPlan, i: number, user: User, conv: string | undefined): ConnSpec {
  const addressCount = plan.sourceAddresses.length;
  const portOffset = Math.floor(i / addressCount);
  return {
    idx: i,
    userId: user.userId,
    token: user.token,
    convs: conv ? [conv] : [],
    localAddress: plan.sourceAddresses[i % addressCount]!,
    url: plan.gateways[i % plan.gateways.length]!.ws,
    ...(portOffset <= LAST_LOCAL_PORT - FIRST_LOCAL_PORT ? { localPort: FIRST_LOCAL_PORT + portOffset } : {}),
  };
}

/** Open every connection at --ramp-rate (shared by the workers), then let the gateways settle. */
async function ramp(run: ClusterRun, workers: Workers): Promise<void> {
  const { options, plan, timeline } = run;
  timeline.rampStart = nowMs();
  const progress = setInterval(() => progressLine(run, 'ramp'), 10_000);
  let answers: WorkerMsg[];
  try {
    answers = await workers.some(
      () => ({ cmd: 'connect', upTo: Number.MAX_SAFE_INTEGER, ratePerS: options.rampRate / plan.workers }),
      'connected',
      (plan.connections / options.rampRate + 180) * 1000,
    );
    timeline.rampEnd = nowMs();
  } finally {
    clearInterval(progress);
  }
  run.connectResults = answers.map((answer) => (answer as Extract<WorkerMsg, { ev: 'connected' }>).result);
  if (answers.length < plan.workers)
    run.failures.push(`ramp: only ${answers.length}/${plan.workers} workers finished connecting within the timeout`);
  const { open, failed } = mergeConnect(run.connectResults);
  run.log(`ramp done in ${((timeline.rampEnd - timeline.rampStart) / 1000).toFixed(1)} s: ${open} open, ${failed} failed`);
  await sleep(Math.max(3, options.settle) * 1000);
  progressLine(run, 'settled');
}

/** Hold every connection for --duration s while the open-loop messages flow, then wait --drain s. */
async function hold(run: ClusterRun, workers: Workers, slots: SlotSpec[]): Promise<void> {
  const { options, plan, timeline } = run;
  const total = totalMessages(plan.rate, options.duration);
  await snapshotHistograms(run, run.histograms.before);
  timeline.sendStart = nowMs() + 1000;
  const sendEnd = timeline.sendStart + options.duration * 1000;
  const progress = setInterval(
    () => progressLine(run, `holding (${Math.round((nowMs() - timeline.sendStart) / 1000)}/${options.duration} s)`),
    options.progressEvery * 1000,
  );
  try {
    run.log(`holding for ${options.duration} s; sending ${total} messages at ${plan.rate}/s from ${slots.length} sender slots`);
    const sending = workers.some(
      { cmd: 'send', startMs: timeline.sendStart, rate: plan.rate, total, slots },
      'sent',
      (options.duration + 180) * 1000,
    );
    let storming: Promise<unknown[]> = Promise.resolve([]);
    if (options.storm) {
      timeline.stormAt = timeline.sendStart + (options.duration * 1000) / 2;
      run.log(`storm at ${options.duration / 2} s: every connection dropped, reconnected at ${options.stormRate}/s overall`);
      storming = workers.some(
        { cmd: 'storm', atMs: timeline.stormAt, ratePerS: options.stormRate / plan.workers },
        'stormed',
        (options.duration + plan.connections / options.stormRate + 180) * 1000,
      );
    }
    const [sent, stormed] = await Promise.all([sending, storming]);
    if (sent.length < plan.workers) run.failures.push(`send: only ${sent.length}/${plan.workers} workers finished their schedule`);
    if (options.storm && stormed.length < plan.workers)
      run.failures.push(`storm: only ${stormed.length}/${plan.workers} workers finished reconnecting`);
    const left = sendEnd - nowMs();
    if (left > 0) await sleep(left);
    timeline.holdEnd = nowMs();
  } finally {
    clearInterval(progress);
  }
  progressLine(run, 'hold done');
  await sleep(options.drain * 1000);
  await snapshotHistograms(run, run.histograms.after);
}

/** The workers' reports; then stop every sampler and the workers. */
async function collect(run: ClusterRun): Promise<void> {
  const { workers, samplers } = run;
  try {
    if (workers)
      run.reports = (await workers.some({ cmd: 'report' }, 'report', 120_000)).map(
        (answer) => (answer as Extract<WorkerMsg, { ev: 'report' }>).report,
      );
    if (workers && run.reports.length < run.plan.workers)
      run.failures.push(`report: only ${run.reports.length}/${run.plan.workers} workers reported`);
  } catch (e) {
    run.failures.push(`report: ${String(e)}`);
  }
  for (const sampler of [
    ...samplers.nodes,
    ...samplers.infra.map((row) => row.sampler),
    ...(samplers.generator ? [samplers.generator] : []),
  ])
    sampler.stop();
  await workers?.close();
}

/** Write perf/results/cluster-realchat-<stamp>.{json,svg,md} (or --out) and log the summary. */
function report(run: ClusterRun): void {
  const result = buildResult(run);
  const base = resultsBase(run.options.out, 'cluster-realchat');
  mkdirSync(dirname(base), { recursive: true });
  writeFileSync(`${base}.json`, JSON.stringify(result, null, 2));
  writeFileSync(
    `${base}.svg`,
    latencySvg(`cluster · ${result.connections_total} conn on ${result.gateways} gateways · ${result.rate} msg/s`, [
      { name: 'realchat', curve: result.latency_curve },
    ]),
  );
  writeFileSync(`${base}.md`, clusterMarkdown(result, `${base.slice(base.lastIndexOf('/') + 1)}.svg`));
  const latency = result.latency_ms;
  run.log(
    `connections ${result.connections_total} on ${result.gateways} gateways [${result.connections_per_node.join(' ')}], ${(result.bytes_per_connection / 1024).toFixed(2)} KiB/connection, ` +
      `delivered ${result.delivered}/${result.expected_deliveries} (lost ${result.lost}), p50 ${latency.p50} p99 ${latency.p99} p99.9 ${latency.p999} max ${latency.max} ms, failures ${result.failures.length}`,
  );
  run.log(`wrote ${relative(process.cwd(), base)}.json (+ .md, .svg)`);
  if (run.failures.length > 0) process.exitCode = 1;
}

/** The span the per-node and infra figures are taken over. */
interface HoldWindow {
  from: number;
  to: number;
  seconds: number;
}

function buildResult(run: ClusterRun): ClusterResult {
  const { options, plan, samplers, timeline } = run;
  const tally = tallyReports(run.reports, run.members);
  const from = timeline.sendStart || timeline.rampEnd || nowMs();
  const holdWindow: HoldWindow = { from, to: timeline.holdEnd, seconds: Math.max(0.001, (timeline.holdEnd - from) / 1000) };
  const perNode = plan.gateways.map((gateway, i) => nodeResult(gateway, samplers.nodes[i]!, run.baselineRss[i] ?? 0, timeline, holdWindow));
  const connectionsTotal = perNode.reduce((sum, node) => sum + node.connections, 0);
  const rssDeltaTotal = perNode.reduce((sum, node) => sum + node.rss_delta_bytes, 0);
  const ramped = mergeConnect(run.connectResults);
  const dropped = Object.entries(tally.errors)
    .filter(([code]) => code.startsWith('closed_'))
    .reduce((sum, [, n]) => sum + n, 0);
  return {
    scenario: 'cluster',
    target: 'realchat',
    target_version: plan.version,
    started_at: plan.startedAt,
    finished_at: new Date().toISOString(),
    command: run.command,
    machine: machineInfo(),
    load_average_at_start: plan.loadAtStart.map((load) => Math.round(load * 100) / 100),
    gateways: plan.gateways.length,
    connections_requested: plan.connections,
    connections_open_clients: ramped.open,
    connect_failed: ramped.failed,
    accept_per_s: ramped.accept_per_s,
    ramp_s: (timeline.rampEnd - timeline.rampStart) / 1000,
    ramp_rate_requested: options.rampRate,
    connections_total: connectionsTotal,
    connections_per_node: perNode.map((node) => node.connections),
    per_node: perNode,
    rss_delta_total_bytes: rssDeltaTotal,
    bytes_per_connection: connectionsTotal > 0 ? rssDeltaTotal / connectionsTotal : 0,
    bytes_per_connection_median_node: median(perNode.filter((node) => node.connections > 0).map((node) => node.bytes_per_connection)),
    hold_s: holdWindow.seconds,
    rate: plan.rate,
    group_size: plan.groupSize,
    offline_members: plan.offlineMembers,
    conversations: run.members.size,
    sent: tally.sent,
    acked: tally.acked,
    delivered: tally.delivered,
    expected_deliveries: tally.expected_deliveries,
    lost: tally.lost,
    duplicates: tally.duplicates,
    gaps: tally.gaps,
    dropped_during_hold: dropped,
    open_at_end_clients: tally.open,
    ...(options.storm ? { storm: stormTally(run.reports, tally.lost) } : {}),
    latency_ms: tally.latency_ms,
    latency_curve: tally.latency_curve,
    errors: tally.errors,
    infra: samplers.infra.map(({ name, sampler }) => infraRow(name, sampler, holdWindow)),
    processes: processStats(run, holdWindow, tally.acked),
    generator_engine: options.engine,
    generator: {
      workers: plan.workers,
      source_addresses: plan.sourceAddresses,
      rss_bytes: samplers.generator?.meanRss(holdWindow.from, holdWindow.to) ?? 0,
      cpu_s_hold: samplers.generator?.cpuBetween(holdWindow.from, holdWindow.to) ?? 0,
    },
    samples: { names: plan.gateways.map((gateway) => gateway.name), series: timeSeries(samplers.nodes, timeline.sendStart) },
    notes: [...run.notes, ...RESULT_NOTES],
    failures: run.failures,
  };
}

/** One gateway: connections it reports, RSS against its baseline, CPU and event-loop lag over the hold. */
/** CPU per 1,000 acked messages, GC pause p99, loop lag and pipeline stages of every process with /metrics. */
function processStats(run: ClusterRun, holdWindow: HoldWindow, acked: number): ProcessStats[] {
  const { samplers, histograms } = run;
  const byName = new Map<string, ServerSampler>([
    ...samplers.nodes.map((s, i) => [run.plan.gateways[i]!.name, s] as [string, ServerSampler]),
    ...samplers.infra.map(({ name, sampler }) => [name, sampler] as [string, ServerSampler]),
  ]);
  const ms = (v: number) => (Number.isFinite(v) ? Math.round(v * 1000 * 10) / 10 : Number.NaN);
  return [...histograms.urls.keys()].map((name) => {
    const sampler = byName.get(name);
    const cpu = sampler?.cpuBetween(holdWindow.from, holdWindow.to) ?? 0;
    const before = histograms.before.get(name);
    const after = histograms.after.get(name);
    const gc = windowQuantiles(before, after, 'nodejs_gc_duration_seconds', 'kind="minor"', [0.99]);
    const gcMajor = windowQuantiles(before, after, 'nodejs_gc_duration_seconds', 'kind="major"', [0.99]);
    const lags = (sampler?.samples ?? [])
      .filter((x) => x.t_ms >= holdWindow.from && x.t_ms <= holdWindow.to)
      .map((x) => x.metrics?.['nodejs_eventloop_lag_p99_seconds'])
      .filter((v): v is number => typeof v === 'number');
    const stages: ProcessStats['stages'] = {};
    for (const key of after?.get('realchat_pipeline_seconds')?.keys() ?? []) {
      const w = windowQuantiles(before, after, 'realchat_pipeline_seconds', key, [0.5, 0.99]);
      if (w.count > 0) stages[/stage="([^"]*)"/.exec(key)?.[1] ?? key] = { count: w.count, p50_ms: ms(w.q[0]!), p99_ms: ms(w.q[1]!) };
    }
    const gcP99 = [gc, gcMajor].filter((g) => g.count > 0).map((g) => g.q[0]!);
    return {
      name,
      cpu_s_hold: Math.round(cpu * 100) / 100,
      cpu_ms_per_1000_messages: acked > 0 ? Math.round((cpu / acked) * 1_000_000 * 10) / 10 : 0,
      gc_pause_p99_ms: gcP99.length ? ms(Math.max(...gcP99)) : null,
      eventloop_lag_p99_max_ms: lags.length ? Math.round(Math.max(...lags) * 1000 * 10) / 10 : null,
      stages,
    };
  });
}

function nodeResult(gateway: Gateway, sampler: ServerSampler, baseline: number, timeline: Timeline, holdWindow: HoldWindow): NodeResult {
  const held = inWindow(sampler.samples, holdWindow.from, holdWindow.to);
  const heldCounts = held.map(activeConnections).filter((v): v is number => typeof v === 'number');
  const lastCounted = [...sampler.samples].reverse().find((s) => activeConnections(s) !== undefined && s.t_ms <= holdWindow.to + 1500);
  const connections = heldCounts.length ? mean(heldCounts) : (activeConnections(lastCounted) ?? 0);
  const rssHold = sampler.meanRss(holdWindow.from, holdWindow.to) ?? 0;
  const rssDelta = rssHold - baseline;
  const lagMs = Math.max(0, ...held.map((s) => s.metrics?.['nodejs_eventloop_lag_p99_seconds'] ?? 0)) * 1000;
  const cpuHold = sampler.cpuBetween(holdWindow.from, holdWindow.to) ?? 0;
  return {
    name: gateway.name,
    url: gateway.base,
    port: gateway.port,
    pids: gateway.pids,
    connections: Math.round(connections),
    connections_min: heldCounts.length ? Math.min(...heldCounts) : 0,
    connections_end: activeConnections(lastCounted) ?? 0,
    rss_baseline_bytes: baseline,
    rss_hold_bytes: rssHold,
    rss_peak_bytes: Math.max(0, ...sampler.samples.map((s) => s.rss_bytes)),
    rss_delta_bytes: rssDelta,
    bytes_per_connection: connections > 0 ? rssDelta / connections : 0,
    cpu_s_ramp: timeline.rampEnd > timeline.rampStart ? (sampler.cpuBetween(timeline.rampStart, timeline.rampEnd) ?? 0) : 0,
    cpu_s_hold: cpuHold,
    cpu_pct_hold: (100 * cpuHold) / holdWindow.seconds,
    eventloop_lag_p99_max_ms: Math.round(lagMs * 10) / 10,
  };
}

/** A non-gateway stack process tree over the hold, with its realchat_* metrics at the end. */
function infraRow(name: string, sampler: ServerSampler, holdWindow: HoldWindow): ClusterResult['infra'][number] {
  const cpu = sampler.cpuBetween(holdWindow.from, holdWindow.to) ?? 0;
  const lastMetrics = [...sampler.samples].reverse().find((s) => s.metrics)?.metrics;
  const kept = lastMetrics
    ? Object.fromEntries(
        Object.entries(lastMetrics).filter(([metric]) => metric.startsWith('realchat_') && metric !== 'realchat_active_connections'),
      )
    : undefined;
  return {
    name,
    pids: sampler.pids.length,
    cpu_s_hold: cpu,
    cpu_pct_hold: (100 * cpu) / holdWindow.seconds,
    rss_bytes: sampler.meanRss(holdWindow.from, holdWindow.to) ?? 0,
    ...(kept ? { metrics_last: kept } : {}),
  };
}

/** Per node, every 5th sample of the first node's clock (a row per sample would be large at 1 Hz x 8 nodes). */
function timeSeries(nodes: ServerSampler[], sendStart: number): ClusterResult['samples']['series'] {
  const reference = nodes[0]?.samples ?? [];
  const firstSampleMs = reference[0]?.t_ms ?? 0;
  const series: ClusterResult['samples']['series'] = [];
  for (let index = 0; index < reference.length; index += 5) {
    const atMs = reference[index]!.t_ms;
    const nearest = nodes.map((sampler) =>
      sampler.samples.reduce<ServerSample | undefined>(
        (best, s) => (!best || Math.abs(s.t_ms - atMs) < Math.abs(best.t_ms - atMs) ? s : best),
        undefined,
      ),
    );
    series.push({
      t_s: Math.round((atMs - (sendStart || firstSampleMs)) / 100) / 10,
      conns: nearest.map((s) => activeConnections(s) ?? null),
      rss_mib: nearest.map((s) => Math.round((s?.rss_bytes ?? 0) / 104857.6) / 10),
      cpu_s: nearest.map((s) => Math.round((s?.cpu_s ?? 0) * 100) / 100),
    });
  }
  return series;
}

export function clusterMarkdown(result: ClusterResult, svgName: string): string {
  const latency = result.latency_ms;
  const lines = [
    ...markdownHead(
      `cluster · ${result.target_version}`,
      `Started ${result.started_at} on ${result.machine.cpus} CPUs / ${mib(result.machine.memory_bytes)} MiB, Node ${result.machine.node}; load average at start ${result.load_average_at_start.join(' ')}.`,
      result.command,
    ),
    '| metric | value |',
    '| --- | --- |',
    `| gateways | ${result.gateways} |`,
    `| connections on the gateways (mean over the hold) | **${result.connections_total}** (asked ${result.connections_requested}; clients open after ramp ${result.connections_open_clients}, failed ${result.connect_failed}) |`,
    `| connections per node | ${result.connections_per_node.join(' / ')} |`,
    `| ramp | ${result.ramp_s.toFixed(1)} s, accept ${result.accept_per_s.toFixed(0)} conn/s (asked ${result.ramp_rate_requested}/s) |`,
    `| hold | ${result.hold_s.toFixed(0)} s at ${result.rate} msg/s, ${result.conversations} conversations of ${result.group_size} (members on different nodes)${result.offline_members > 0 ? ` + ${result.offline_members} offline members each` : ''} |`,
    `| memory per connection (all nodes) | **${kib(result.bytes_per_connection)} KiB** (RSS delta ${mib(result.rss_delta_total_bytes)} MiB; median node ${kib(result.bytes_per_connection_median_node)} KiB) |`,
    `| sent / acked | ${result.sent} / ${result.acked} |`,
    `| delivered (unique) / expected | ${result.delivered} / ${result.expected_deliveries} (missing at the end of the drain ${result.lost}, duplicates ${result.duplicates}, gaps ${result.gaps}) |`,
    `| latency ms p50 / p95 / p99 / p99.9 / max | **${latency.p50} / ${latency.p95} / ${latency.p99} / ${latency.p999} / ${latency.max}** (${latency.count} deliveries) |`,
    `| dropped during the run / client connections open at the end | ${result.dropped_during_hold} / ${result.open_at_end_clients} |`,
    ...(result.storm
      ? [
          `| storm: dropped / reopened / failed | ${result.storm.dropped} / ${result.storm.reopened} / ${result.storm.failed} |`,
          `| storm: all reconnected / resumed p50 / last resumed | **${result.storm.all_reconnected_s.toFixed(2)} s** / ${result.storm.resume_p50_s.toFixed(2)} s / ${result.storm.resume_max_s.toFixed(2)} s, lost ${result.storm.lost} |`,
        ]
      : []),
    `| errors | ${
      Object.keys(result.errors).length === 0
        ? 'none'
        : Object.entries(result.errors)
            .map(([code, n]) => `${code}: ${n}`)
            .join(', ')
    } |`,
    `| generator | ${result.generator.workers} ${result.generator_engine} workers, ${result.generator.source_addresses.length} source addresses, RSS ${mib(result.generator.rss_bytes)} MiB, CPU ${result.generator.cpu_s_hold.toFixed(1)} s over the hold |`,
    '',
    '## Per node',
    '',
    '| node | port | connections (mean / min / end) | RSS before → holding (MiB) | bytes/conn | CPU ramp s | CPU hold % | loop lag p99 max ms |',
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
    ...result.per_node.map(
      (node) =>
        `| ${node.name} | ${node.port} | ${node.connections} / ${node.connections_min} / ${node.connections_end} | ${mib(node.rss_baseline_bytes)} → ${mib(node.rss_hold_bytes)} | ${node.bytes_per_connection.toFixed(0)} | ${node.cpu_s_ramp.toFixed(1)} | ${node.cpu_pct_hold.toFixed(1)} | ${node.eventloop_lag_p99_max_ms} |`,
    ),
  ];
  if (result.infra.length > 0) {
    lines.push(
      '',
      '## Rest of the stack (over the hold)',
      '',
      '| process | pids | CPU % | RSS MiB | metrics at the end |',
      '| --- | --- | --- | --- | --- |',
    );
    for (const row of result.infra)
      lines.push(
        `| ${row.name} | ${row.pids} | ${row.cpu_pct_hold.toFixed(1)} | ${mib(row.rss_bytes)} | ${
          row.metrics_last
            ? Object.entries(row.metrics_last)
                .map(([metric, v]) => `${metric.replace(/^realchat_/, '')} ${v}`)
                .join(', ')
            : ''
        } |`,
      );
  }
  if ((result.processes ?? []).length > 0) {
    lines.push(
      '',
      '## Per process (over the hold)',
      '',
      '| process | CPU s | CPU ms / 1,000 msgs | GC pause p99 ms | loop lag p99 max ms | pipeline stages since commit, p50 / p99 ms |',
      '| --- | --- | --- | --- | --- | --- |',
    );
    for (const p of result.processes)
      lines.push(
        `| ${p.name} | ${p.cpu_s_hold} | ${p.cpu_ms_per_1000_messages} | ${p.gc_pause_p99_ms ?? ''} | ${p.eventloop_lag_p99_max_ms ?? ''} | ${Object.entries(
          p.stages,
        )
          .map(([stage, s]) => `${stage} ${s.p50_ms} / ${s.p99_ms}`)
          .join('; ')} |`,
      );
  }
  if (result.failures.length > 0) lines.push('', '## Failures', '', ...result.failures.map((failure) => `- ${failure}`));
  lines.push('', ...result.notes.map((note) => `- ${note}`), '', `![latency](${svgName})`, '');
  return lines.join('\n');
}
