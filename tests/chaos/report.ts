/**
 * What a chaos run concludes: the history check (wrapped, so new checks in tests/harness/history.ts
 * appear here without changes), recovery time per fault kind against its SLA, gap fills outside
 * fault windows, and the three result files (JSON, markdown, SVG timeline).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { StoredMessage } from '../harness/history.js';
import {
  type FaultKind,
  type FaultRecord,
  type InFlightOutcome,
  type InFlightSnapshot,
  RECOVERY_FROM,
  SLA_S,
  type SkippedFault,
  groupOf,
} from './faults.js';
import type { PipelineAudit } from './pipeline-audit.js';
import type { ExitRecord } from './procs.js';
import type { Workload } from './workload.js';

export interface Recovery {
  p50: number | null;
  max: number | null;
  n: number;
  sla_s: number | null;
  /** Faults after which the system did not recover at all (something never delivered or accepted). */
  never: number;
  /** Faults of this kind with no other fault overlapping their measurement window, and their worst recovery. */
  isolated: number;
  max_isolated: number | null;
  /**
   * No fault of the kind never recovered, and every isolated one recovered within the SLA (when
   * none was isolated: every one of them).
   */
  pass: boolean;
}

export interface ChaosResult {
  seed: number;
  /** When the schedule started (every *_s time is relative to it), to match role logs. */
  started_at: string;
  duration_s: number;
  rate: number;
  broken: string;
  faults: FaultRecord[];
  skipped_faults: SkippedFault[];
  fault_kinds: Record<string, number>;
  users: number;
  conversations: number;
  sent: number;
  acked: number;
  unresolved: number;
  /** Error frames the server sent (code/reason), e.g. unavailable while PostgreSQL was paused. */
  refusals: Record<string, number>;
  /** Sends the SDK gave up on before the heal (resent with their key afterwards). */
  send_failures: Record<string, number>;
  delivered: number;
  lost: number;
  duplicated: number;
  reordered: number;
  gaps: number;
  unexpected: number;
  divergent: number;
  sender_order: number;
  /** Any other finding list the history checker reports (by its own name). */
  other_checks: Record<string, number>;
  gap_fills: number;
  gap_fills_outside_faults: number;
  resumed_messages: number;
  /** Deliveries surfaced by the SDK, by how their frame arrived (the checker's count, when it has one). */
  arrivals: Record<string, number> | null;
  wire: Workload['wire'];
  caught_up: boolean;
  behind: string[];
  recovery_s: Record<string, Recovery>;
  unexpected_exits: Array<Omit<ExitRecord, 'tail'> & { at_s: number; tail: string }>;
  examples: Record<string, string[]>;
  verdict: 'pass' | 'fail';
  reasons: string[];
  /** Per role: the realchat_*_total counters at the end of the run (full scrapes in <out>-metrics/). */
  counters?: Record<string, Record<string, number>>;
  /** Event-loop delay of the runner (clients + proxies) during the schedule. */
  runner_loop_delay_ms?: { p50: number; p99: number; max: number };
  /** The machine's 1/5/15-minute load averages at the end (2 cores here: above 2 is contention). */
  load_average?: number[];
  /**
   * After the heal: the nodes the presence registry holds as live, and running gateways missing
   * from them (finding 8: deliveries for their users are routed to no node); null if unreadable.
   */
  presence_after_heal?: { live: string[]; missing: string[] } | null;
  /** Read from Kafka after the heal: did the pipeline carry what the fills delivered (null: unreadable). */
  pipeline?: PipelineAudit | null;
  timeline: Array<{
    t: number;
    sent: number;
    acked: number;
    delivered: number;
    fills: number;
    p50_ms: number | null;
    p99_ms: number | null;
    /** Send issued -> acknowledged (the write path alone), by send second. */
    ack_p50_ms: number | null;
    ack_p99_ms: number | null;
  }>;
}

const pct = (sorted: number[], p: number): number | null =>
  sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]! : null;
const round1 = (x: number) => Math.round(x * 10) / 10;

