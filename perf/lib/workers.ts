// Load generator worker processes and the parent's request/response with them: forked Node workers
// (perf/worker.ts) over IPC, or Go workers (perf/go/loadgen, `--engine go`) over JSON lines on their
// stdin/stdout. The same ParentMsg/WorkerMsg either way; callers do not see which engine runs.
import { execFileSync, fork, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sleep } from './clock.js';
import { repoRoot } from './targets.js';
import type { Engine, ParentMsg, WorkerMsg } from './types.js';

const here = dirname(dirname(fileURLToPath(import.meta.url))); // dist/perf (worker.js), this file is in lib/

/** Which worker program to run, and the Go workers' GOMAXPROCS. */
export interface EngineOptions {
  engine: Engine;
  goProcs: number;
}

/** Where perf/go/build.sh puts the Go worker. */
export const goWorkerBinary = (): string => join(repoRoot(), '.cache', 'bin', 'realchat-loadgen');

/** Newest modification time (ms) of the Go worker's sources, 0 if they are not there. */
function goSourcesMtime(): number {
  const dir = join(repoRoot(), 'perf', 'go', 'loadgen');
  if (!existsSync(dir)) return 0;
  let newest = 0;
  for (const f of readdirSync(dir))
    if (/\.go$|^go\.(mod|sum)$/.test(f) && !f.endsWith('_test.go')) newest = Math.max(newest, statSync(join(dir, f)).mtimeMs);
  return newest;
}

/** The Go worker binary, built first (perf/go/build.sh) when it is missing or older than its sources. */
export function ensureGoWorker(log: (s: string) => void): string {
  const bin = goWorkerBinary();
  const built = existsSync(bin) ? statSync(bin).mtimeMs : 0;
  if (built > 0 && built >= goSourcesMtime()) return bin;
  log(`${built > 0 ? 'rebuilding' : 'building'} the Go worker: bash perf/go/build.sh`);
  // go's output goes to our stderr; stdout is kept clean for results
  execFileSync('bash', [join(repoRoot(), 'perf', 'go', 'build.sh')], { stdio: ['ignore', 2, 2], timeout: 600_000 });
  if (!existsSync(bin)) throw new Error(`perf/go/build.sh did not produce ${bin}`);
  return bin;
}

/** One command to a Go worker: a JSON line. */
export function encodeLine(m: ParentMsg): string {
  return `${JSON.stringify(m)}\n`;
}

/**
 * Splits a Go worker's stdout into lines as chunks arrive (a line may span chunks): each complete
 * JSON line is a WorkerMsg; anything else comes back as a string (logged by the caller).
 */
export class LineDecoder {
  private rest = '';
  push(chunk: string): Array<WorkerMsg | string> {
    const text = this.rest + chunk;
    const lines = text.split('\n');
    this.rest = lines.pop() ?? '';
    const out: Array<WorkerMsg | string> = [];
    for (const line of lines) {
      if (line.trim() === '') continue;
      try {
        const m = JSON.parse(line) as unknown;
        out.push(m !== null && typeof m === 'object' && 'ev' in m ? (m as WorkerMsg) : line);
      } catch {
        out.push(line);
      }
    }
    return out;
  }
}

/** --workers, else one worker process per 12,000 connections; refused above 15,000 per process (20,000 open files each). */
export function workerCount(connections: number, requested: number): number {
  const workers = requested > 0 ? requested : Math.max(1, Math.ceil(connections / 12_000));
  if (Math.ceil(connections / workers) > 15_000)
    throw new Error(`${Math.ceil(connections / workers)} connections per worker: use --workers >= ${Math.ceil(connections / 15_000)}`);
  return workers;
}

/**
 * Loopback source addresses 127.0.0.2, 127.0.0.3, ...: --source-addrs, else one per 10,000 connections
 * (at least 2, and at least `atLeast`) so no (source, destination) pair runs out of ephemeral ports.
 */
export function sourceAddresses(connections: number, requested: number, atLeast = 0): string[] {
  const count = requested > 0 ? requested : Math.max(2, Math.ceil(connections / 10_000), atLeast);
  if (count > 250) throw new Error('--source-addrs must be <= 250');
  return Array.from({ length: count }, (_, i) => `127.0.0.${2 + i}`);
}

