/**
 * A TCP proxy of our own between one role and a dependency, for network faults on that link only:
 * added latency (each chunk held `delayMs`, order kept) and a partition (both directions stop being
 * read; TCP backpressure holds the bytes, like packets dropped and retransmitted after the heal; new
 * connections are accepted and wait), and loss as TCP shows it (a chunk stalls for a retransmission
timeout and holds up the rest). Not a full netem: nothing below TCP. Network
 * namespaces would fault every protocol of a role; this faults one link with no root setup.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ROOT } from './procs.js';
import type { ProxyCommand } from './proxy-process.js';

interface Pair {
  client: Socket;
  upstream: Socket | null;
}

/** Chunks held per direction before the proxy stops reading (resumed below QUEUE_LOW). */
const QUEUE_HIGH = 4096;
const QUEUE_LOW = 1024;

export class TcpProxy {
  delayMs = 0;
  /**
   * Share of chunks that stall as if a segment was lost and retransmitted after `rtoMs` (every later
   * chunk waits behind it: TCP's head-of-line blocking). Loss below TCP is only ever seen as this.
   */
  lossRate = 0;
  rtoMs = 300;
  partitioned = false;
  private readonly pairs = new Set<Pair>();
  private readonly waiting: Array<() => void> = [];

  private constructor(
    private readonly server: Server,
    readonly port: number,
    readonly targetPort: number,
  ) {}

  /** `listenPort` 0: any free port (tests); a fixed one for a link the stack names in its config. */
  static start(targetPort: number, listenPort = 0): Promise<TcpProxy> {
    return new Promise((resolve, reject) => {
      const server = createServer();
      server.once('error', reject);
      server.listen(listenPort, '127.0.0.1', () => {
        const addr = server.address();
        if (!addr || typeof addr === 'string') return reject(new Error('proxy has no port'));
        const p = new TcpProxy(server, addr.port, targetPort);
        server.on('connection', (s) => p.accept(s));
        resolve(p);
      });
    });
  }

  private accept(client: Socket): void {
    const pair: Pair = { client, upstream: null };
    this.pairs.add(pair);
    client.on('error', () => {});
    const drop = () => {
      this.pairs.delete(pair);
      client.destroy();
      pair.upstream?.destroy();
    };
    client.on('close', drop);
    const connect = () => {
      if (client.destroyed) return;
      const up = createConnection({ host: '127.0.0.1', port: this.targetPort });
      pair.upstream = up;
      up.on('error', () => {});
      up.on('close', drop);
      this.pipe(client, up);
      this.pipe(up, client);
      if (this.partitioned) {
        client.pause();
        up.pause();
      }
    };
    if (this.partitioned) {
      client.pause();
      this.waiting.push(connect);
    } else connect();
  }

  private pipe(from: Socket, to: Socket): void {
    // Each chunk leaves `delay` after it arrived and never before the chunk ahead of it: a TCP byte
    // stream keeps its order (writing an undelayed chunk past a stalled one once garbled kafkajs'
    // frames), and latency does not cap throughput (chunks in flight overlap, as on a real link).
    // One timer per direction, for the head of the queue; reading pauses past QUEUE_HIGH chunks.
    const queue: Array<{ due: number; chunk: Buffer }> = [];
    let timer: NodeJS.Timeout | null = null;
    let paused = false;
    const flush = () => {
      timer = null;
      const now = performance.now();
      while (queue.length > 0 && queue[0]!.due <= now + 0.5) {
        const { chunk } = queue.shift()!;
        if (!to.destroyed) to.write(chunk);
      }
      if (paused && queue.length < QUEUE_LOW) {
        paused = false;
        if (!this.partitioned) from.resume();
      }
      if (queue.length > 0) timer = setTimeout(flush, queue[0]!.due - now);
    };
    from.on('data', (chunk: Buffer) => {
      const delay = this.delayMs + (this.lossRate > 0 && Math.random() < this.lossRate ? this.rtoMs : 0);
      if (delay <= 0 && queue.length === 0) {
        to.write(chunk);
        return;
      }
      const now = performance.now();
      queue.push({ due: Math.max(now + delay, queue.at(-1)?.due ?? 0), chunk });
      if (queue.length > QUEUE_HIGH && !paused) {
        paused = true;
        from.pause();
      }
      if (!timer) timer = setTimeout(flush, queue[0]!.due - now);
    });
    from.on('close', () => {
      if (timer) clearTimeout(timer);
    });
  }

