// Histograms scraped from Prometheus text (prom-client): a snapshot at the start and at the end of
// a window, their difference, and quantiles of it. Used for GC pauses and the pipeline's per-stage
// latency of every stack process, over exactly the measured window.

/** metric name -> label key (without `le`) -> [upper bound, cumulative count][] */
export type HistSnapshot = Map<string, Map<string, Array<[number, number]>>>;

export function parseHistograms(text: string, names: readonly string[]): HistSnapshot {
  const wanted = new Set(names.map((n) => `${n}_bucket`));
  const out: HistSnapshot = new Map();
  for (const line of text.split('\n')) {
    const brace = line.indexOf('{');
    if (brace < 0 || !wanted.has(line.slice(0, brace))) continue;
    const close = line.lastIndexOf('}');
    const labels = line.slice(brace + 1, close);
    const le = /(?:^|,)le="([^"]*)"/.exec(labels)?.[1];
    if (le === undefined) continue;
    const key = labels
      .split(',')
      .filter((l) => !l.startsWith('le=') && !l.startsWith('node_id='))
      .join(',');
    const name = line.slice(0, brace - '_bucket'.length);
    const byKey = out.get(name) ?? new Map<string, Array<[number, number]>>();
    out.set(name, byKey);
    const buckets = byKey.get(key) ?? [];
    byKey.set(key, buckets);
    buckets.push([le === '+Inf' ? Number.POSITIVE_INFINITY : Number(le), Number(line.slice(close + 1).trim())]);
  }
  for (const byKey of out.values()) for (const b of byKey.values()) b.sort((x, y) => x[0] - y[0]);
  return out;
}

/** Quantiles of the observations between two snapshots of one series (upper bucket bound, in the metric's unit). */
export function windowQuantiles(
  before: HistSnapshot | undefined,
  after: HistSnapshot | undefined,
  name: string,
  key: string,
  qs: readonly number[],
): { count: number; q: number[] } {
  const a = after?.get(name)?.get(key) ?? [];
  const b = new Map(before?.get(name)?.get(key) ?? []);
  const diff = a.map(([le, c]) => [le, c - (b.get(le) ?? 0)] as const);
  const total = diff.length ? diff[diff.length - 1]![1] : 0;
  const q = qs.map((p) => {
    if (total <= 0) return Number.NaN;
    const hit = diff.find(([, c]) => c >= p * total);
    return hit ? hit[0] : Number.NaN;
  });
  return { count: total, q };
}

export async function scrape(url: string, names: readonly string[]): Promise<HistSnapshot | undefined> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(3000) });
    return res.ok ? parseHistograms(await res.text(), names) : undefined;
  } catch {
    return undefined;
  }
}
