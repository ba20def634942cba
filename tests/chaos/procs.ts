/**
 * The processes a chaos run owns: RealChat roles (dist/<role>/main.js), PostgreSQL, Redis with
 * Sentinel and a 3-broker Kafka cluster. Unlike tests/harness, nothing here blocks the event loop
 * (no spawnSync): the run's clients keep sending and timing while a process restarts, so a
 * synchronous pg_ctl would show up as a fake outage.
 */
import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import {
  chownSync,
  closeSync,
  copyFileSync,
  createWriteStream,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../harness/postgres.js';
import { redisServerArgs, sentinelConf } from '../harness/redis.js';
import { processAlive, repoRoot } from '../harness/proc.js';

export const ROOT = repoRoot(dirname(fileURLToPath(import.meta.url)));
const PG_BIN = process.env.REALCHAT_PG_BIN ?? '/usr/lib/postgresql/15/bin';

/** Debian's libfaketime (apt-get install faketime); the clock-skew fault is skipped without it. */
export const LIBFAKETIME = [
  '/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1',
  '/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1',
].find((p) => existsSync(p));

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Last-resort cleanup: synchronous, so it also runs from process.on('exit'). */
const emergency = new Set<() => void>();
export function onEmergency(fn: () => void): () => void {
  emergency.add(fn);
  return () => emergency.delete(fn);
}
export function runEmergencyCleanup(): void {
  for (const fn of [...emergency]) {
    try {
      fn();
    } catch {
      /* best effort: the process is going away */
    }
  }
  emergency.clear();
}

export function signal(pid: number | null | undefined, sig: NodeJS.Signals): boolean {
  if (!pid) return false;
  try {
    process.kill(pid, sig);
    return true;
  } catch {
    return false;
  }
}

/** Waits until `cond` holds or `timeoutMs` passes; returns whether it held. */
export async function until(cond: () => boolean | Promise<boolean>, timeoutMs: number, everyMs = 100): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return true;
    if (Date.now() > deadline) return false;
    await sleep(everyMs);
  }
}

function run(cmd: string, args: string[], timeoutMs = 120_000, env: Record<string, string> = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, env: { ...process.env, ...env }, maxBuffer: 8 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')}: ${err.message}\n${String(stderr).slice(-2000)}`));
      else resolve(String(stdout));
    });
  });
}

async function httpStatus(url: string, timeoutMs = 1000): Promise<number> {
  try {
    const r = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    await r.arrayBuffer();
    return r.status;
  } catch {
    return 0;
  }
}

export type Role = 'gateway' | 'relay' | 'delivery';

export interface ExitRecord {
  name: string;
  at: number;
  code: number | null;
  signal: string | null;
  /** starting: it exited before it was ready (e.g. a dependency was down at start), running: after */
  phase: 'starting' | 'running';
  tail: string;
}

/**
 * One RealChat role process. `expectDown` is set by the fault injector before it kills or stops
 * the process; any other exit is a finding (recorded in `unexpectedExits`) and the supervisor
 * restarts the process, as systemd or Kubernetes would.
 */
export class NodeRole {
  child: ChildProcess | null = null;
  expectDown = false;
  paused = false;
  private starting = false;
  private tail = '';
  private stopping = false;
  private readonly unregister: () => void;

  constructor(
    readonly name: string,
    readonly role: Role,
    /** gateway: its client port; relay/delivery: METRICS_PORT (/metrics, /readyz) */
    readonly port: number,
    private readonly env: Record<string, string>,
    private readonly logDir: string,
    private readonly unexpectedExits: ExitRecord[],
    private readonly log: (msg: string) => void,
  ) {
    this.unregister = onEmergency(() => {
      if (this.child?.pid) {
        signal(this.child.pid, 'SIGCONT');
        signal(this.child.pid, 'SIGKILL');
      }
    });
  }

  get pid(): number | null {
    return this.child && this.child.exitCode === null && this.child.signalCode === null ? (this.child.pid ?? null) : null;
  }

  /**
   * Running, not paused, and past its start (ready, or given up waiting for): what a
   * health-checked load balancer routes to. A gateway that is still starting refuses connections;
   * clients sent there backed off on it instead of moving to a running one (an isolated
   * gateway-kill then took 20.5 s: its restart took 12 s on the loaded machine).
   */
  get up(): boolean {
    return this.pid !== null && !this.paused && !this.starting;
  }

