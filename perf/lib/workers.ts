// Forked load generator worker processes and the parent's request/response over IPC.
import { fork, type ChildProcess } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sleep } from './clock.js';
import type { ParentMsg, WorkerMsg } from './types.js';

const here = dirname(dirname(fileURLToPath(import.meta.url))); // dist/perf (worker.js), this file is in lib/

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
  private waiters: Array<{ ev: WorkerMsg['ev']; got: Map<number, WorkerMsg>; resolve: (m: WorkerMsg[]) => void }> = [];
  constructor(
    n: number,
    private readonly log: (s: string) => void,
  ) {
    for (let i = 0; i < n; i++) {
      const p = fork(join(here, 'worker.js'), [], {
        execArgv: ['--max-old-space-size=4096'],
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      });
      p.on('message', (m: WorkerMsg) => this.onMsg(m));
      p.on('error', (e) => this.log(`worker ${i}: ${e.message}`));
      p.on('exit', (code) => {
        if (code !== 0 && code !== null) this.log(`worker ${i} exited with ${code}`);
      });
      this.procs.push(p);
    }
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
        p.send(typeof msg === 'function' ? msg(i) : msg);
      });
    });
  }
  async close(): Promise<void> {
    for (const p of this.procs) {
      if (p.connected) {
        try {
          p.send({ cmd: 'close' } satisfies ParentMsg);
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
