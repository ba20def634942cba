/**
 * The functions that took the most CPU in a V8 .cpuprofile (node --cpu-prof): self time per
 * function, summed over the profile, as a markdown table. Used to commit a readable summary of
 * each role's profile next to the benchmark results (the raw profiles open in Chrome DevTools or
 * speedscope as flame graphs).
 *   node dist/perf/lib/cpuprofile-top.js FILE.cpuprofile [TOP=25]
 */
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

export function topFunctions(
  profile: Profile,
  top: number,
): { totalMs: number; rows: Array<{ name: string; where: string; selfMs: number; pct: number }> } {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<string, { name: string; where: string; us: number }>();
  let totalUs = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    const node = byId.get(profile.samples[i]!);
    const dt = profile.timeDeltas[i] ?? 0;
    if (!node) continue;
    const f = node.callFrame;
    if (f.functionName === '(idle)') continue;
    totalUs += dt;
    const where = f.url ? `${f.url.replace(/^.*\/(node_modules|dist)\//, '$1/')}:${f.lineNumber + 1}` : '';
    const key = `${f.functionName}@${where}`;
    const e = selfUs.get(key) ?? { name: f.functionName || '(anonymous)', where, us: 0 };
    e.us += dt;
    selfUs.set(key, e);
  }
  const rows = [...selfUs.values()]
    .sort((a, b) => b.us - a.us)
    .slice(0, top)
    .map((e) => ({ name: e.name, where: e.where, selfMs: Math.round(e.us / 100) / 10, pct: Math.round((e.us / totalUs) * 1000) / 10 }));
  return { totalMs: Math.round(totalUs / 1000), rows };
}

function main(): void {
  const [file, topArg] = process.argv.slice(2);
  if (!file) {
    console.error('usage: cpuprofile-top FILE.cpuprofile [TOP]');
    process.exit(2);
  }
  const { totalMs, rows } = topFunctions(JSON.parse(readFileSync(file, 'utf8')) as Profile, Number(topArg ?? 25));
  console.log(`${file}: ${totalMs} ms of CPU samples (idle excluded)\n`);
  console.log('| self ms | % | function | where |\n| --- | --- | --- | --- |');
  for (const r of rows) console.log(`| ${r.selfMs} | ${r.pct} | ${r.name.replace(/\|/g, '\\|')} | ${r.where} |`);
}

if (process.argv[1]?.endsWith('cpuprofile-top.js')) main();
