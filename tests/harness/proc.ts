import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

/**
 * The repository above `from` (package.json + infra/kafka/kafka.sh): found by walking up, so it
 * holds for a test file and for its compiled copy in .cache/chaos-build/ alike.
 */
export function repoRoot(from: string): string {
  for (let dir = from; dir !== dirname(dir); dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'infra', 'kafka', 'kafka.sh'))) return dir;
  }
  throw new Error(`no repository (package.json + infra/kafka/kafka.sh) above ${from}`);
}

/** Running and not a zombie (this machine's pid 1 may reap orphans late). */
export function processAlive(pid: number | null | undefined): boolean {
  if (!pid) return false;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // "pid (comm) S ...": comm may contain spaces and parentheses.
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}