/** A message slower than this (send -> acknowledged and surfaced to every member) was held up. */
export const LATE_MS = 2_000;
/** The pipeline counts as back once it has kept up for this long without a held-up message. */
export const STABLE_MS = 5_000;

/**
 * The first moment r >= ref from which, for STABLE_MS, every message sent from 10 s before ref up
 * to LATE_MS before the moment has been acknowledged and surfaced to every member (null: some
 * message of the window never was). Checked every 100 ms. A held-up message later than that, once
 * the pipeline has kept up for STABLE_MS, is not charged to the fault: noise on a loaded machine
 * (a GC pause, a rebalance) must not stretch a recovery that had visibly ended.
 */
export function pipelineBackAt(completions: ReadonlyArray<{ sentAt: number; doneAt: number | null }>, ref: number): number | null {
  const window = completions.filter((c) => c.sentAt >= ref - 10_000);
  const lastDone = window.reduce((m, c) => Math.max(m, c.doneAt ?? ref), ref);
  let j = 0;
  let done = Number.NEGATIVE_INFINITY; // latest completion among messages sent up to t - LATE_MS
  let since: number | null = null;
  for (let t = ref; ; t += 100) {
    while (j < window.length && window[j]!.sentAt <= t - LATE_MS) {
      const c = window[j++]!;
      // never acknowledged or never surfaced to everyone: the pipeline is not back from here on
      if (c.doneAt === null) return null;
      done = Math.max(done, c.doneAt);
    }
    if (done <= t) {
      since ??= t;
      if (t - since >= STABLE_MS || (j === window.length && t >= lastDone)) return since;
    } else since = null;
  }
}

export interface AnalyzeInput {
  seed: number;
  durationS: number;
  rate: number;
  broken: string;
  t0: number;
  faults: FaultRecord[];
  /** What was in flight as each fault was injected (FaultRunner.inFlightAt). */
  inFlightAt?: ReadonlyMap<FaultRecord, InFlightSnapshot>;
  skipped: SkippedFault[];
  workload: Workload;
  stored: StoredMessage[];
  behind: string[];
  unexpectedExits: ExitRecord[];
}

/** How the work in flight at a fault's injection came through (InFlightOutcome). */
export function inFlightOutcome(w: Workload, snap: InFlightSnapshot): InFlightOutcome {
  const out: InFlightOutcome = {
    sends: snap.sends.length,
    sends_never_acked: 0,
    messages_owed: snap.owed.length,
    deliveries: { live: 0, fill: 0, resume: 0, unknown: 0, never: 0 },
  };
  const count = (reader: string, conv: string, seq: number) => out.deliveries[w.history.arrival(reader, conv, seq) ?? 'never']++;
  for (const key of snap.sends) {
    const s = w.sends.get(key);
    if (!s || s.seq === null) {
      out.sends_never_acked++;
      continue;
    }
    for (const m of w.membersOf(s.conv)) count(m, s.conv, s.seq);
  }
  for (const o of snap.owed) for (const m of o.readers) count(m, o.conv, o.seq);
  return out;
}

