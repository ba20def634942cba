/**
 * The fault schedule: drawn from the seed before the run (kinds, planned start, how long the fault
 * holds), then executed against the live stack with a bound per role (never every gateway at once,
 * at most one Kafka broker, one relay, one delivery worker, one Redis and one PostgreSQL fault at a
 * time; other roles overlap freely). What actually ran, with wall-clock times, is the fault log.
 */
import type { Rng } from './rng.js';
import { LIBFAKETIME, sleep } from './procs.js';
import type { ChaosStack } from './stack.js';

export const FAULT_KINDS = [
  'gateway-kill',
  'gateway-stop',
  'gateway-term',
  'relay-kill',
  'relay-stop',
  'relay-term',
  'connect-kill',
  'connect-stop',
  'connect-term',
  'delivery-kill',
  'delivery-stop',
  'delivery-term',
  'broker-kill',
  'controller-kill',
  'broker-stop',
  'redis-kill',
  'redis-stop',
  'pg-stop',
  'pg-restart',
  'net-partition',
  'net-latency',
  'net-loss',
  'clock-skew',
] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

/** Seconds the fault holds (down, paused, partitioned) before it is healed. */
const HOLD: Record<FaultKind, [number, number]> = {
  'gateway-kill': [1, 5],
  'gateway-stop': [2, 6],
  'gateway-term': [1, 3],
  'relay-kill': [1, 4],
  'relay-stop': [3, 8],
  'relay-term': [1, 3],
  'connect-kill': [1, 4],
  'connect-stop': [3, 8],
  'connect-term': [1, 3],
  'delivery-kill': [1, 4],
  'delivery-stop': [2, 6],
  'delivery-term': [1, 3],
  'broker-kill': [3, 10],
  'controller-kill': [3, 10],
  'broker-stop': [2, 6],
  'redis-kill': [3, 8],
  'redis-stop': [2, 6],
  'pg-stop': [2, 6],
  'pg-restart': [1, 4],
  'net-partition': [2, 6],
  'net-latency': [4, 10],
  'net-loss': [4, 10],
  'clock-skew': [6, 12],
};

/**
 * Where recovery is measured from: `start` when the rest of the system must route around the fault
 * while it lasts (a killed node, a paused relay leader, a lost broker, a lost Redis primary);
 * `end` when nothing can replace the faulted part (PostgreSQL) or it is back before anything need
 * react (a short pause, a drain).
 */
export const RECOVERY_FROM: Record<FaultKind, 'start' | 'end'> = {
  'gateway-kill': 'start',
  'gateway-stop': 'end',
  'gateway-term': 'end',
  'relay-kill': 'start',
  'relay-stop': 'start',
  'relay-term': 'end',
  // One Connect worker: nothing publishes the outbox until it is back.
  'connect-kill': 'end',
  'connect-stop': 'end',
  'connect-term': 'end',
  'delivery-kill': 'start',
  'delivery-stop': 'end',
  'delivery-term': 'end',
  'broker-kill': 'start',
  'controller-kill': 'start',
  'broker-stop': 'end',
  'redis-kill': 'start',
  'redis-stop': 'start',
  'pg-stop': 'end',
  'pg-restart': 'end',
  'net-partition': 'end',
  'net-latency': 'end',
  'net-loss': 'end',
  'clock-skew': 'end',
};

/** Recovery targets in seconds (docs/chaos.md); kinds without one are measured and reported only. */
export const SLA_S: Partial<Record<FaultKind, number>> = {
  'gateway-kill': 10,
  // A standby takes over once the paused leader's lease has expired on the database's clock
  // (REALCHAT_RELAY_LEASE_TTL_MS, 5 s) and its next renewal attempt sees that (every 1 s), then
  // publishes the backlog: about 7 s with the defaults, so 5 s cannot hold by construction.
  'relay-stop': 8,
  'broker-kill': 15,
  'controller-kill': 15,
  'redis-kill': 15,
  'redis-stop': 15,
  'pg-restart': 20,
  // One Connect worker (--relay debezium): nothing publishes until it is back. Measured from the
  // fault's end: a worker's JVM restart took 3-12 s on this machine, then the connector's task
  // restarts and publishes the backlog; a SIGCONT resumes at once.
  'connect-kill': 20,
  'connect-term': 20,
  'connect-stop': 10,
};

