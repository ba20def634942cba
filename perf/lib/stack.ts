// The running stack (infra/stack.sh) as the benchmarks see it: its processes and their trees.
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from './targets.js';

export interface StackEntry {
  name: string;
  role?: string;
  pid: number;
  port?: number | null;
}

export const stackDir = (): string => process.env['STACK_DIR'] || join(repoRoot(), '.cache', 'stack');

/** What `infra/stack.sh status --json` lists with a pid; empty when no stack runs. */
export function stackStatus(): StackEntry[] {
  try {
    const out = execFileSync('bash', [join(repoRoot(), 'infra', 'stack.sh'), 'status', '--json'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
      timeout: 30_000,
    });
    const line = out.trim().split('\n').pop() ?? '[]';
    const entries = JSON.parse(line) as StackEntry[];
    return Array.isArray(entries) ? entries.filter((entry) => typeof entry.pid === 'number') : [];
  } catch {
    return [];
  }
}

/** pid and all its descendants (PostgreSQL backends, Kafka's JVM under its wrapper). */
export function processTree(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const parent = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const siblings = children.get(parent) ?? [];
      siblings.push(Number(entry));
      children.set(parent, siblings);
    } catch {
      /* gone */
    }
  }
  const tree: number[] = [];
  const todo = [root];
  while (todo.length > 0) {
    const pid = todo.pop()!;
    tree.push(pid);
    todo.push(...(children.get(pid) ?? []));
  }
  return tree;
}
