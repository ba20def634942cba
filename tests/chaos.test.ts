/**
 * The chaos runner (docs/chaos.md) on the whole distributed stack as real processes: deliberately
 * broken clients must fail its checks, or a green run would prove nothing. The bounded run with
 * overlapping faults of every kind is `npm run test:chaos`, run alone on the machine (its recovery
 * targets are one-fault targets, and a vitest file would share the 2 cores with other files):
 * `npm test` runs it after vitest. REALCHAT_CHAOS_SEED replays a schedule.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { applicable, FAULT_KINDS, type FaultRecord, planIsolated, planSchedule, SLA_S } from './chaos/faults.js';
import { ROOT } from './chaos/procs.js';
import { auditPipeline, neverRoutedRuns } from './chaos/pipeline-audit.js';
import { analyze, inFlightOutcome } from './chaos/report.js';
import { Rng } from './chaos/rng.js';
import { Workload } from './chaos/workload.js';
import { type ChaosOptions, defaultOut, runOnStack, startStack } from './chaos/runner.js';
import type { ChaosStack } from './chaos/stack.js';

const seed = Number(process.env.REALCHAT_CHAOS_SEED ?? 20261130);
// The bounded run's size (docs/chaos.md: 90 s of overlapping faults at 100 msg/s, then the
// isolated phase; this machine's chaos stack carries about 150-170 msg/s with nothing failing).
// The broken variants below set their own.
const durationS = Number(process.env.REALCHAT_CHAOS_DURATION_S ?? 90);
const rate = Number(process.env.REALCHAT_CHAOS_RATE ?? 100);
const log = (m: string) => {
  if (process.env.REALCHAT_CHAOS_VERBOSE) console.log(`chaos: ${m}`);
};

describe('chaos: overlapping faults of every kind under open-loop load', () => {
  let stack: ChaosStack;
  const base: Omit<ChaosOptions, 'seed' | 'out' | 'broken'> = {
    durationS,
    rate,
    faults: [...FAULT_KINDS],
    faultGapS: 4.5,
    isolatedGapS: 16,
    users: 36,
    healTimeoutS: 120,
    log,
  };

  beforeAll(async () => {
    stack = await startStack(join(ROOT, 'tests', 'artifacts', `chaos-${seed}-logs`), log);
  }, 400_000);
  afterAll(async () => {
    await stack?.stop();
  }, 180_000);

  it('fails a client that loses live messages and neither resumes nor fills gaps', async () => {
    const r = await runOnStack(stack, {
      ...base,
      durationS: 20,
      rate: 50,
      faults: [],
      healTimeoutS: 20,
      seed: seed + 1,
      out: defaultOut(seed + 1, 'no-fill'),
      broken: 'no-fill',
    });
    expect(r.verdict).toBe('fail');
    expect(r.lost).toBeGreaterThan(0);
  }, 300_000);

  it('sees pipeline loss that gap fill repairs: fills outside fault windows fail the run', async () => {
    const r = await runOnStack(stack, {
      ...base,
      durationS: 20,
      rate: 50,
      faults: [],
      healTimeoutS: 30,
      seed: seed + 2,
      out: defaultOut(seed + 2, 'drop-live'),
      broken: 'drop-live',
    });
    expect(r.wire.droppedByBrokenVariant).toBeGreaterThan(0);
    expect(r.gap_fills_outside_faults).toBeGreaterThan(0);
    expect(r.verdict).toBe('fail');
  }, 300_000);
});

/** The conclusions on synthetic histories: no processes, so these run in seconds. */
describe('chaos: what a run concludes', () => {
  const t0 = 1_000_000;
  const conv = 'c0000000-0000-4000-8000-000000000001';
  const [u1, u2] = ['a0000000-0000-4000-8000-000000000001', 'b0000000-0000-4000-8000-000000000002'];

  /** `n` messages from u1, one per 100 ms from t0 + 1 s, each surfaced to both members 20 ms after its ack. */
  function scenario(n: number, tweak: { skipReceipt?: number; fillAt?: number; lateSeq?: number; stall?: [number, number] } = {}) {
    const w = new Workload([], [{ id: conv, members: [u1, u2] }], {
      rng: new Rng(1),
      gatewayUrls: () => [],
      broken: 'none',
      log: () => {},
      clock: () => 0,
    });
    const stored = [];
    // the message surfaced at about `fillAt` reaches u2 by a gap fill
    const fillSeq = tweak.fillAt === undefined ? -1 : Math.round((tweak.fillAt * 1000 - 1030) / 100);
    for (let k = 1; k <= n; k++) {
      const key = `c${k}`;
      const firstAt = t0 + 1000 + k * 100;
      const env = { conversation_id: conv, sequence_number: k, message_id: `m${k}`, sender_id: u1, idempotency_key: key, payload: { k } };
      stored.push(env);
      w.history.send(u1, conv, key);
      w.history.ack(u1, key, env);
      w.sends.set(key, { key, sender: u1, conv, firstAt, ackAt: firstAt + 10, seq: k, messageId: `m${k}`, error: null });
      let at = firstAt + 30 + (tweak.lateSeq === k ? 20_000 : 0);
      // sent while the pipeline was stalled: everything surfaces when the stall ends
      const stall = tweak.stall;
      if (stall && firstAt >= t0 + stall[0] * 1000 && firstAt < t0 + stall[1] * 1000) at = t0 + stall[1] * 1000 + 30;
      for (const u of [u1, u2]) {
        if (tweak.skipReceipt === k && u === u2) continue;
        const byFill = k === fillSeq && u === u2;
        w.history.receive(u, env as never, { via: byFill ? 'fill' : 'live', atMs: at });
        if (byFill) w.fills.push({ at, user: u2, count: 1, via: 'fill' });
        const id = `${conv}#${k}`;
        const m = w.received.get(id) ?? new Map<string, number>();
        m.set(u, at);
        w.received.set(id, m);
      }
    }
    return { w, stored };
  }
  const input = (s: ReturnType<typeof scenario>, faults: FaultRecord[] = []) => ({
    seed: 1,
    durationS: 10,
    rate: 10,
    broken: 'none',
    t0,
    faults,
    skipped: [],
    workload: s.w,
    stored: s.stored,
    behind: [],
    unexpectedExits: [],
  });
  const run = (s: ReturnType<typeof scenario>, faults: FaultRecord[] = []) => analyze(input(s, faults));
  const gwKill = (start: number, end: number): FaultRecord => ({
    kind: 'gateway-kill',
    target: 'gateway-1',
    planned_s: start,
    start_s: start,
    end_s: end,
    hold_s: 1,
  });

  it('a clean history passes', () => {
    const r = run(scenario(50), [gwKill(2, 3)]);
    expect(r.reasons).toEqual([]);
    expect(r.verdict).toBe('pass');
    expect(r.recovery_s['gateway-kill']!.max).toBeLessThan(1);
  });

  it('a message a member never got fails the run as lost', () => {
    const r = run(scenario(50, { skipReceipt: 20 }));
    expect(r.verdict).toBe('fail');
    expect(r.lost).toBe(1);
  });

  it('a gap fill in a quiet period fails the run; during a fault it does not', () => {
    expect(run(scenario(50, { fillAt: 4 })).gap_fills_outside_faults).toBe(1);
    expect(run(scenario(50, { fillAt: 4 })).verdict).toBe('fail');
    expect(run(scenario(50, { fillAt: 4 }), [gwKill(3.5, 4.5)]).gap_fills_outside_faults).toBe(0);
  });

  it('a recovery beyond its SLA fails the run', () => {
    // message 20 (sent at 3 s) reaches its members 20 s late; the kill at 3.05 s must wait for it
    const r = run(scenario(50, { lateSeq: 20 }), [gwKill(3.05, 4)]);
    expect(r.recovery_s['gateway-kill']!.max_isolated).toBeGreaterThan(10);
    expect(r.recovery_s['gateway-kill']!.pass).toBe(false);
    expect(r.verdict).toBe('fail');
  });

  const brokerKill = (start: number, end: number): FaultRecord => ({ ...gwKill(start, end), kind: 'broker-kill', target: 'kafka-2' });

  it('a fault that stalls what is sent after it recovers when the stall ends, not when the last earlier message arrived', () => {
    // everything before the kill was delivered at once; what was sent from 2 s to 6 s waits until 6 s
    const r = run(scenario(120, { stall: [2, 6] }), [brokerKill(2, 3)]);
    const rec = r.recovery_s['broker-kill']!.max!;
    expect(rec).toBeGreaterThanOrEqual(3.9);
    expect(rec).toBeLessThanOrEqual(4.2);
    // the same history without the stall: back at once
    expect(run(scenario(120), [brokerKill(2, 3)]).recovery_s['broker-kill']!.max!).toBeLessThan(0.5);
  });

  it('a held-up message after the pipeline has kept up for 5 s is not charged to the fault', () => {
    // message 100 is sent at 11 s and held up 20 s; the kill at 2 s stalled nothing
    const r = run(scenario(120, { lateSeq: 100 }), [brokerKill(2, 3)]);
    expect(r.recovery_s['broker-kill']!.max!).toBeLessThan(0.5);
    // held up within the 5 s after the kill, it is
    const r2 = run(scenario(120, { lateSeq: 40 }), [brokerKill(2, 3)]);
    expect(r2.recovery_s['broker-kill']!.max!).toBeGreaterThan(20);
  });

  it('records what a fault hit: the work in flight at injection, and how each of its deliveries arrived', () => {
    // message 30 reaches u2 by a gap fill, message 40 never reaches u2
    const s = scenario(50, { fillAt: 4, skipReceipt: 40 });
    const pending = (key: string, error: string | null) =>
      s.w.sends.set(key, { key, sender: u1, conv, firstAt: t0 + 9000, ackAt: null, seq: null, messageId: null, error });
    pending('c51', null);
    pending('c52', 'unavailable'); // given up by the SDK: no longer in flight
    const now = s.w.inFlight();
    expect(now.sends).toEqual(['c51']);
    expect(now.owed).toEqual([{ conv, seq: 40, readers: [u2] }]);
    // as if taken at a fault 2.8 s in: messages 29 and 30 unacked, 28 not yet surfaced by u2
    const out = inFlightOutcome(s.w, { sends: ['c29', 'c30', 'c51'], owed: [{ conv, seq: 28, readers: [u2] }, ...now.owed] });
    expect(out).toEqual({
      sends: 3,
      sends_never_acked: 1,
      messages_owed: 2,
      deliveries: { live: 4, fill: 1, resume: 0, unknown: 0, never: 1 },
    });
    const f = gwKill(2.8, 3.5);
    const r = analyze({ ...input(s, [f]), inFlightAt: new Map([[f, { sends: ['c30'], owed: [] }]]) });
    expect(r.faults[0]!.in_flight?.deliveries).toMatchObject({ live: 1, fill: 1 });
  });

  it('the pipeline audit finds a stored message never published, and a fill that covered a message never routed', () => {
    const c = conv;
    const stored = [1, 2, 3].map((sequence_number) => ({ conversation_id: c, sequence_number }));
    const records = {
      published: new Set([`${c}#1`, `${c}#3`]),
      routed: new Map<string, Set<string> | 'all'>([
        [`${c}#1`, new Set([u1])],
        [`${c}#3`, 'all'],
      ]),
      deadLettered: 0,
    };
    const a = auditPipeline(records, stored, [
      { user: u2, key: `${c}#1` }, // routed to u1 only: the fill hid a loss for u2
      { user: u2, key: `${c}#3` }, // routed to every member: the fill covered a late copy
    ]);
    expect(a.unpublished).toEqual([`${c}#2`]);
    expect(a.filled_never_routed).toEqual([`${u2}|${c}#1`]);
    records.published.add(`${c}#2`);
    records.routed.set(`${c}#1`, new Set([u1, u2]));
    const clean = auditPipeline(records, stored, [{ user: u2, key: `${c}#1` }]);
    expect([clean.unpublished, clean.filled_never_routed]).toEqual([[], []]);
  });

  it('never-routed fills are grouped into runs of sequences, each with the faults around its commits', () => {
    const t0 = 1_000_000;
    const at = new Map([
      ['c#4', t0 + 10_000],
      ['c#5', t0 + 10_500],
      ['c#6', t0 + 11_000],
      ['c#9', t0 + 40_000],
    ]);
    const faults = [
      { kind: 'net-partition', target: 'gateway-3<->redis', start_s: 5, end_s: 9 },
      { kind: 'broker-kill', target: 'kafka-2', start_s: 30, end_s: 33 },
      { kind: 'redis-kill', target: 'redis-1', start_s: 60, end_s: 64 },
    ];
    const runs = neverRoutedRuns(['u|c#6', 'u|c#4', 'u|c#5', 'u|c#9'], at, t0, faults);
    expect(runs).toEqual([
      {
        user: 'u',
        conversation_id: 'c',
        from_sequence: 4,
        to_sequence: 6,
        committed_s: [10, 11],
        faults: ['net-partition gateway-3<->redis 5-9'],
      },
      { user: 'u', conversation_id: 'c', from_sequence: 9, to_sequence: 9, committed_s: [40, 40], faults: [] },
    ]);
  });

  it('a stack gets the relay faults or the Connect faults, whichever publishes its outbox', () => {
    const ts = { relays: [{}, {}], connect: null };
    const dbz = { relays: [], connect: {} };
    const groups = (stack: typeof ts | typeof dbz) =>
      FAULT_KINDS.filter((k) => applicable(k, stack)).filter((k) => /^(relay|connect)-/.test(k));
    expect(groups(ts)).toEqual(['relay-kill', 'relay-stop', 'relay-term']);
    expect(groups(dbz)).toEqual(['connect-kill', 'connect-stop', 'connect-term']);
    expect(FAULT_KINDS.filter((k) => applicable(k, ts)).length).toBe(FAULT_KINDS.length - 3);
  });

  it('the schedule is a function of the seed, and covers every kind before repeating one', () => {
    const a = planSchedule(new Rng(7), 120, [...FAULT_KINDS], 4.5);
    expect(planSchedule(new Rng(7), 120, [...FAULT_KINDS], 4.5)).toEqual(a);
    expect(a.length).toBeGreaterThanOrEqual(20);
    expect(new Set(a.slice(0, FAULT_KINDS.length).map((f) => f.kind)).size).toBe(Math.min(a.length, FAULT_KINDS.length));
  });

  it('the isolated phase holds one fault of each kind with an SLA, each waiting for quiet', () => {
    const iso = planIsolated(new Rng(7), 90, [...FAULT_KINDS], 16);
    expect(iso.map((f) => f.kind).sort()).toEqual(Object.keys(SLA_S).sort());
    for (const f of iso) {
      expect(f.quiet_s).toBe(16);
      expect(f.at_s).toBe(90);
    }
    expect(planIsolated(new Rng(7), 90, ['gateway-stop', 'net-loss'], 16)).toEqual([]);
  });
});