export function analyze(i: AnalyzeInput): ChaosResult {
  const w = i.workload;
  for (const [f, snap] of i.inFlightAt ?? []) f.in_flight = inFlightOutcome(w, snap);
  const sends = [...w.sends.values()];
  const acked = sends.filter((s) => s.ackAt !== null);
  const deliveredAll = (conv: string, seq: number | null): number | null => {
    if (seq === null) return null;
    const got = w.received.get(`${conv}#${seq}`);
    const members = w.membersOf(conv);
    if (!got || got.size < members.length) return null;
    let last = 0;
    for (const t of got.values()) last = Math.max(last, t);
    return last;
  };

  // Per second: sends issued, acks, member deliveries, end-to-end latency (first send -> surfaced).
  let end = i.durationS;
  for (const s of acked) end = Math.max(end, (s.ackAt! - i.t0) / 1000);
  end += 1;
  const buckets = Array.from({ length: Math.ceil(end) }, () => ({
    sent: 0,
    acked: 0,
    delivered: 0,
    fills: 0,
    lat: [] as number[],
    ackLat: [] as number[],
  }));
  const at = (ms: number) => buckets[Math.max(0, Math.min(buckets.length - 1, Math.floor((ms - i.t0) / 1000)))]!;
  let delivered = 0;
  for (const s of sends) {
    at(s.firstAt).sent++;
    if (s.ackAt !== null) {
      at(s.ackAt).acked++;
      at(s.firstAt).ackLat.push(s.ackAt - s.firstAt);
    }
    const got = s.seq === null ? undefined : w.received.get(`${s.conv}#${s.seq}`);
    for (const t of got?.values() ?? []) {
      delivered++;
      at(t).delivered++;
      at(s.firstAt).lat.push(t - s.firstAt);
    }
  }
  for (const f of w.fills) if (f.via !== 'resume') at(f.at).fills += f.count;
  const timeline = buckets.map((b, t) => {
    const sorted = b.lat.sort((a, c) => a - c);
    const acks = b.ackLat.sort((a, c) => a - c);
    return {
      t,
      sent: b.sent,
      acked: b.acked,
      delivered: b.delivered,
      fills: b.fills,
      p50_ms: pct(sorted, 50),
      p99_ms: pct(sorted, 99),
      ack_p50_ms: pct(acks, 50),
      ack_p99_ms: pct(acks, 99),
    };
  });

  // Recovery: from the fault's reference point until the pipeline is back (see pipelineBackAt):
  // sends are accepted again (the first ack of a send issued after it), everything sent in the 10 s
  // before it has reached every member, and what is sent after it is handled within normal latency
  // again. The last part is what shows a fault that stalls new traffic (a broker kill, whose
  // partitions wait for a new leader) but leaves what was already delivered alone.
  const completedAt = (s: (typeof sends)[number]) => {
    const d = s.ackAt === null ? null : deliveredAll(s.conv, s.seq);
    return d === null ? null : Math.max(s.ackAt!, d);
  };
  const completions = sends.map((s) => ({ sentAt: s.firstAt, doneAt: completedAt(s) })).sort((a, b) => a.sentAt - b.sentAt);
  const perKind = new Map<FaultKind, Array<{ rec: number | null; isolated: boolean }>>();
  for (const f of i.faults) {
    const ref = i.t0 + (RECOVERY_FROM[f.kind] === 'start' ? f.start_s : f.end_s) * 1000;
    let accepted: number | null = null;
    let issuedAfter = false;
    for (const s of sends) {
      if (s.firstAt < ref) continue;
      issuedAfter = true;
      if (s.ackAt !== null && (accepted === null || s.ackAt < accepted)) accepted = s.ackAt;
    }
    // Healed after the workload stopped: nothing was sent after it, so only the catch-up counts.
    if (!issuedAfter) accepted = ref;
    let caughtUp = ref;
    let never = accepted === null;
    for (const s of sends) {
      if (s.firstAt > ref || s.firstAt < ref - 10_000 || s.ackAt === null) continue;
      const d = deliveredAll(s.conv, s.seq);
      if (d === null) never = true;
      else caughtUp = Math.max(caughtUp, d);
    }
    const back = pipelineBackAt(completions, ref);
    if (back === null) never = true;
    else caughtUp = Math.max(caughtUp, back);
    const rec = never ? null : round1((Math.max(accepted!, caughtUp, ref) - ref) / 1000);
    (f as FaultRecord & { recovery_s?: number | null }).recovery_s = rec;
    // Overlapping faults are not told apart: a recovery is only held against its SLA when no other
    // fault was active in its measurement window (from 10 s before the reference to the recovery).
    const from = ref - 10_000;
    const to = ref + (rec ?? 1e9) * 1000;
    const isolated = i.faults.every((g) => g === f || i.t0 + g.end_s * 1000 < from || i.t0 + g.start_s * 1000 > to);
    (f as FaultRecord & { isolated?: boolean }).isolated = isolated;
    perKind.set(f.kind, [...(perKind.get(f.kind) ?? []), { rec, isolated }]);
  }
  const recovery_s: Record<string, Recovery> = {};
  for (const [kind, recs] of perKind) {
    const vals = recs
      .map((r) => r.rec)
      .filter((r): r is number => r !== null)
      .sort((a, b) => a - b);
    const iso = recs.filter((r) => r.isolated && r.rec !== null).map((r) => r.rec!);
    const sla = SLA_S[kind] ?? null;
    const never = recs.length - vals.length;
    const maxIso = iso.length ? Math.max(...iso) : null;
    recovery_s[kind] = {
      p50: pct(vals, 50),
      max: vals.length ? vals[vals.length - 1]! : null,
      n: recs.length,
      sla_s: sla,
      never,
      isolated: iso.length,
      max_isolated: maxIso,
      // With no isolated fault of the kind, the overlapped ones count: an SLA is never passed vacuously.
      pass: sla === null || (never === 0 && ((iso.length ? maxIso : vals[vals.length - 1]) ?? 0) <= sla),
    };
  }

  // A fill means the live path skipped a sequence: expected only while something is faulted (or
  // recovering), never in quiet periods. Resume after a reconnect is the normal catch-up.
  const windows = i.faults.map((f) => {
    const rec = (f as FaultRecord & { recovery_s?: number | null }).recovery_s ?? 30;
    return [i.t0 + f.start_s * 1000, i.t0 + (Math.max(f.end_s, f.start_s + rec) + 5) * 1000] as const;
  });
  const report = w.history.check(i.stored, (conv) => w.membersOf(conv), {
    fillWindows: windows,
    conversations: w.conversations.map((c) => c.id),
    allSendersRecorded: true,
  }) as unknown as Record<string, string[]>;
  const list = (name: string) => report[name] ?? [];
  // Received but never stored: the checker reports it itself (`unexpected`); an older one did not.
  const storedIds = new Set(i.stored.map((m) => `${m.conversation_id}#${m.sequence_number}`));
  const unexpected =
    'unexpected' in report
      ? list('unexpected')
      : [...w.received.keys()].filter((id) => !storedIds.has(id)).map((id) => `received ${id}, never stored`);
  const fills = w.fills.filter((e) => e.via !== 'resume');
  const gapFills = fills.reduce((n, e) => n + e.count, 0);
  const outside = fills.filter((e) => !windows.some(([a, b]) => e.at >= a && e.at <= b)).reduce((n, e) => n + e.count, 0);
  const resumed = w.fills.filter((e) => e.via === 'resume').reduce((n, e) => n + e.count, 0);

  const known = new Set(['lost', 'duplicated', 'reordered', 'gapped', 'divergent', 'senderOrder', 'unexpected']);
  const other_checks: Record<string, number> = {};
  for (const [k, v] of Object.entries(report)) if (!known.has(k) && Array.isArray(v)) other_checks[k] = v.length;

  const counts = {
    lost: list('lost').length,
    duplicated: list('duplicated').length,
    reordered: list('reordered').length,
    gaps: list('gapped').length,
    unexpected: unexpected.length,
    divergent: list('divergent').length,
    sender_order: list('senderOrder').length,
  };
  const reasons: string[] = [];
  for (const [k, v] of Object.entries(counts)) if (v > 0) reasons.push(`${k}: ${v}`);
  for (const [k, v] of Object.entries(other_checks)) if (v > 0) reasons.push(`${k}: ${v}`);
  if (outside > 0 && !('fillsOutsideWindows' in report)) reasons.push(`gap fills outside fault windows: ${outside}`);
  // docs/architecture.md: "per connection the server itself never writes a sequence twice"
  if (w.wire.wireDuplicates > 0) reasons.push(`messages written twice on one connection: ${w.wire.wireDuplicates}`);
  if (i.behind.length > 0) reasons.push(`${i.behind.length} member streams never caught up`);
  const unresolved = sends.length - acked.length;
  if (unresolved > 0) reasons.push(`${unresolved} sends never acknowledged, even when resent with their key after the heal`);
  for (const [k, r] of Object.entries(recovery_s)) {
    if (!r.pass)
      reasons.push(
        `recovery after ${k}: ${r.never ? `${r.never} never recovered` : r.isolated ? `max ${r.max_isolated} s over ${r.isolated} isolated fault(s)` : `max ${r.max} s (every one overlapped other faults)`} > SLA ${r.sla_s} s`,
      );
  }

  const fault_kinds: Record<string, number> = {};
  for (const f of i.faults) fault_kinds[f.kind] = (fault_kinds[f.kind] ?? 0) + 1;
  const examples: Record<string, string[]> = {};
  for (const [k, v] of Object.entries(report)) if (Array.isArray(v) && v.length) examples[k] = v.slice(0, 10);
  if (unexpected.length) examples.unexpected = unexpected.slice(0, 10);

  return {
    seed: i.seed,
    started_at: new Date(i.t0).toISOString(),
    duration_s: i.durationS,
    rate: i.rate,
    broken: i.broken,
    faults: i.faults,
    skipped_faults: i.skipped,
    fault_kinds,
    users: w.users.length,
    conversations: w.conversations.length,
    sent: sends.length,
    acked: acked.length,
    unresolved,
    refusals: w.errorFrames,
    send_failures: w.refused,
    delivered,
    ...counts,
    other_checks,
    gap_fills: gapFills,
    gap_fills_outside_faults: outside,
    resumed_messages: resumed,
    arrivals: typeof (w.history as { arrivals?: () => Record<string, number> }).arrivals === 'function' ? w.history.arrivals() : null,
    wire: w.wire,
    caught_up: i.behind.length === 0,
    behind: i.behind.slice(0, 20),
    recovery_s,
    unexpected_exits: i.unexpectedExits.map((e) => ({ ...e, at_s: round1((e.at - i.t0) / 1000), tail: e.tail.slice(-600) })),
    examples,
    verdict: reasons.length === 0 ? 'pass' : 'fail',
    reasons,
    timeline,
  };
}