const GROUP: Record<FaultKind, string> = {
  'gateway-kill': 'gateway',
  'gateway-stop': 'gateway',
  'gateway-term': 'gateway',
  'relay-kill': 'relay',
  'relay-stop': 'relay',
  'relay-term': 'relay',
  'connect-kill': 'connect',
  'connect-stop': 'connect',
  'connect-term': 'connect',
  'delivery-kill': 'delivery',
  'delivery-stop': 'delivery',
  'delivery-term': 'delivery',
  'broker-kill': 'kafka',
  'controller-kill': 'kafka',
  'broker-stop': 'kafka',
  'redis-kill': 'redis',
  'redis-stop': 'redis',
  'pg-stop': 'pg',
  'pg-restart': 'pg',
  'net-partition': 'net',
  'net-latency': 'net',
  'net-loss': 'net',
  'clock-skew': 'clock',
};

export function groupOf(kind: FaultKind): string {
  return GROUP[kind];
}

/** Whether the stack has what `kind` faults: relays for relay-*, a Connect worker for connect-*. */
export function applicable(kind: FaultKind, stack: { relays: readonly unknown[]; connect: unknown }): boolean {
  if (GROUP[kind] === 'relay') return stack.relays.length > 0;
  if (GROUP[kind] === 'connect') return stack.connect !== null;
  return true;
}

export interface PlannedFault {
  kind: FaultKind;
  at_s: number;
  hold_s: number;
  /** 0..1, picks the target among the candidates at run time */
  pick: number;
  /** net-latency: added milliseconds each way */
  delay_ms: number;
  /** clock-skew: seconds the role's wall clock is off (either way) */
  skew_s: number;
  /**
   * Isolated phase: starts `quiet_s` after every earlier fault has ended (`at_s` is then only the
   * earliest start), so nothing else is active in its measurement window.
   */
  quiet_s?: number;
}

export interface FaultRecord {
  kind: FaultKind;
  target: string;
  planned_s: number;
  start_s: number;
  end_s: number;
  hold_s: number;
  /** What happened, e.g. a target that did not come back in time. */
  note?: string;
  /** Isolated phase: seconds it waited, after its quiet gap, for the workload to catch up. */
  caught_up_wait_s?: number;
  /** What the fault hit (analyze() fills it from the snapshot taken at injection). */
  in_flight?: InFlightOutcome;
}

/**
 * The sends in flight at injection (acked later / never) and how their deliveries, and those of the
 * messages then owed to members, arrived: a fault that bit shows in-flight work, and a delivery
 * filled from the database rather than live shows where the pipeline dropped it.
 */
export interface InFlightOutcome {
  sends: number;
  sends_never_acked: number;
  messages_owed: number;
  deliveries: Record<'live' | 'fill' | 'resume' | 'unknown' | 'never', number>;
}

/** At a fault's injection: sends not yet acked (keys), and acked messages not yet surfaced by these readers. */
export interface InFlightSnapshot {
  sends: string[];
  owed: Array<{ conv: string; seq: number; readers: string[] }>;
}

/** What the runner asks of the workload. */
export interface WorkloadProbe {
  /** Null when nothing older than a few seconds is still owed (Workload.backlog). */
  backlog(): string | null;
  /** Taken as each fault is injected, so the report can say what the fault hit (Workload.inFlight). */
  inFlight(): InFlightSnapshot;
  /** The isolated phase's longest wait for a caught-up workload before a fault. */
  maxWaitS: number;
}