  /** Starts the process and resolves once it is ready (false after timeoutMs: it keeps starting). */
  async start(timeoutMs = 90_000, extraEnv: Record<string, string> = {}): Promise<boolean> {
    if (this.pid) return true;
    mkdirSync(this.logDir, { recursive: true });
    const file = createWriteStream(join(this.logDir, `${this.name}.log`), { flags: 'a' });
    const child = spawn(process.execPath, [join(ROOT, 'dist', this.role, 'main.js')], {
      env: { PATH: process.env.PATH ?? '', HOST: '127.0.0.1', LOG_LEVEL: 'info', ...this.env, ...extraEnv },
      stdio: ['ignore', 'pipe', 'pipe'],
      cwd: ROOT,
    });
    this.child = child;
    this.paused = false;
    let started = false;
    const onData = (b: Buffer) => {
      file.write(b);
      this.tail = (this.tail + b.toString()).slice(-8192);
      if (!started && this.tail.includes(`${this.role === 'gateway' ? 'realchat listening' : `${this.role} started`}`)) started = true;
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code, sig) => {
      file.end();
      if (this.child !== child) return;
      if (this.expectDown || this.stopping) return;
      this.unexpectedExits.push({
        name: this.name,
        at: Date.now(),
        code,
        signal: sig,
        phase: this.starting ? 'starting' : 'running',
        tail: this.tail.slice(-2000),
      });
      this.log(`${this.name} exited on its own (code ${code}, signal ${sig}): restarting it`);
      setTimeout(() => {
        if (!this.stopping && !this.expectDown && this.child === child) void this.start().catch(() => {});
      }, 1000);
    });
    const readyUrl = `http://127.0.0.1:${this.port}/readyz`;
    this.starting = true;
    const ready = await until(
      async () => {
        if (this.child !== child || child.exitCode !== null || child.signalCode !== null) return true;
        if (this.role !== 'gateway' && started) return true;
        return (await httpStatus(readyUrl, 1000)) === 200 && (this.role !== 'gateway' || started);
      },
      timeoutMs,
      200,
    );
    if (this.child === child) this.starting = false;
    return ready && this.child === child && this.pid !== null;
  }

  sig(s: NodeJS.Signals): void {
    signal(this.pid, s);
    if (s === 'SIGSTOP') this.paused = true;
    if (s === 'SIGCONT') this.paused = false;
  }

  /** Resolves once the process has exited (SIGKILL after timeoutMs). */
  async waitExit(timeoutMs: number): Promise<void> {
    const c = this.child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise<void>((r) => c.once('exit', () => r()));
    const t = setTimeout(() => {
      signal(c.pid, 'SIGCONT');
      signal(c.pid, 'SIGKILL');
    }, timeoutMs);
    await exited;
    clearTimeout(t);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    const pid = this.pid;
    if (pid) {
      signal(pid, 'SIGCONT');
      signal(pid, 'SIGTERM');
      await this.waitExit(15_000);
    }
    this.unregister();
  }
}

// ---- PostgreSQL ---------------------------------------------------------------------------------

function asPostgres(cmd: string, args: string[]): [string, string[]] {
  return process.getuid?.() === 0 ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args];
}

/** A PostgreSQL 15 server like tests/harness/postgres.ts starts, with async control and its pids. */
export class Postgres {
  readonly dir: string;
  readonly data: string;
  paused: number[] = [];
  private readonly unregister: () => void;

  private constructor(
    readonly port: number,
    /** wal_level=logical, for Debezium (`--relay debezium`). */
    private readonly logical = false,
  ) {
    this.dir = mkdtempSync(join(tmpdir(), 'realchat-chaos-pg-'));
    this.data = join(this.dir, 'data');
    this.unregister = onEmergency(() => {
      for (const pid of this.pids()) {
        signal(pid, 'SIGCONT');
        signal(pid, 'SIGKILL');
      }
      rmSync(this.dir, { recursive: true, force: true });
    });
  }

  get url(): string {
    return `postgres://postgres@127.0.0.1:${this.port}/postgres`;
  }