export function writeResults(r: ChaosResult, base: string): { json: string; md: string; svg: string } {
  mkdirSync(dirname(base), { recursive: true });
  const files = { json: `${base}.json`, md: `${base}.md`, svg: `${base}.svg` };
  writeFileSync(files.json, `${JSON.stringify(r, null, 2)}\n`);
  writeFileSync(files.md, markdown(r));
  writeFileSync(files.svg, svg(r));
  return files;
}

export function markdown(r: ChaosResult): string {
  const lines: string[] = [];
  lines.push(
    `# Chaos run: seed ${r.seed}, ${r.duration_s} s at ${r.rate} msg/s${r.broken !== 'none' ? ` (broken variant: ${r.broken})` : ''}`,
  );
  lines.push('');
  lines.push(`**Verdict: ${r.verdict.toUpperCase()}**${r.reasons.length ? `: ${r.reasons.join('; ')}` : ''}`);
  lines.push('');
  lines.push(
    '| sent | acked | delivered | lost | duplicated | reordered | gaps | unexpected | divergent | sender order | gap fills (outside faults) | resumed |',
  );
  lines.push('|---|---|---|---|---|---|---|---|---|---|---|---|');
  lines.push(
    `| ${r.sent} | ${r.acked} | ${r.delivered} | ${r.lost} | ${r.duplicated} | ${r.reordered} | ${r.gaps} | ${r.unexpected} | ${r.divergent} | ${r.sender_order} | ${r.gap_fills} (${r.gap_fills_outside_faults}) | ${r.resumed_messages} |`,
  );
  lines.push('');
  lines.push(
    `${r.users} users, ${r.conversations} conversations; error frames from the server (retried by the SDK): ${JSON.stringify(r.refusals)}; sends the SDK gave up on (resent after the heal): ${JSON.stringify(r.send_failures)}; duplicate acks: ${r.wire.duplicateAcks}; messages written twice on one connection: ${r.wire.wireDuplicates}`,
  );
  if (r.arrivals)
    lines.push(
      `\nHow deliveries arrived: ${JSON.stringify(r.arrivals)} (live: the event pipeline; fill: a gap fill; resume: the catch-up after hello).`,
    );
  if (r.pipeline !== undefined)
    lines.push(
      r.pipeline
        ? `\nPipeline audit (read from Kafka after the heal): ${r.pipeline.published} entries on the event topic, ${r.pipeline.unpublished.length} stored but never published; ${r.pipeline.filled} deliveries by fill, ${r.pipeline.filled_never_routed.length} of them never routed to that member by the pipeline; ${r.pipeline.dead_lettered} dead-lettered.`
        : '\nPipeline audit: the topics could not be read.',
    );
  lines.push('');
  lines.push(`## Recovery (seconds) by fault kind`);
  lines.push('');
  lines.push('| kind | faults | p50 | max | never | isolated | max isolated | SLA | pass |');
  lines.push('|---|---|---|---|---|---|---|---|---|');
  for (const [k, v] of Object.entries(r.recovery_s).sort()) {
    lines.push(
      `| ${k} | ${v.n} | ${v.p50 ?? '—'} | ${v.max ?? '—'} | ${v.never} | ${v.isolated} | ${v.max_isolated ?? '—'} | ${v.sla_s ?? '—'} | ${v.pass ? 'yes' : '**no**'} |`,
    );
  }
  lines.push('');
  lines.push(`## Faults (${r.faults.length} injected, ${r.skipped_faults.length} skipped)`);
  lines.push('');
  lines.push(
    'In flight at injection: sends not yet acknowledged (of them never acknowledged) / acknowledged messages not yet surfaced by every member; then how the deliveries of all of those arrived.',
  );
  lines.push('');
  lines.push(
    '| kind | target | start s | end s | recovery s | in flight: sends / owed | their deliveries: live / fill / resume / never | note |',
  );
  lines.push('|---|---|---|---|---|---|---|---|');
  for (const f of [...r.faults].sort((a, b) => a.start_s - b.start_s)) {
    const rec = (f as FaultRecord & { recovery_s?: number | null }).recovery_s;
    const fl = f.in_flight;
    const inFlight = fl ? `${fl.sends}${fl.sends_never_acked ? ` (${fl.sends_never_acked} never)` : ''} / ${fl.messages_owed}` : '';
    const how = fl ? `${fl.deliveries.live} / ${fl.deliveries.fill} / ${fl.deliveries.resume} / ${fl.deliveries.never}` : '';
    lines.push(
      `| ${f.kind} | ${f.target} | ${f.start_s} | ${f.end_s} | ${rec === undefined ? '' : (rec ?? 'never')} | ${inFlight} | ${how} | ${f.note ?? ''}${f.caught_up_wait_s ? ` (waited ${f.caught_up_wait_s} s to catch up)` : ''} |`,
    );
  }
  for (const s of r.skipped_faults) lines.push(`| ${s.kind} | (skipped) | ${s.planned_s} | | | | | ${s.reason} |`);
  if (r.unexpected_exits.length) {
    lines.push('');
    lines.push('## Processes that exited on their own');
    lines.push('');
    for (const e of r.unexpected_exits) lines.push(`- ${e.name} at ${e.at_s} s (${e.phase}): code ${e.code}, signal ${e.signal}`);
  }
  if (Object.keys(r.examples).length) {
    lines.push('');
    lines.push('## Examples of findings');
    lines.push('');
    for (const [k, v] of Object.entries(r.examples)) for (const x of v) lines.push(`- ${k}: ${x}`);
  }
  lines.push('');
  return lines.join('\n');
}