export interface SkippedFault {
  kind: FaultKind;
  planned_s: number;
  reason: string;
}

export function parseKinds(spec: string | undefined): FaultKind[] {
  if (!spec || spec === 'all') return [...FAULT_KINDS];
  const out: FaultKind[] = [];
  for (const raw of spec.split(',')) {
    const k = raw.trim();
    if (!k) continue;
    // A role name selects all of that role's kinds, e.g. --faults gateway,pg-stop.
    const byGroup = FAULT_KINDS.filter((f) => GROUP[f] === k);
    if (byGroup.length) out.push(...byGroup);
    else if ((FAULT_KINDS as readonly string[]).includes(k)) out.push(k as FaultKind);
    else
      throw new Error(
        `unknown fault kind "${k}" (kinds: ${FAULT_KINDS.join(', ')}; or a role: ${[...new Set(Object.values(GROUP))].join(', ')})`,
      );
  }
  return [...new Set(out)];
}

/**
 * One fault about every `meanGapS` seconds between 3 s and `durationS - 3` s. Kinds come from a
 * shuffled deck (every kind once before any repeats), so a short run still covers many kinds.
 */
export function planSchedule(rng: Rng, durationS: number, kinds: FaultKind[], meanGapS: number): PlannedFault[] {
  const out: PlannedFault[] = [];
  if (kinds.length === 0) return out;
  let deck: FaultKind[] = [];
  let t = 3;
  while (t < durationS - 3) {
    if (deck.length === 0) {
      deck = [...kinds];
      for (let i = deck.length - 1; i > 0; i--) {
        const j = Math.floor(rng.next() * (i + 1));
        [deck[i], deck[j]] = [deck[j]!, deck[i]!];
      }
    }
    const kind = deck.pop()!;
    const [lo, hi] = HOLD[kind];
    out.push({
      kind,
      at_s: Math.round(t * 10) / 10,
      hold_s: Math.round(rng.between(lo, hi) * 10) / 10,
      pick: rng.next(),
      delay_ms: rng.int(100, 400),
      skew_s: rng.pick([-1, 1]) * rng.int(3, 10),
    });
    t += rng.between(0.3, 1.7) * meanGapS;
  }
  return out;
}

/**
 * The isolated phase, after the overlapping schedule: one fault of each kind with a recovery SLA,
 * each alone: it starts `gapS` after every earlier fault has ended (a killed process is restarted
 * and ready, a paused one resumed), so the one before it has recovered and its backlog is gone.
 * Overlapping faults cannot be held to a one-fault SLA (a gateway kill during a PostgreSQL restart
 * recovers when PostgreSQL does); these can. Holds are the shorter half of each kind's range.
 */
export function planIsolated(rng: Rng, startS: number, kinds: FaultKind[], gapS: number): PlannedFault[] {
  const withSla = kinds.filter((k) => SLA_S[k] !== undefined);
  return withSla.map((kind) => {
    const [lo, hi] = HOLD[kind];
    return {
      kind,
      at_s: startS,
      quiet_s: gapS,
      hold_s: Math.round(rng.between(lo, (lo + hi) / 2) * 10) / 10,
      pick: rng.next(),
      delay_ms: rng.int(100, 400),
      skew_s: rng.pick([-1, 1]) * rng.int(3, 10),
    };
  });
}

const CAPACITY: Record<string, (stack: ChaosStack) => number> = {
  gateway: (s) => s.gateways.length - 1,
  relay: () => 1,
  connect: () => 1,
  delivery: () => 1,
  kafka: () => 1,
  redis: () => 1,
  pg: () => 1,
  net: () => 1,
  clock: () => 1,
};