  static async create(opts: { logical?: boolean } = {}): Promise<Postgres> {
    if (!existsSync(join(PG_BIN, 'initdb'))) throw new Error(`PostgreSQL binaries not found in ${PG_BIN}`);
    const pg = new Postgres(await freePort(), opts.logical);
    if (process.getuid?.() === 0) {
      const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
      const gid = Number(execFileSync('id', ['-g', 'postgres']).toString().trim());
      chownSync(pg.dir, uid, gid);
    }
    const [c, a] = asPostgres(join(PG_BIN, 'initdb'), [
      '-D',
      pg.data,
      '-U',
      'postgres',
      '--auth=trust',
      '-E',
      'UTF8',
      '--no-sync',
      '--no-instructions',
    ]);
    await run(c, a);
    await pg.start();
    return pg;
  }

  async start(): Promise<void> {
    const opts = [
      `-p ${this.port}`,
      `-k ${this.dir}`,
      '-c listen_addresses=127.0.0.1',
      // fsync off survives process crashes (the OS keeps the writes); synchronous_commit stays on.
      '-c fsync=off',
      '-c full_page_writes=off',
      '-c max_connections=400',
      ...(this.logical ? ['-c wal_level=logical', '-c max_replication_slots=4', '-c max_wal_senders=4'] : []),
    ].join(' ');
    const [c, a] = asPostgres(join(PG_BIN, 'pg_ctl'), [
      '-D',
      this.data,
      '-o',
      opts,
      '-l',
      join(this.dir, 'server.log'),
      '-w',
      '-t',
      '60',
      'start',
    ]);
    await run(c, a, 90_000);
  }

  /** Like a crash of the whole server (pg_ctl stop -m immediate). */
  async killImmediate(): Promise<void> {
    this.resume();
    const [c, a] = asPostgres(join(PG_BIN, 'pg_ctl'), ['-D', this.data, '-m', 'immediate', '-w', '-t', '30', 'stop']);
    await run(c, a, 60_000).catch(() => '');
  }

  postmaster(): number | null {
    try {
      const pid = Number(readFileSync(join(this.data, 'postmaster.pid'), 'utf8').split('\n')[0]);
      return processAlive(pid) ? pid : null;
    } catch {
      return null;
    }
  }

  /** The postmaster and every backend/auxiliary process (its children). */
  pids(): number[] {
    const pm = this.postmaster();
    if (!pm) return [];
    return [pm, ...childrenOf(pm)];
  }

  /** SIGSTOP of the postmaster and all its processes: the database hangs without closing anything. */
  pause(): void {
    this.paused = this.pids();
    for (const pid of this.paused) signal(pid, 'SIGSTOP');
  }

  resume(): void {
    for (const pid of this.paused) signal(pid, 'SIGCONT');
    this.paused = [];
  }

  async stop(): Promise<void> {
    this.resume();
    await this.killImmediate();
    rmSync(this.dir, { recursive: true, force: true });
    this.unregister();
  }
}

function childrenOf(ppid: number): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === ppid) out.push(Number(d));
    } catch {
      /* gone */
    }
  }
  return out;
}

// ---- Redis + Sentinel ---------------------------------------------------------------------------

/** A redis-server on a fixed port, so the old primary can come back where the sentinels expect it. */
export class RedisServer {
  child: ChildProcess | null = null;
  paused = false;
  private readonly unregister: () => void;

  constructor(
    readonly name: string,
    readonly port: number,
    private readonly dir: string,
    private readonly args: string[],
  ) {
    this.unregister = onEmergency(() => {
      signal(this.pid, 'SIGCONT');
      signal(this.pid, 'SIGKILL');
    });
  }

  get pid(): number | null {
    return this.child && this.child.exitCode === null && this.child.signalCode === null ? (this.child.pid ?? null) : null;
  }

  /** Its log (redis-server and redis-sentinel log to stdout), appended across restarts. */
  get logFile(): string {
    return join(this.dir, `${this.name}.log`);
  }

  async start(): Promise<void> {
    mkdirSync(this.dir, { recursive: true });
    const out = openSync(this.logFile, 'a');
    try {
      this.child = spawn(this.args[0]!, this.args.slice(1), { stdio: ['ignore', out, out], cwd: this.dir });
    } finally {
      closeSync(out);
    }
    this.paused = false;
    await until(async () => (await ping(this.port)) || !this.pid, 15_000, 50);
  }