const COLORS: Record<string, string> = {
  gateway: '#e4572e',
  relay: '#f3a712',
  delivery: '#a8c686',
  kafka: '#669bbc',
  redis: '#c1121f',
  pg: '#7b2cbf',
  net: '#6c757d',
  clock: '#2a9d8f',
};

export function svg(r: ChaosResult): string {
  const W = 1200;
  const left = 60;
  const right = 20;
  const laneH = 14;
  const groups = Object.keys(COLORS);
  const bandsTop = 30;
  const bandsH = groups.length * laneH;
  const plotH = 160;
  const thrTop = bandsTop + bandsH + 20;
  const latTop = thrTop + plotH + 40;
  const H = latTop + plotH + 50;
  const T = Math.max(1, r.timeline.length);
  const x = (t: number) => left + ((W - left - right) * t) / T;
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="11">`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(
    `<text x="${left}" y="18" font-size="13">seed ${r.seed}: ${r.faults.length} faults, ${r.sent} sent, verdict ${r.verdict} ${r.broken !== 'none' ? `(broken: ${esc(r.broken)})` : ''}</text>`,
  );
  groups.forEach((g, k) => {
    out.push(`<text x="4" y="${bandsTop + k * laneH + 10}" fill="${COLORS[g]}">${g}</text>`);
  });
  for (const f of r.faults) {
    const g = groupOf(f.kind);
    const k = groups.indexOf(g);
    const x0 = x(f.start_s);
    const x1 = Math.max(x0 + 2, x(f.end_s));
    out.push(
      `<rect x="${x0}" y="${bandsTop + k * laneH}" width="${x1 - x0}" height="${laneH - 2}" fill="${COLORS[g]}" opacity="0.8"><title>${esc(`${f.kind} ${f.target} ${f.start_s}-${f.end_s}s`)}</title></rect>`,
    );
    // the band continues faintly over both plots
    out.push(`<rect x="${x0}" y="${thrTop}" width="${x1 - x0}" height="${latTop + plotH - thrTop}" fill="${COLORS[g]}" opacity="0.08"/>`);
  }
  const series = (top: number, label: string, values: Array<number | null>, color: string, maxV: number) => {
    const pts: string[] = [];
    values.forEach((v, t) => {
      if (v === null) return;
      pts.push(`${x(t + 0.5).toFixed(1)},${(top + plotH - (plotH * Math.min(v, maxV)) / maxV).toFixed(1)}`);
    });
    out.push(
      `<polyline fill="none" stroke="${color}" stroke-width="1.5" points="${pts.join(' ')}"><title>${esc(label)}</title></polyline>`,
    );
  };
  const axes = (top: number, title: string, maxV: number, unit: string) => {
    out.push(`<rect x="${left}" y="${top}" width="${W - left - right}" height="${plotH}" fill="none" stroke="#999"/>`);
    out.push(`<text x="${left}" y="${top - 5}">${esc(title)}</text>`);
    out.push(`<text x="${left - 4}" y="${top + 10}" text-anchor="end">${Math.round(maxV)}${unit}</text>`);
    out.push(`<text x="${left - 4}" y="${top + plotH}" text-anchor="end">0</text>`);
  };
  const maxThr = Math.max(1, ...r.timeline.map((b) => Math.max(b.acked, b.delivered)));
  axes(thrTop, 'per second: acks (black), member deliveries (blue), deliveries by gap fill (orange)', maxThr, '');
  series(
    thrTop,
    'acks/s',
    r.timeline.map((b) => b.acked),
    '#111',
    maxThr,
  );
  series(
    thrTop,
    'deliveries/s',
    r.timeline.map((b) => b.delivered),
    '#1d4ed8',
    maxThr,
  );
  series(
    thrTop,
    'gap fills/s',
    r.timeline.map((b) => b.fills),
    '#d97706',
    maxThr,
  );
  const lat99 = r.timeline.map((b) => b.p99_ms);
  const maxLat = Math.max(100, ...lat99.filter((v): v is number => v !== null));
  axes(latTop, 'end-to-end latency by send second (send -> surfaced at a member): p50 (green), p99 (red)', maxLat, ' ms');
  series(
    latTop,
    'p50 ms',
    r.timeline.map((b) => b.p50_ms),
    '#15803d',
    maxLat,
  );
  series(latTop, 'p99 ms', lat99, '#b91c1c', maxLat);
  for (let t = 0; t <= T; t += Math.max(5, Math.round(T / 20 / 5) * 5)) {
    out.push(`<text x="${x(t)}" y="${latTop + plotH + 15}" text-anchor="middle">${t}s</text>`);
  }
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
