// Samples server processes once a second: CPU seconds and RSS from /proc, and, when the target
// exposes Prometheus metrics, event-loop lag, heap and GC (prom-client default metrics) or Go runtime.
import { readProc } from './proc.js';
import { nowMs, sleep } from './clock.js';

export interface ServerSample {
  t_ms: number;
  cpu_s: number;
  rss_bytes: number;
  metrics?: Record<string, number>;
}

const WANTED = [
  'nodejs_eventloop_lag_seconds',
  'nodejs_eventloop_lag_p99_seconds',
  'nodejs_eventloop_lag_max_seconds',
  'nodejs_heap_size_used_bytes',
  'nodejs_heap_size_total_bytes',
  'nodejs_gc_duration_seconds_sum',
  'nodejs_gc_duration_seconds_count',
  'process_resident_memory_bytes',
  'go_memstats_heap_inuse_bytes',
  'go_goroutines',
  'go_gc_duration_seconds_sum',
  'go_gc_duration_seconds_count',
  'realchat_active_connections',
  'realchat_deliveries_total',
  'realchat_failed_deliveries_total',
  'realchat_ws_errors_total',
  'realchat_messages_accepted_total',
  'realchat_deliveries_forwarded_total',
  'realchat_presence_fallbacks_total',
  'realchat_consumer_lag',
  'realchat_outbox_backlog',
];

/** Parse Prometheus text: sums series of a metric name across labels (for the wanted names). */
export function parseProm(text: string, wanted: readonly string[] = WANTED): Record<string, number> {
  const out: Record<string, number> = {};
  const set = new Set(wanted);
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const sp = line.lastIndexOf(' ');
    if (sp < 0) continue;
    const brace = line.indexOf('{');
    const name = brace >= 0 && brace < sp ? line.slice(0, brace) : line.slice(0, line.indexOf(' '));
    if (!set.has(name)) continue;
    // value is the token after the name/labels; timestamps are rare in these exporters
    const after = brace >= 0 ? line.slice(line.lastIndexOf('}') + 1).trim() : line.slice(name.length).trim();
    const v = Number(after.split(/\s+/)[0]);
    if (Number.isFinite(v)) out[name] = (out[name] ?? 0) + v;
  }
  return out;
}

export class ServerSampler {
  readonly samples: ServerSample[] = [];
  private timer: NodeJS.Timeout | undefined;
  private metricsOk = true;

  constructor(
    readonly pids: number[],
    private readonly metricsUrl?: string,
    private readonly intervalMs = 1000,
  ) {}

  async sampleOnce(): Promise<ServerSample | undefined> {
    if (this.pids.length === 0) return undefined;
    let cpu = 0,
      rss = 0,
      alive = 0;
    for (const pid of this.pids) {
      const s = readProc(pid);
      if (s) {
        cpu += s.cpu_s;
        rss += s.rss_bytes;
        alive++;
      }
    }
    if (alive === 0) return undefined;
    const sample: ServerSample = { t_ms: nowMs(), cpu_s: cpu, rss_bytes: rss };
    if (this.metricsUrl && this.metricsOk) {
      try {
        const res = await fetch(this.metricsUrl, { signal: AbortSignal.timeout(800) });
        if (res.ok) sample.metrics = parseProm(await res.text());
        else this.metricsOk = false;
      } catch {
        /* transient; keep trying */
      }
    }
    this.samples.push(sample);
    return sample;
  }

  start(): void {
    void this.sampleOnce();
    this.timer = setInterval(() => void this.sampleOnce(), this.intervalMs);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Mean RSS over the samples taken in [fromMs, toMs]. */
  meanRss(fromMs: number, toMs: number): number | undefined {
    const s = this.samples.filter((x) => x.t_ms >= fromMs && x.t_ms <= toMs);
    if (s.length === 0) return undefined;
    return s.reduce((a, b) => a + b.rss_bytes, 0) / s.length;
  }

  cpuBetween(fromMs: number, toMs: number): number | undefined {
    const s = this.samples.filter((x) => x.t_ms >= fromMs && x.t_ms <= toMs);
    if (s.length < 2) return undefined;
    return s[s.length - 1]!.cpu_s - s[0]!.cpu_s;
  }
}

/**
 * RSS baseline of each sampled server after setup (users, conversations), right before connecting:
 * a server's start-up transient (e.g. RealChat's embedded PGlite) must not count as connection
 * memory. Waits 2 s, then averages 3 s of samples.
 */
export async function baselineRss(samplers: readonly ServerSampler[]): Promise<number[]> {
  await sleep(2000);
  const from = nowMs();
  await sleep(3000);
  const to = nowMs();
  return samplers.map((s) => s.meanRss(from, to) ?? 0);
}