  async kill(): Promise<void> {
    const c = this.child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise<void>((r) => c.once('exit', () => r()));
    signal(c.pid, 'SIGCONT');
    signal(c.pid, 'SIGKILL');
    await exited;
  }

  sig(s: NodeJS.Signals): void {
    signal(this.pid, s);
    if (s === 'SIGSTOP') this.paused = true;
    if (s === 'SIGCONT') this.paused = false;
  }

  async stop(): Promise<void> {
    await this.kill();
    this.unregister();
  }
}

function ping(port: number): Promise<boolean> {
  return run('redis-cli', ['-h', '127.0.0.1', '-p', String(port), 'ping'], 2000).then(
    (o) => o.includes('PONG'),
    () => false,
  );
}

export class RedisSentinelSet {
  readonly name = 'realchat';
  private constructor(
    readonly servers: RedisServer[],
    readonly sentinels: RedisServer[],
    private readonly dir: string,
  ) {}

  get sentinelAddrs(): string {
    return this.sentinels.map((s) => `127.0.0.1:${s.port}`).join(',');
  }

  static async create(): Promise<RedisSentinelSet> {
    const dir = mkdtempSync(join(tmpdir(), 'realchat-chaos-redis-'));
    const server = (i: number, port: number, replicaOf?: number) =>
      new RedisServer(`redis-${i}`, port, join(dir, `redis-${i}`), ['/usr/bin/redis-server', ...redisServerArgs(port, { replicaOf })]);
    const p1 = await freePort();
    const p2 = await freePort();
    const primary = server(1, p1);
    await primary.start();
    const replica = server(2, p2, p1);
    await replica.start();
    const sentinels: RedisServer[] = [];
    for (let i = 0; i < 3; i++) {
      const port = await freePort();
      const conf = join(dir, `sentinel-${i}.conf`);
      writeFileSync(conf, sentinelConf(port, p1, { name: 'realchat', dir }));
      const s = new RedisServer(`sentinel-${i}`, port, dir, ['/usr/bin/redis-sentinel', conf]);
      await s.start();
      sentinels.push(s);
    }
    return new RedisSentinelSet([primary, replica], sentinels, dir);
  }

  /** The server the sentinels currently name as primary. */
  async primary(): Promise<RedisServer | null> {
    for (const s of this.sentinels) {
      if (!s.pid) continue;
      const out = await run(
        'redis-cli',
        ['-h', '127.0.0.1', '-p', String(s.port), 'SENTINEL', 'get-master-addr-by-name', this.name],
        2000,
      ).catch(() => '');
      const port = Number(out.split('\n')[1]);
      const hit = this.servers.find((r) => r.port === port);
      if (hit) return hit;
    }
    return null;
  }

