/**
 * A chaos run: bring up the stack (or use one), drive the workload, run the seeded fault schedule,
 * heal, wait for every client to catch up, check the history against PostgreSQL, and write results.
 */
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import postgres from 'postgres';
import { createAuthenticator } from '../../gateway/auth.js';
import type { StoredMessage } from '../harness/history.js';
import { createConversationAt } from '../harness/queries.js';
import { applicable, type FaultKind, FaultRunner, planIsolated, planSchedule } from './faults.js';
import { ROOT, sleep } from './procs.js';
import { analyze, type ChaosResult, writeResults } from './report.js';
import { Rng } from './rng.js';
import { auditPipeline, neverRoutedRuns, readPipeline } from './pipeline-audit.js';
import { CHAOS_TOPICS, ChaosStack } from './stack.js';
import { type Broken, type Conversation, type User, Workload } from './workload.js';

export interface ChaosOptions {
  durationS: number;
  seed: number;
  /** messages per second, open loop */
  rate: number;
  faults: FaultKind[];
  /** Who publishes the outbox (default `ts`, our relays; `debezium`: Kafka Connect from the WAL). */
  relay?: 'ts' | 'debezium';
  /** mean seconds between fault starts */
  faultGapS: number;
  /** seconds between the faults of the isolated phase after the schedule (0: no isolated phase) */
  isolatedGapS: number;
  /** results written to <out>.json, .md, .svg */
  out: string;
  broken: Broken;
  users: number;
  /** bound on the heal + catch-up phase */
  healTimeoutS: number;
  log: (msg: string) => void;
}

export function defaultOut(seed: number, broken: Broken = 'none'): string {
  return join(ROOT, 'tests', 'artifacts', broken === 'none' ? `chaos-${seed}` : `chaos-${seed}-${broken}`);
}

export async function startStack(logDir: string, log: (m: string) => void, relay: 'ts' | 'debezium' = 'ts'): Promise<ChaosStack> {
  return ChaosStack.start({ gateways: 3, relay, relays: 2, deliveries: 2, logDir, log });
}

/** A v4-shaped UUID from the seeded generator, so the same seed makes the same users. */
function uuid(rng: Rng): string {
  const h = Array.from({ length: 32 }, () => Math.floor(rng.next() * 16).toString(16));
  h[12] = '4';
  h[16] = ((Number.parseInt(h[16]!, 16) & 0x3) | 0x8).toString(16);
  const s = h.join('');
  return `${s.slice(0, 8)}-${s.slice(8, 12)}-${s.slice(12, 16)}-${s.slice(16, 20)}-${s.slice(20)}`;
}

/**
 * An isolated fault starts only once nothing sent more than CAUGHT_UP_MS ago is unacked or
 * unsurfaced (at most CATCH_UP_MAX_S of waiting, then it starts anyway and its record says so).
 */
const CAUGHT_UP_MS = 3000;
const CATCH_UP_MAX_S = 60;

/** Member strides that are not multiples of the gateway count: consecutive members get different homes. */
const STEPS = [1, 2, 4, 5, 7];