/** Runs the schedule; resolves once every fault it started has been healed. */
export class FaultRunner {
  readonly done: FaultRecord[] = [];
  readonly skipped: SkippedFault[] = [];
  private readonly active = new Map<string, number>();
  private readonly busyTargets = new Set<string>();
  private readonly running = new Set<Promise<void>>();
  private readonly caughtUpWait = new Map<PlannedFault, { waited: number; owed: string | null }>();
  private readonly snapshots = new Map<PlannedFault, InFlightSnapshot>();
  /** What was in flight as each recorded fault was injected (analyze() reports how it arrived). */
  readonly inFlightAt = new Map<FaultRecord, InFlightSnapshot>();
  private aborted = false;

  constructor(
    private readonly stack: ChaosStack,
    private readonly t0: number,
    private readonly log: (msg: string) => void,
    private readonly probe?: WorkloadProbe,
  ) {}

  /**
   * Waits until the workload owes nothing old (or `maxWaitS` passed, which the record shows): an
   * isolated fault that begins on the last one's backlog measures that backlog's drain, not its own
   * recovery (a gateway kill once took 38.9 s that way).
   */
  private async waitCaughtUp(): Promise<{ waited: number; owed: string | null } | undefined> {
    if (!this.probe) return undefined;
    const t = Date.now();
    const deadline = t + this.probe.maxWaitS * 1000;
    let owed = this.probe.backlog();
    while (owed !== null && Date.now() < deadline && !this.aborted) {
      await sleep(250);
      owed = this.probe.backlog();
    }
    const waited = Math.round((Date.now() - t) / 100) / 10;
    if (owed !== null) this.log(`not caught up after ${waited}s (${owed}): the next fault starts anyway`);
    else if (waited > 0) this.log(`caught up after ${waited}s`);
    return { waited, owed };
  }

  private now_s(): number {
    return Math.round((Date.now() - this.t0) / 100) / 10;
  }

  abort(): void {
    this.aborted = true;
  }

  async run(plan: PlannedFault[]): Promise<void> {
    for (const f of plan) {
      const wait = this.t0 + f.at_s * 1000 - Date.now();
      if (wait > 0) await sleep(wait);
      if (f.quiet_s !== undefined) {
        while (this.running.size > 0) await Promise.allSettled([...this.running]);
        if (!this.aborted) await sleep(f.quiet_s * 1000);
        const w = await this.waitCaughtUp();
        if (w) this.caughtUpWait.set(f, w);
      }
      if (this.aborted) break;
      const g = GROUP[f.kind];
      // A role at its bound gets up to 5 s for a fault to heal before this one is skipped.
      const deadline = Date.now() + 5000;
      while ((this.active.get(g) ?? 0) >= CAPACITY[g]!(this.stack) && Date.now() < deadline && !this.aborted) await sleep(100);
      if ((this.active.get(g) ?? 0) >= CAPACITY[g]!(this.stack)) {
        this.skipped.push({ kind: f.kind, planned_s: f.at_s, reason: `${g} already at its bound of concurrent faults` });
        this.log(`skip ${f.kind} planned at ${f.at_s}s: ${g} at its bound`);
        continue;
      }
      this.active.set(g, (this.active.get(g) ?? 0) + 1);
      const p = this.inject(f)
        .catch((err: unknown) => {
          this.skipped.push({ kind: f.kind, planned_s: f.at_s, reason: `injection failed: ${String(err).slice(0, 300)}` });
          this.log(`fault ${f.kind} failed: ${String(err).slice(0, 300)}`);
        })
        .finally(() => {
          this.active.set(g, (this.active.get(g) ?? 1) - 1);
          this.running.delete(p);
        });
      this.running.add(p);
    }
    while (this.running.size > 0) await Promise.allSettled([...this.running]);
  }

