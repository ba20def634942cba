// How fast one role works through a backlog (its throughput at saturation, not at a given rate).
// Polls a counter on its /metrics and its CPU in /proc until the counter has stopped moving for
// --idle seconds, then reports the rate between the first and the last increase and the CPU per
// 1,000 counted over that window. Under a steady rate a role's CPU per message is not its cost:
// the fetch → route → produce loop is self-clocking (it runs as many cycles as its round trips
// allow, each smaller when the rate is lower), so capacity is measured by draining a backlog.
//   node dist/perf/drain-probe.js --metrics URL --series 'name{label="v"}' --pid P [--idle 5] [--max 600]
import { readProc } from './lib/proc.js';
import { cliArg } from './lib/cli.js';

interface Sample {
  t: number;
  count: number;
  cpu_s: number;
}

async function counter(url: string, series: string): Promise<number> {
  const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
  // A failed scrape must not read as a count of 0 (the caller keeps the last count instead).
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  const text = await res.text();
  for (const line of text.split('\n')) if (line.startsWith(series + ' ')) return Number(line.slice(series.length + 1));
  return 0; // not reported yet (the role has counted nothing)
}

async function main(): Promise<void> {
  const url = cliArg('metrics');
  const series = cliArg('series');
  const pid = Number(cliArg('pid'));
  const idleMs = Number(cliArg('idle', '5')) * 1000;
  const maxMs = Number(cliArg('max', '600')) * 1000;
  const start = Date.now();
  const samples: Sample[] = [];
  let lastChange = Date.now();
  while (Date.now() - start < maxMs) {
    const proc = readProc(pid);
    if (!proc) throw new Error(`pid ${pid} is gone`);
    const count = await counter(url, series).catch(() => samples.at(-1)?.count ?? 0);
    const prev = samples.at(-1);
    samples.push({ t: Date.now(), count, cpu_s: proc.cpu_s });
    if (!prev || count !== prev.count) lastChange = Date.now();
    else if (count > samples[0]!.count && Date.now() - lastChange > idleMs) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const base = samples[0]!.count;
  const first = samples.findIndex((s) => s.count > base);
  const end = samples.findIndex((s) => s.count === samples.at(-1)!.count);
  if (first < 1 || end <= first) throw new Error('the counter did not move');
  // From the last sample before the first increase to the first sample at the final count.
  const a = samples[first - 1]!;
  const b = samples[end]!;
  const counted = b.count - a.count;
  const seconds = (b.t - a.t) / 1000;
  const cpu = b.cpu_s - a.cpu_s;
  console.log(
    JSON.stringify({
      series,
      counted,
      seconds: Number(seconds.toFixed(2)),
      per_second: Math.round(counted / seconds),
      cpu_s: Number(cpu.toFixed(2)),
      cores: Number((cpu / seconds).toFixed(2)),
      cpu_ms_per_1000: Number(((cpu * 1000 * 1000) / counted).toFixed(1)),
    }),
  );
}

main().catch((err: unknown) => {
  console.error(`drain-probe: ${(err as Error).message}`);
  process.exit(1);
});
