// HDR histogram helpers. Values are recorded in microseconds (sub-ms resolution), reported in ms.
import { build, decodeFromCompressedBase64, encodeIntoCompressedBase64 } from 'hdr-histogram-js';
import type { Histogram } from 'hdr-histogram-js';

export type { Histogram };

/** 1 us .. 1 hour, 3 significant digits. */
export function newHist(): Histogram {
  return build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: 3_600_000_000,
    numberOfSignificantValueDigits: 3,
    bitBucketSize: 32,
    useWebAssembly: false,
  });
}

/** Record a latency given in milliseconds (fractional). Negative values (clock skew) clamp to 0. */
export function recordMs(h: Histogram, ms: number): void {
  const us = Math.max(1, Math.round(ms * 1000));
  h.recordValue(Math.min(us, 3_600_000_000));
}

export function encodeHist(h: Histogram): string {
  return encodeIntoCompressedBase64(h);
}

export function decodeHist(s: string): Histogram {
  return decodeFromCompressedBase64(s, 32, false);
}

/** Merge encoded histograms (one per worker) into a new histogram. */
export function mergeEncoded(encoded: readonly string[]): Histogram {
  const out = newHist();
  for (const e of encoded) {
    if (!e) continue;
    const h = decodeHist(e);
    out.add(h);
    h.destroy();
  }
  return out;
}

export interface LatencySummary {
  count: number;
  mean: number;
  p50: number;
  p90: number;
  p95: number;
  p99: number;
  p999: number;
  max: number;
}

const r3 = (x: number): number => Math.round(x * 1000) / 1000;

export function summarize(h: Histogram): LatencySummary {
  const at = (p: number): number => (h.totalCount === 0 ? 0 : r3(h.getValueAtPercentile(p) / 1000));
  return {
    count: h.totalCount,
    mean: h.totalCount === 0 ? 0 : r3(h.mean / 1000),
    p50: at(50),
    p90: at(90),
    p95: at(95),
    p99: at(99),
    p999: at(99.9),
    max: h.totalCount === 0 ? 0 : r3(h.maxValue / 1000),
  };
}

/** Percentile curve points (percentile, ms) for plotting, from 0 to 99.999 plus max. */
export function percentileCurve(h: Histogram): Array<{ pct: number; ms: number }> {
  const pts: Array<{ pct: number; ms: number }> = [];
  if (h.totalCount === 0) return pts;
  const pcts = [
    0, 10, 20, 30, 40, 50, 60, 70, 75, 80, 85, 90, 92.5, 95, 96, 97, 97.5, 98, 98.5, 99, 99.25, 99.5, 99.75, 99.9, 99.95, 99.99, 99.999,
  ];
  for (const p of pcts) pts.push({ pct: p, ms: r3(h.getValueAtPercentile(p) / 1000) });
  pts.push({ pct: 100, ms: r3(h.maxValue / 1000) });
  return pts;
}