  private record(f: PlannedFault, target: string, start: number, note?: string): void {
    const r: FaultRecord = { kind: f.kind, target, planned_s: f.at_s, start_s: start, end_s: this.now_s(), hold_s: f.hold_s };
    const w = this.caughtUpWait.get(f);
    if (w) r.caught_up_wait_s = w.waited;
    // An isolated fault that began on a backlog: its recovery includes that backlog's drain.
    const notes = [note, w?.owed ? `began without the workload caught up (${w.owed})` : undefined].filter(Boolean);
    if (notes.length) r.note = notes.join('; ');
    const snap = this.snapshots.get(f);
    if (snap) this.inFlightAt.set(r, snap);
    this.done.push(r);
    this.log(`healed ${f.kind} ${target} (${r.start_s}s -> ${r.end_s}s)${note ? `: ${note}` : ''}`);
  }

  /** Picks among candidates not already under a fault. */
  private choose<T extends { name: string }>(items: T[], pick: number): T | null {
    const free = items.filter((i) => !this.busyTargets.has(i.name));
    return free.length ? free[Math.floor(pick * free.length)]! : null;
  }

  private async inject(f: PlannedFault): Promise<void> {
    const s = this.stack;
    const hold = f.hold_s * 1000;
    const kind = f.kind;
    const started = (target: string) => {
      const snap = this.probe?.inFlight();
      if (snap) this.snapshots.set(f, snap);
      this.log(
        `inject ${kind} ${target} hold ${f.hold_s}s${snap ? ` (in flight: ${snap.sends.length} sends, ${snap.owed.length} messages owed)` : ''}`,
      );
      return this.now_s();
    };
    const claim = (name: string) => this.busyTargets.add(name);
    const release = (name: string) => this.busyTargets.delete(name);

    if (kind.startsWith('gateway-') || kind.startsWith('relay-') || kind.startsWith('delivery-')) {
      const role = kind.split('-')[0] as 'gateway' | 'relay' | 'delivery';
      const pool = role === 'gateway' ? s.gateways : role === 'relay' ? s.relays : s.deliveries;
      // The relay faults aim at the leader: that is the one whose loss stalls the outbox.
      const leader = role === 'relay' ? await s.relayLeader() : null;
      const target = leader && !this.busyTargets.has(leader.name) ? leader : this.choose(pool, f.pick);
      if (!target) throw new Error(`no free ${role} to fault`);
      claim(target.name);
      try {
        const label = target.name + (leader === target ? ' (leader)' : '');
        const action = kind.split('-')[1];
        if (action === 'stop') {
          target.sig('SIGSTOP');
          const t = started(label);
          await sleep(hold);
          target.sig('SIGCONT');
          this.record(f, label, t);
          return;
        }
        target.expectDown = true;
        target.sig(action === 'kill' ? 'SIGKILL' : 'SIGTERM');
        const t = started(label);
        await target.waitExit(action === 'kill' ? 10_000 : 20_000);
        await sleep(hold);
        target.expectDown = false;
        const ready = await target.start(60_000);
        this.record(f, label, t, ready ? undefined : 'not ready 60 s after the restart');
        return;
      } finally {
        release(target.name);
      }
    }

    if (kind === 'connect-kill' || kind === 'connect-stop' || kind === 'connect-term') {
      const c = s.connect;
      if (!c) throw new Error('no Connect worker in this stack (--relay ts)');
      if (kind === 'connect-stop') {
        c.sig('SIGSTOP');
        const t = started(c.name);
        await sleep(hold);
        c.sig('SIGCONT');
        this.record(f, c.name, t);
        return;
      }
      const t = started(c.name);
      await (kind === 'connect-kill' ? c.kill() : c.term());
      await sleep(hold);
      const note = await c.restart().then(
        () => undefined,
        (err: unknown) => `restart: ${String(err).slice(0, 200)}`,
      );
      this.record(f, c.name, t, note);
      return;
    }

    if (kind === 'broker-kill' || kind === 'controller-kill' || kind === 'broker-stop') {
      const controller = kind === 'controller-kill' ? s.kafka.controller() : null;
      const n = controller ?? 1 + Math.floor(f.pick * 3);
      const label = `kafka-${n}${controller ? ' (controller)' : ''}`;
      if (kind === 'broker-stop') {
        s.kafka.sig(n, 'SIGSTOP');
        const t = started(label);
        await sleep(hold);
        s.kafka.sig(n, 'SIGCONT');
        this.record(f, label, t);
        return;
      }
      const t = started(label);
      await s.kafka.kill(n);
      await sleep(hold);
      await s.kafka.restart(n);
      this.record(f, label, t);
      return;
    }

    if (kind === 'redis-kill' || kind === 'redis-stop') {
      const primary = await s.redis.primary();
      if (!primary) throw new Error('the sentinels name no primary');
      const label = `${primary.name} (primary)`;
      if (kind === 'redis-stop') {
        primary.sig('SIGSTOP');
        const t = started(label);
        await sleep(hold);
        primary.sig('SIGCONT');
        this.record(f, label, t);
        return;
      }
      const t = started(label);
      await primary.kill();
      await sleep(hold);
      // It comes back as a primary with an empty dataset; the sentinels must turn it into a replica.
      await primary.start();
      this.record(f, label, t);
      return;
    }

    if (kind === 'pg-stop') {
      s.pg.pause();
      const t = started('postgres');
      await sleep(hold);
      s.pg.resume();
      this.record(f, 'postgres', t);
      return;
    }
    if (kind === 'pg-restart') {
      const t = started('postgres');
      await s.pg.killImmediate();
      await sleep(hold);
      await s.pg.start();
      this.record(f, 'postgres', t);
      return;
    }

    if (kind === 'clock-skew') {
      if (!LIBFAKETIME) throw new Error('libfaketime is not installed (apt-get install faketime)');
      // A gateway or a delivery worker: both compare presence heartbeats with their own clock.
      // Not a gateway while another is faulted: that restart would take the last one away too.
      const target = this.choose([...s.deliveries, ...(this.active.get('gateway') ? [] : s.gateways)], f.pick);
      if (!target) throw new Error('no free gateway or delivery worker to skew');
      claim(target.name);
      try {
        const label = `${target.name} ${f.skew_s > 0 ? '+' : ''}${f.skew_s}s`;
        const restart = async (env: Record<string, string>) => {
          target.expectDown = true;
          target.sig('SIGTERM');
          await target.waitExit(20_000);
          target.expectDown = false;
          return target.start(60_000, env);
        };
        const skewed = await restart({
          LD_PRELOAD: LIBFAKETIME,
          FAKETIME: `${f.skew_s > 0 ? '+' : ''}${f.skew_s}s`,
          // Timers and timeouts run on the monotonic clock: only the wall clock is off, like a bad NTP.
          FAKETIME_DONT_FAKE_MONOTONIC: '1',
        });
        const t = started(label);
        await sleep(hold);
        const ok = await restart({});
        this.record(f, label, t, skewed && ok ? undefined : `not ready after a restart (skewed: ${skewed}, normal: ${ok})`);
      } finally {
        release(target.name);
      }
      return;
    }

    if (kind === 'net-partition' || kind === 'net-latency' || kind === 'net-loss') {
      const link = this.choose(s.links, f.pick);
      if (!link) throw new Error('no free network link');
      claim(link.name);
      try {
        let label = link.name;
        if (kind === 'net-partition') await link.proxy.partition();
        else if (kind === 'net-latency') {
          await link.proxy.latency(f.delay_ms);
          label += ` +${f.delay_ms}ms`;
        } else {
          // 5-20 % of chunks stall for a 200-600 ms retransmission timeout
          const rate = 0.05 + 0.15 * f.pick;
          await link.proxy.loss(rate, f.delay_ms + 100);
          label += ` ${Math.round(rate * 100)}% loss`;
        }
        const t = started(label);
        await sleep(hold);
        await link.proxy.heal();
        this.record(f, label, t);
      } finally {
        release(link.name);
      }
    }
  }
}