export class Workers {
  readonly procs: ChildProcess[] = [];
  readonly engine: Engine;
  private waiters: Array<{ ev: WorkerMsg['ev']; got: Map<number, WorkerMsg>; resolve: (m: WorkerMsg[]) => void }> = [];
  constructor(
    n: number,
    private readonly log: (s: string) => void,
    opts: EngineOptions = { engine: 'node', goProcs: 1 },
  ) {
    this.engine = opts.engine;
    const bin = opts.engine === 'go' ? ensureGoWorker(log) : '';
    for (let i = 0; i < n; i++) {
      const p = opts.engine === 'go' ? this.spawnGo(bin, i, opts.goProcs) : this.forkNode();
      p.on('error', (e) => this.log(`worker ${i}: ${e.message}`));
      p.on('exit', (code) => {
        if (code !== 0 && code !== null) this.log(`worker ${i} exited with ${code}`);
      });
      this.procs.push(p);
    }
  }
  private forkNode(): ChildProcess {
    const p = fork(join(here, 'worker.js'), [], {
      execArgv: ['--max-old-space-size=4096'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    p.on('message', (m: WorkerMsg) => this.onMsg(m));
    return p;
  }
  private spawnGo(bin: string, i: number, goProcs: number): ChildProcess {
    // stdin: commands; stdout: events; stderr: the worker's own log lines, passed through
    const p = spawn(bin, ['--gomaxprocs', String(goProcs)], { stdio: ['pipe', 'pipe', 'inherit'] });
    p.stdin!.on('error', (e) => this.log(`worker ${i}: stdin: ${e.message}`)); // EPIPE once it has exited
    const lines = new LineDecoder();
    p.stdout!.setEncoding('utf8');
    p.stdout!.on('data', (chunk: string) => {
      for (const m of lines.push(chunk)) {
        if (typeof m === 'string') this.log(`worker ${i}: ${m}`);
        else this.onMsg(m);
      }
    });
    return p;
  }
  /** Whether a message can still reach the worker. */
  private reachable(p: ChildProcess): boolean {
    if (this.engine === 'go') return p.exitCode === null && p.signalCode === null && !!p.stdin?.writable;
    return p.connected;
  }
  private post(p: ChildProcess, m: ParentMsg): void {
    if (this.engine === 'go') p.stdin!.write(encodeLine(m));
    else p.send(m);
  }
  private onMsg(m: WorkerMsg): void {
    if (m.ev === 'log') {
      this.log(`worker ${m.workerId}: ${m.msg}`);
      return;
    }
    const id = m.ev === 'report' ? m.report.workerId : m.workerId;
    for (const w of this.waiters) {
      if (w.ev === m.ev && !w.got.has(id)) {
        w.got.set(id, m);
        if (w.got.size === this.procs.length) {
          this.waiters = this.waiters.filter((x) => x !== w);
          w.resolve([...w.got.values()]);
        }
        return;
      }
    }
  }
  /** Send a message to each worker (or per-worker messages) and wait for `ev` from all of them. */
  all(msg: ParentMsg | ((i: number) => ParentMsg), ev: WorkerMsg['ev'], timeoutMs: number): Promise<WorkerMsg[]> {
    return this.gather(msg, ev, timeoutMs, false);
  }
  /** Like all(), but at the timeout resolves with the answers received so far instead of failing. */
  some(msg: ParentMsg | ((i: number) => ParentMsg), ev: WorkerMsg['ev'], timeoutMs: number): Promise<WorkerMsg[]> {
    return this.gather(msg, ev, timeoutMs, true);
  }
  private gather(
    msg: ParentMsg | ((i: number) => ParentMsg),
    ev: WorkerMsg['ev'],
    timeoutMs: number,
    partial: boolean,
  ): Promise<WorkerMsg[]> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        const w = this.waiters.find((x) => x.resolve === done);
        this.waiters = this.waiters.filter((x) => x.resolve !== done);
        if (partial) resolve(w ? [...w.got.values()] : []);
        else reject(new Error(`timeout waiting for '${ev}' from workers`));
      }, timeoutMs);
      const done = (m: WorkerMsg[]): void => {
        clearTimeout(t);
        resolve(m);
      };
      this.waiters.push({ ev, got: new Map(), resolve: done });
      this.procs.forEach((p, i) => {
        this.post(p, typeof msg === 'function' ? msg(i) : msg);
      });
    });
  }
  async close(): Promise<void> {
    for (const p of this.procs) {
      if (this.reachable(p)) {
        try {
          this.post(p, { cmd: 'close' } satisfies ParentMsg);
        } catch {
          /* gone */
        }
      }
    }
    const until = Date.now() + 3000;
    while (this.procs.some((p) => p.exitCode === null && p.signalCode === null) && Date.now() < until) await sleep(100);
    for (const p of this.procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  }
}
