/**
 * What each process of the running stack (`npm run stack:up`) costs while no client sends: CPU
 * (user + system, the process and its descendants) over a window, as % of a core. The roles'
 * loops (polls, fetches, heartbeats, lease renewals) at 0 msg/s, so a run's CPU per message can be
 * read against it (perf/README.md, "Eleventh round").
 *   node dist/perf/idle-cost.js [WINDOW_SECONDS (60)]
 * Prints a markdown table, one row per process `infra/stack.sh status` lists (gateways included).
 */
import { readProc } from './lib/proc.js';
import { processTree, stackStatus } from './lib/stack.js';
import { sleep } from './lib/clock.js';

const windowS = Number(process.argv[2] ?? 60);
if (!Number.isFinite(windowS) || windowS <= 0) {
  console.error('usage: node dist/perf/idle-cost.js [WINDOW_SECONDS]');
  process.exit(2);
}
const entries = stackStatus();
if (entries.length === 0) {
  console.error('no stack is running (npm run stack:up)');
  process.exit(1);
}
const trees = entries.map((entry) => ({ name: entry.name, pids: processTree(entry.pid) }));
const before = new Map<number, number>();
for (const tree of trees) for (const pid of tree.pids) before.set(pid, readProc(pid)?.cpu_s ?? Number.NaN);
await sleep(windowS * 1000);
// A pid that exited during the window (a PostgreSQL backend, say) is left out: its share is lost.
const used = (pids: number[]): number =>
  pids.reduce((sum, pid) => {
    const delta = (readProc(pid)?.cpu_s ?? Number.NaN) - before.get(pid)!;
    return Number.isNaN(delta) ? sum : sum + delta;
  }, 0);
console.log(`| process | pids | CPU % of a core at 0 msg/s over ${windowS} s |`);
console.log('| --- | --- | --- |');
for (const tree of trees) console.log(`| ${tree.name} | ${tree.pids.length} | ${((100 * used(tree.pids)) / windowS).toFixed(1)} |`);