export async function runOnStack(stack: ChaosStack, o: ChaosOptions, signal?: AbortSignal): Promise<ChaosResult> {
  if (signal?.aborted) throw new Error('aborted');
  const rng = new Rng(o.seed);
  const setupRng = rng.fork(1);
  const scheduleRng = rng.fork(2);
  const workRng = rng.fork(3);
  const auth = createAuthenticator({ secret: stack.secret });
  const nGw = stack.gateways.length;

  // Users homed round robin; conversations pick members with different homes, so every
  // conversation spans gateways: 1:1 pairs (two thirds) and groups of 3-5.
  const users: User[] = [];
  for (let k = 0; k < o.users; k++) {
    const id = uuid(setupRng);
    users.push({ id, token: await auth.issue(id, { ttlS: 6 * 3600 }), home: k % nGw });
  }
  const conversations: Conversation[] = [];
  const nConvs = Math.max(4, Math.round(o.users * 0.75));
  const gwPort = stack.gateways[0]!.port;
  for (let c = 0; c < nConvs; c++) {
    const size = c % 3 === 2 ? setupRng.int(3, 5) : 2;
    const start = setupRng.int(0, users.length - 1);
    const members: User[] = [];
    for (let j = 0; members.length < size && j < users.length; j++)
      members.push(users[(start + j * STEPS[c % STEPS.length]!) % users.length]!);
    const uniq = [...new Map(members.map((m) => [m.id, m])).values()];
    if (uniq.length < 2) continue;
    const id = await createConversationAt(
      gwPort,
      uniq[0]!.token,
      uniq.slice(1).map((m) => m.id),
    );
    conversations.push({ id, members: uniq.map((m) => m.id) });
  }
  const inConv = new Set(conversations.flatMap((c) => c.members));
  const active = users.filter((u) => inConv.has(u.id));

  const workload = new Workload(active, conversations, {
    rng: workRng,
    gatewayUrls: () => stack.gatewayUrls(),
    broken: o.broken,
    log: o.log,
    clock: () => Date.now(),
  });
  o.log(`${active.length} users (homes over ${nGw} gateways), ${conversations.length} conversations; connecting`);
  await workload.connectAll();

  // relay-* needs our relays, connect-* a Connect worker: a stack has one or the other.
  const kinds = o.faults.filter((k) => applicable(k, stack));
  const dropped = o.faults.filter((k) => !kinds.includes(k));
  if (dropped.length) o.log(`not applicable to this stack (relay: ${stack.connect ? 'debezium' : 'ts'}): ${dropped.join(', ')}`);
  const isolated = o.isolatedGapS > 0 ? planIsolated(scheduleRng, o.durationS, kinds, o.isolatedGapS) : [];
  const plan = [...planSchedule(scheduleRng, o.durationS, kinds, o.faultGapS), ...isolated];
  // After an isolated phase the workload runs one more gap, for the last fault to recover in.
  const schedule = async () => {
    await faults.run(plan);
    if (isolated.length > 0) await sleep(o.isolatedGapS * 1000);
  };
  o.log(`schedule: ${plan.length} faults planned: ${plan.map((f) => `${f.at_s}s ${f.kind}`).join(', ')}`);
  const t0 = Date.now();
  const faults = new FaultRunner(stack, t0, (m) => o.log(`[${((Date.now() - t0) / 1000).toFixed(1)}s] ${m}`), {
    backlog: () => workload.backlog(CAUGHT_UP_MS),
    inFlight: () => workload.inFlight(),
    maxWaitS: CATCH_UP_MAX_S,
  });
  const onAbort = () => faults.abort();
  signal?.addEventListener('abort', onAbort);
  // The runner's own event loop carries every client (the proxies run in processes of their own).
  const loopDelay = monitorEventLoopDelay({ resolution: 20 });
  loopDelay.enable();
  workload.start(o.rate);
  const progress = setInterval(() => {
    const acked = [...workload.sends.values()].filter((s) => s.ackAt !== null).length;
    o.log(`[${((Date.now() - t0) / 1000).toFixed(0)}s] sent ${workload.sends.size}, acked ${acked}, faults done ${faults.done.length}`);
  }, 10_000);
  try {
    await Promise.race([
      Promise.all([schedule(), sleep(o.durationS * 1000)]),
      new Promise<void>((_, rej) => signal?.addEventListener('abort', () => rej(new Error('aborted')))),
    ]);
  } catch (err) {
    workload.closeAll();
    throw err;
  } finally {
    workload.stop();
    clearInterval(progress);
    signal?.removeEventListener('abort', onAbort);
  }
  const durationS = Math.round((Date.now() - t0) / 100) / 10;
  o.log(`schedule over after ${durationS} s; healing`);
  // A part that cannot be healed is a finding of the run, not a reason to lose its results.
  await stack.healAll().catch((err: unknown) => o.log(`heal failed: ${String(err).slice(0, 500)}`));

  const healDeadline = Date.now() + o.healTimeoutS * 1000;
  const resent = await workload.resolveUnknown(Math.max(10_000, healDeadline - Date.now()));
  if (resent) o.log(`resent ${resent} sends with their keys to resolve their outcome`);

  const sql = postgres(stack.pg.url, { max: 2, onnotice: () => {}, connect_timeout: 10 });
  try {
    const ids = conversations.map((c) => c.id);
    const lastSeq = new Map<string, number>();
    for (const r of await sql<
      { id: string; last_seq: number }[]
    >`SELECT id, last_seq::int AS last_seq FROM conversations WHERE id IN ${sql(ids)}`)
      lastSeq.set(r.id, r.last_seq);
    let behind = workload.behind(lastSeq);
    while (behind.length > 0 && Date.now() < healDeadline) {
      await sleep(500);
      behind = workload.behind(lastSeq);
    }
    o.log(behind.length ? `${behind.length} member streams still behind: ${behind.slice(0, 5).join('; ')}` : 'every client caught up');
    const presence = await presenceAfterHeal(stack);
    if (presence?.missing.length) o.log(`running gateways not live in the presence registry: ${presence.missing.join(', ')}`);
    const stored = [
      ...(await sql<Array<StoredMessage & { committed_ms: number }>>`
        SELECT conversation_id, sequence::int AS sequence_number, id AS message_id, sender_id, idempotency_key, payload,
               (extract(epoch FROM created_at) * 1000)::float8 AS committed_ms
        FROM messages WHERE conversation_id IN ${sql(ids)} ORDER BY conversation_id, sequence`),
    ];
    workload.closeAll();
    const records = await readPipeline(stack.kafka.brokers, { ...CHAOS_TOPICS, nodes: stack.gateways.map((g) => g.name) }, 90_000).catch(
      (err: unknown) => {
        o.log(`pipeline audit could not read the topics: ${String(err)}`);
        return null;
      },
    );
    const counters = await stack.scrapeMetrics(`${o.out}-metrics`);
    const result = analyze({
      seed: o.seed,
      durationS,
      rate: o.rate,
      broken: o.broken,
      t0,
      faults: faults.done,
      inFlightAt: faults.inFlightAt,
      skipped: faults.skipped,
      workload,
      stored,
      behind,
      unexpectedExits: stack.unexpectedExits.filter((e) => e.at >= t0),
    });
    result.counters = counters;
    loopDelay.disable();
    result.runner_loop_delay_ms = {
      p50: Math.round(loopDelay.percentile(50) / 1e5) / 10,
      p99: Math.round(loopDelay.percentile(99) / 1e5) / 10,
      max: Math.round(loopDelay.max / 1e5) / 10,
    };
    result.load_average = loadavg().map((x) => Math.round(x * 10) / 10);
    result.presence_after_heal = presence;
    const filled = workload.history.filled().map((f) => ({ user: f.reader, key: `${f.conversation_id}#${f.sequence_number}` }));
    result.pipeline = records ? auditPipeline(records, stored, filled) : null;
    const audit = result.pipeline;
    if (audit?.filled_never_routed.length) {
      const committedAt = new Map(stored.map((m) => [`${m.conversation_id}#${m.sequence_number}`, m.committed_ms]));
      audit.never_routed_runs = neverRoutedRuns(audit.filled_never_routed, committedAt, t0, faults.done).slice(0, 100);
      for (const r of audit.never_routed_runs.slice(0, 20))
        o.log(
          `never routed: ${r.user} ${r.conversation_id} #${r.from_sequence}-${r.to_sequence} at ${r.committed_s.join('-')} s; faults: ${r.faults.join('; ') || 'none'}`,
        );
    }
    if (!audit) result.reasons.push('pipeline audit: the topics could not be read');
    else {
      if (audit.unpublished.length) result.reasons.push(`${audit.unpublished.length} stored messages never on the event topic`);
      if (audit.filled_never_routed.length)
        result.reasons.push(`${audit.filled_never_routed.length} filled deliveries the pipeline never routed (a loss the fill hid)`);
    }
    if (presence?.missing.length)
      result.reasons.push(`running gateways not live in the presence registry after the heal: ${presence.missing.join(', ')}`);
    if (result.reasons.length) result.verdict = 'fail';
    const files = writeResults(result, o.out);
    o.log(
      `verdict ${result.verdict}${result.reasons.length ? `: ${result.reasons.join('; ')}` : ''}; results in ${files.json}, ${files.md}, ${files.svg}`,
    );
    return result;
  } finally {
    workload.closeAll();
    await sql.end({ timeout: 5 });
  }
}