  partition(): void {
    this.partitioned = true;
    for (const p of this.pairs) {
      p.client.pause();
      p.upstream?.pause();
    }
  }

  heal(): void {
    this.partitioned = false;
    this.delayMs = 0;
    this.lossRate = 0;
    for (const p of this.pairs) {
      p.client.resume();
      p.upstream?.resume();
    }
    for (const c of this.waiting.splice(0)) c();
  }

  close(): Promise<void> {
    for (const p of this.pairs) {
      p.client.destroy();
      p.upstream?.destroy();
    }
    return new Promise((r) => this.server.close(() => r()));
  }
}

/** A TcpProxy running in a child process (proxy-process.ts), so the runner's load cannot slow the link. */
export class ProxyProcess {
  private nextId = 1;
  private readonly waiting = new Map<number, () => void>();

  private constructor(
    private readonly child: ChildProcess,
    /** One per target, in the order given. */
    readonly ports: number[],
  ) {
    child.on('message', (m: { id?: number }) => {
      if (m.id === undefined) return;
      this.waiting.get(m.id)?.();
      this.waiting.delete(m.id);
    });
  }

  /** The link's first (often only) proxy. */
  get port(): number {
    return this.ports[0]!;
  }

  /** One process proxying each of `targetPorts` (faults apply to all of them at once). */
  static start(...targetPorts: number[]): Promise<ProxyProcess> {
    // Compiled by `npm run chaos:build` (npm test and npm run chaos run it first); when this module
    // runs from source (vitest), the compiled child is taken from there.
    const here = fileURLToPath(import.meta.url);
    const script = here.endsWith('.ts')
      ? join(ROOT, '.cache/chaos-build/tests/chaos/proxy-process.js')
      : join(dirname(here), 'proxy-process.js');
    if (!existsSync(script)) return Promise.reject(new Error(`${script} is missing: run \`npm run chaos:build\``));
    const child = fork(script, targetPorts.map(String), { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error('proxy process did not start within 10 s'));
      }, 10_000);
      child.once('error', reject);
      child.once('exit', (code) => reject(new Error(`proxy process exited (${code}) before it listened`)));
      child.once('message', (m: { ports?: number[] }) => {
        clearTimeout(timer);
        if (Array.isArray(m.ports) && m.ports.length === targetPorts.length) resolve(new ProxyProcess(child, m.ports));
        else reject(new Error('proxy process sent no ports'));
      });
    });
  }

  /** Resolves once the proxy applied the command (bounded: a dead child must not hang a fault). */
  private command(c: ProxyCommand): Promise<void> {
    if (!this.child.connected) return Promise.resolve();
    const id = this.nextId++;
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        resolve();
      }, 5000);
      this.waiting.set(id, () => {
        clearTimeout(timer);
        resolve();
      });
      this.child.send({ ...c, id });
    });
  }

  partition(): Promise<void> {
    return this.command({ op: 'partition' });
  }
  heal(): Promise<void> {
    return this.command({ op: 'heal' });
  }
  latency(delayMs: number): Promise<void> {
    return this.command({ op: 'latency', delayMs });
  }
  loss(rate: number, rtoMs: number): Promise<void> {
    return this.command({ op: 'loss', rate, rtoMs });
  }
  async close(): Promise<void> {
    await this.command({ op: 'close' });
    if (this.child.exitCode === null) this.child.kill('SIGKILL');
  }
}