  /** Stops every server and sentinel; their logs are kept in `keepLogsIn` (redis-<n>.log, sentinel-<n>.log) when given. */
  async stop(keepLogsIn?: string): Promise<void> {
    for (const s of [...this.sentinels, ...this.servers]) await s.stop();
    if (keepLogsIn)
      for (const s of [...this.servers, ...this.sentinels]) {
        try {
          copyFileSync(s.logFile, join(keepLogsIn, `${s.name}.log`));
        } catch {
          /* never started: no log */
        }
      }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

// ---- Kafka (3 brokers, infra/kafka/kafka.sh) ----------------------------------------------------

const KAFKA_SH = join(ROOT, 'infra', 'kafka', 'kafka.sh');
/** Three JVMs starting on a busy 2-core machine take longer than kafka.sh's 90 s default. */
// C1 only: a restarting broker JIT-compiles with C2 for most of a minute, taking a core from the
// roles under test on this 2-core machine (docs/chaos.md, finding 11).
const KAFKA_ENV = { KAFKA_START_TIMEOUT: '240', KAFKA_JVM_OPTS: '-XX:TieredStopAtLevel=1' };

export class KafkaCluster {
  paused = new Set<number>();
  private readonly unregister: () => void;

  private constructor(
    readonly dir: string,
    readonly base: number,
  ) {
    this.unregister = onEmergency(() => {
      for (let n = 1; n <= 3; n++) {
        const pid = this.pid(n);
        signal(pid, 'SIGCONT');
        signal(pid, 'SIGKILL');
      }
      rmSync(this.dir, { recursive: true, force: true });
    });
  }

  get brokers(): string {
    return [0, 1, 2].map((k) => `127.0.0.1:${this.base + k}`).join(',');
  }

  static async create(): Promise<KafkaCluster> {
    const dir = mkdtempSync(join(tmpdir(), 'realchat-chaos-kafka-'));
    let base = 0;
    for (let i = 0; i < 50 && !base; i++) {
      const p = await freePort();
      const ports = [p, p + 1, p + 2, p + 100, p + 101, p + 102];
      const free = await Promise.all(
        ports.map(
          (q) =>
            new Promise<boolean>((resolve) => {
              const s = createServer();
              s.once('error', () => resolve(false));
              s.listen(q, '127.0.0.1', () => s.close(() => resolve(true)));
            }),
        ),
      );
      if (free.every(Boolean)) base = p;
    }
    if (!base) throw new Error('no free port range for 3 Kafka brokers');
    const k = new KafkaCluster(dir, base);
    try {
      await run('bash', [KAFKA_SH, 'start-cluster', dir, String(base)], 300_000, KAFKA_ENV);
    } catch (err) {
      await k.stop();
      throw err;
    }
    return k;
  }

  /** Three JVMs at once on a loaded machine sometimes lose a node at start: one more try on new ports. */
  static async createWithRetry(log: (m: string) => void): Promise<KafkaCluster> {
    try {
      return await KafkaCluster.create();
    } catch (err) {
      log(
        `kafka cluster did not start, trying once more: ${
          String(err)
            .split('\n')
            .find((l) => l.includes('kafka.sh:')) ?? String(err).slice(0, 300)
        }`,
      );
      return KafkaCluster.create();
    }
  }

  pid(n: number): number | null {
    try {
      const pid = Number(readFileSync(join(this.dir, `node-${n}`, 'pid'), 'utf8').trim());
      return processAlive(pid) ? pid : null;
    } catch {
      return null;
    }
  }

  /** The active KRaft controller, from the quorum-state files (the broker API does not name it). */
  controller(): number | null {
    const votes = new Map<number, number>();
    let best: { id: number; epoch: number } | null = null;
    for (let n = 1; n <= 3; n++) {
      try {
        const text = readFileSync(join(this.dir, `node-${n}`, 'metadata', '__cluster_metadata-0', 'quorum-state'), 'utf8');
        const id = Number(/"leaderId":(-?\d+)/.exec(text)?.[1]);
        const epoch = Number(/"leaderEpoch":(\d+)/.exec(text)?.[1]);
        if (id > 0) {
          votes.set(id, (votes.get(id) ?? 0) + 1);
          if (!best || epoch > best.epoch) best = { id, epoch };
        }
      } catch {
        /* not written yet */
      }
    }
    return best?.id ?? null;
  }

  async kill(n: number): Promise<void> {
    signal(this.pid(n), 'SIGCONT');
    this.paused.delete(n);
    await run('bash', [KAFKA_SH, 'kill-broker', this.dir, String(n)], 60_000);
  }

  async restart(n: number): Promise<void> {
    await run('bash', [KAFKA_SH, 'restart-broker', this.dir, String(n)], 300_000, KAFKA_ENV);
  }

  sig(n: number, s: NodeJS.Signals): void {
    signal(this.pid(n), s);
    if (s === 'SIGSTOP') this.paused.add(n);
    if (s === 'SIGCONT') this.paused.delete(n);
  }

  async createTopic(name: string, partitions: number): Promise<void> {
    await run('bash', [KAFKA_SH, 'create-topic', this.dir, name, String(partitions), '3'], 120_000);
  }

  /** Stops the brokers; their server logs are kept in `keepLogsIn` (kafka-<n>.log) when given. */
  async stop(keepLogsIn?: string): Promise<void> {
    for (const n of this.paused) signal(this.pid(n), 'SIGCONT');
    await run('bash', [KAFKA_SH, 'stop', this.dir], 120_000).catch(() => '');
    if (keepLogsIn) {
      for (let n = 1; n <= 3; n++) {
        try {
          copyFileSync(join(this.dir, `node-${n}`, 'logs', 'server.log'), join(keepLogsIn, `kafka-${n}.log`));
        } catch {
          /* a node that never started has no log */
        }
      }
    }
    rmSync(this.dir, { recursive: true, force: true });
    this.unregister();
  }
}
