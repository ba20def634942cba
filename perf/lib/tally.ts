// What the workers report, merged in the parent: connection ramps, and deliveries into counts,
// latency, errors and loss (shared by the scenarios in run.ts and the cluster scenario).
import { mergeEncoded, summarize, percentileCurve, type LatencySummary } from './hist.js';
import type { ConnectResult, WorkerReport } from './types.js';

export interface ConnectTally {
  open: number;
  failed: number;
  accept_per_s: number;
}

/** Open and failed connections over all workers; accept rate = open / (last open - first attempt). */
export function mergeConnect(results: readonly ConnectResult[]): ConnectTally {
  const open = results.reduce((a, r) => a + r.open, 0);
  const failed = results.reduce((a, r) => a + r.failed, 0);
  if (results.length === 0) return { open, failed, accept_per_s: 0 };
  const first = Math.min(...results.map((r) => r.first_attempt_ms));
  const last = Math.max(...results.map((r) => r.last_open_ms));
  const span = (last - first) / 1000;
  return { open, failed, accept_per_s: open > 0 && span > 0 ? open / span : 0 };
}

export interface DeliveryTally {
  /** Sums over the workers. */
  sent: number;
  acked: number;
  delivered: number;
  duplicates: number;
  gaps: number;
  /** Client connections still open when the workers reported. */
  open: number;
  errors: Record<string, number>;
  latency_ms: LatencySummary;
  latency_curve: Array<{ pct: number; ms: number }>;
  /** Acked messages times the members of their conversation. */
  expected_deliveries: number;
  lost: number;
}

/**
 * Merge the workers' reports. Loss: for each conversation, every member should have every acked
 * message; lost = Σ over conversations and members of (acked − unique messages that member received).
 * `members`: conversation id → the connection indices in it.
 */
export function tallyReports(reports: readonly WorkerReport[], members: ReadonlyMap<string, readonly number[]>): DeliveryTally {
  const sum = (f: (r: WorkerReport) => number): number => reports.reduce((a, r) => a + f(r), 0);
  const errors: Record<string, number> = {};
  for (const r of reports) for (const [code, n] of Object.entries(r.errors)) errors[code] = (errors[code] ?? 0) + n;
  const ackedPerConv = new Map<string, number>();
  for (const r of reports)
    for (const [conv, n] of Object.entries(r.acked_per_conv)) ackedPerConv.set(conv, (ackedPerConv.get(conv) ?? 0) + n);
  const uniquePerConnConv = new Map<string, number>();
  for (const r of reports) for (const [conn, conv, n] of r.unique_per_conn_conv) uniquePerConnConv.set(`${conn}|${conv}`, n);
  let expected = 0,
    lost = 0;
  for (const [conv, conns] of members) {
    const acked = ackedPerConv.get(conv) ?? 0;
    expected += acked * conns.length;
    for (const conn of conns) lost += Math.max(0, acked - (uniquePerConnConv.get(`${conn}|${conv}`) ?? 0));
  }
  const hist = mergeEncoded(reports.map((r) => r.hist));
  try {
    return {
      sent: sum((r) => r.sent),
      acked: sum((r) => r.acked),
      delivered: sum((r) => r.delivered),
      duplicates: sum((r) => r.duplicates),
      gaps: sum((r) => r.gaps),
      open: sum((r) => r.open),
      errors,
      latency_ms: summarize(hist),
      latency_curve: percentileCurve(hist),
      expected_deliveries: expected,
      lost,
    };
  } finally {
    hist.destroy();
  }
}

export interface StormTally {
  dropped: number;
  reopened: number;
  failed: number;
  /** From the drop to the last connection open again. */
  all_reconnected_s: number;
  resume_p50_s: number;
  resume_max_s: number;
  caught_up_s: number;
  lost: number;
}

/** The storms of every worker report (connections dropped at once, reopened, resumed). */
export function stormTally(reports: readonly WorkerReport[], lost: number): StormTally {
  const st = reports.map((r) => r.storm).filter((s): s is NonNullable<WorkerReport['storm']> => s !== undefined);
  const resumed = st.flatMap((s) => s.resumed_ms).sort((x, y) => x - y);
  const reopen = st.flatMap((s) => s.reopen_ms);
  const q = (a: number[], p: number): number => (a.length === 0 ? 0 : a[Math.min(a.length - 1, Math.floor(p * a.length))]! / 1000);
  return {
    dropped: st.reduce((a, s) => a + s.dropped, 0),
    reopened: st.reduce((a, s) => a + s.reopened, 0),
    failed: st.reduce((a, s) => a + s.failed, 0),
    all_reconnected_s: reopen.reduce((m, x) => Math.max(m, x), 0) / 1000,
    resume_p50_s: q(resumed, 0.5),
    resume_max_s: q(resumed, 1),
    caught_up_s: q(resumed, 1),
    lost,
  };
}