/**
 * After the heal every running gateway must be live in the presence registry, or the delivery
 * workers route its users' deliveries to no node (finding 8 in docs/chaos.md: zero lag everywhere,
 * nothing delivered). Read on the primary the sentinels name, with Redis's clock like the registry;
 * a gateway gets up to 10 s (a few heartbeats) to appear.
 */
async function presenceAfterHeal(stack: ChaosStack): Promise<{ live: string[]; missing: string[] } | null> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const primary = await stack.redis.primary().catch(() => null);
    let seen: { live: string[]; missing: string[] } | null = null;
    if (primary) {
      const r = new Redis({
        host: '127.0.0.1',
        port: primary.port,
        lazyConnect: true,
        commandTimeout: 2000,
        maxRetriesPerRequest: 0,
        retryStrategy: () => null,
      });
      r.on('error', () => {});
      try {
        await r.connect();
        const live = (await r.eval(
          "local t = redis.call('TIME'); local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000); return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')",
          1,
          'rc:nodes',
        )) as string[];
        const running = stack.gateways.filter((g) => g.pid !== null).map((g) => g.name);
        seen = { live, missing: running.filter((n) => !live.includes(n)) };
      } catch {
        seen = null;
      } finally {
        r.disconnect();
      }
    }
    if ((seen && seen.missing.length === 0) || Date.now() > deadline) return seen;
    await sleep(1000);
  }
}

export async function runChaos(o: ChaosOptions, signal?: AbortSignal): Promise<ChaosResult> {
  const stack = await startStack(`${o.out}-logs`, o.log, o.relay);
  try {
    return await runOnStack(stack, o, signal);
  } finally {
    o.log('stopping the stack');
    await stack.stop();
  }
}
