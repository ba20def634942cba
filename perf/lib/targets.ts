// Starting/stopping the servers under test (peers are started by us; RealChat is used if already
// listening, else started with `npm start`). Everything binds to 127.0.0.1.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, mkdirSync, rmSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFileSync } from 'node:child_process';
import { pidsListeningOn } from './proc.js';
import { sleep } from './clock.js';
import type { Target } from './types.js';

export const DEFAULT_SECRET = 'realchat-perf-secret-not-for-production';

/** The repository root: first ancestor of this module with a package.json. */
export function repoRoot(): string {
  let d = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(d, 'package.json'))) return d;
    d = dirname(d);
  }
  return process.cwd();
}

/** The directory holding the compiled perf entry (dist/perf or perf). */
export const perfDistDir = (): string => dirname(dirname(fileURLToPath(import.meta.url)));

export const LACKS: Record<Target, string> = {
  realchat: '',
  ws: 'no persistence, no authentication, no idempotency/dedup, no resume or history (messages sent while a client is away are lost), no heartbeats or slow-consumer policy; membership is an explicit in-memory join',
  socketio:
    'no persistence, no authentication, no idempotency/dedup; resume only via Socket.IO connection state recovery (in memory, 2 min window, lost on restart); membership is an in-memory room join',
  centrifugo:
    'no persistence (memory engine: history lost on restart), no idempotency keys on client publish, recovery only within history_size=1000 / history_ttl=600s; JWT auth (HS256) but no membership check (any subscriber may publish to chat:*); sequence is a per-channel offset',
};

export interface RunningTarget {
  target: Target;
  url: string; // the client URL (ws:// or http:// for socket.io)
  httpBase?: string; // REST base for realchat
  metricsUrl?: string;
  pids: number[];
  version: string;
  startedByUs: boolean;
  stop(): Promise<void>;
}

export const DEFAULT_PORTS: Record<Target, number> = { realchat: 8080, ws: 8091, socketio: 8092, centrifugo: 8093 };

export function assertLoopback(u: string): void {
  const host = new URL(u).hostname.replace(/^\[|\]$/g, '');
  if (!(host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host))) {
    throw new Error(`refusing non-loopback target ${u}: load is only generated against 127.0.0.0/8`);
  }
}

async function waitPort(port: number, timeoutMs: number, child?: ChildProcess): Promise<number[]> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (child && child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}`);
    const p = pidsListeningOn(port);
    if (p.length > 0) return p;
    await sleep(200);
  }
  throw new Error(`nothing listening on ${port} after ${timeoutMs} ms`);
}

function stopper(child: ChildProcess): () => Promise<void> {
  return async () => {
    if (child.exitCode !== null || child.pid === undefined) return;
    try {
      process.kill(-child.pid, 'SIGTERM');
    } catch {
      try {
        child.kill('SIGTERM');
      } catch {
        /* ignore */
      }
    }
    const until = Date.now() + 5000;
    while (child.exitCode === null && child.signalCode === null && Date.now() < until) await sleep(100);
    if (child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        /* ignore */
      }
    }
  };
}

/** `realchat <package version> (<commit>)`; `ifNoCommit` is appended instead when git cannot tell. */
export function realchatVersion(ifNoCommit = ''): string {
  const root = repoRoot();
  let version = 'realchat';
  try {
    version += ` ${(JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version}`;
  } catch {
    /* ignore */
  }
  try {
    version += ` (${execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()})`;
  } catch {
    version += ifNoCommit;
  }
  return version;
}

/** The built file `npm start` runs (package.json `"start": "node <file>"`), when it has been built. */
function builtStartEntry(root: string): string | undefined {
  try {
    const start =
      (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { scripts?: Record<string, string> }).scripts?.['start'] ?? '';
    const file = /^node\s+(\S+)$/.exec(start.trim())?.[1];
    return file && existsSync(join(root, file)) ? join(root, file) : undefined;
  } catch {
    return undefined;
  }
}

function pkgVersion(name: string): string {
  try {
    return (JSON.parse(readFileSync(join(repoRoot(), 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return '?';
  }
}

export async function startTarget(
  target: Target,
  opts: { url?: string; port?: number; log: (s: string) => void; startRealchat: boolean },
): Promise<RunningTarget> {
  const root = repoRoot();
  const port = opts.port ?? DEFAULT_PORTS[target];
  const spawnOpts = { cwd: root, detached: true, stdio: ['ignore', 'pipe', 'pipe'] as Array<'ignore' | 'pipe'> };
  const tail = (child: ChildProcess, name: string): void => {
    child.stderr?.on('data', (d: Buffer) => {
      const s = d.toString().trim();
      if (s) opts.log(`[${name}] ${s.slice(0, 400)}`);
    });
    child.stdout?.on('data', () => {
      /* drain */
    });
  };
  if (target === 'ws' || target === 'socketio') {
    const file = join(perfDistDir(), 'peers', target === 'ws' ? 'ws-server.js' : 'socketio-server.js');
    const child = spawn(process.execPath, [file, '--port', String(port), '--host', '127.0.0.1'], spawnOpts);
    tail(child, target);
    const pids = await waitPort(port, 15_000, child);
    return {
      target,
      pids,
      startedByUs: true,
      stop: stopper(child),
      url: target === 'ws' ? `ws://127.0.0.1:${port}/ws` : `http://127.0.0.1:${port}`,
      version: target === 'ws' ? `ws ${pkgVersion('ws')}` : `socket.io ${pkgVersion('socket.io')}`,
    };
  }
  if (target === 'centrifugo') {
    const script = join(root, 'perf', 'peers', 'centrifugo.sh');
    const child = spawn('bash', [script, 'run', String(port)], {
      ...spawnOpts,
      env: { ...process.env, CENTRIFUGO_SECRET: DEFAULT_SECRET },
    });
    tail(child, 'centrifugo');
    const pids = await waitPort(port, 600_000, child); // first run builds it
    let version = 'v6';
    try {
      version = execFileSync('bash', [script, 'version'], { encoding: 'utf8' }).trim();
    } catch {
      /* ignore */
    }
    return {
      target,
      pids,
      startedByUs: true,
      stop: stopper(child),
      version: `centrifugo ${version}`,
      url: `ws://127.0.0.1:${port}/connection/websocket`,
      metricsUrl: `http://127.0.0.1:${port}/metrics`,
    };
  }
  // realchat
  const base = (opts.url ?? `http://127.0.0.1:${port}`)
    .replace(/^ws/, 'http')
    .replace(/\/v1\/ws$/, '')
    .replace(/\/$/, '');
  assertLoopback(base);
  const rport = Number(new URL(base).port || 80);
  const version = realchatVersion(' (uncommitted)');
  const common = { target, url: `${base.replace(/^http/, 'ws')}/v1/ws`, httpBase: base, metricsUrl: `${base}/metrics`, version };
  const up = async (): Promise<boolean> => {
    try {
      return (await fetch(`${base}/healthz`, { signal: AbortSignal.timeout(1000) })).ok;
    } catch {
      return false;
    }
  };
  if (await up()) {
    const pids = pidsListeningOn(rport);
    return {
      ...common,
      pids,
      startedByUs: false,
      stop: async () => {
        /* not ours */
      },
    };
  }
  if (!opts.startRealchat)
    throw new Error(
      `RealChat is not answering at ${base}/healthz (start it with npm start, or drop --no-start-server to let perf start it)`,
    );
  const dataDir = join(root, 'perf', 'results', 'tmp', `realchat-data-${Date.now()}`);
  // The load generator is one client address minting thousands of users: lift the abuse caps
  // (they protect a node from strangers, not from its own benchmark).
  const BENCH_LIMITS = {
    REALCHAT_MAX_CONNECTIONS_PER_ADDRESS: '10000000',
    REALCHAT_DEV_TOKENS_PER_MIN: '10000000',
    REALCHAT_CONVERSATION_CREATES_PER_MIN: '10000000',
    REALCHAT_MEMBER_ADDS_PER_MIN: '10000000',
  };
  mkdirSync(dataDir, { recursive: true });
  // the built entry directly when present (what `npm start` runs after its prestart build), else npm start
  const entry = builtStartEntry(root);
  const [cmd, args] = entry ? [process.execPath, [entry]] : ['npm', ['start']];
  opts.log(`starting RealChat (${entry ? `node ${relative(root, entry)}` : 'npm start'}) on ${base} (data dir ${dataDir})`);
  const child = spawn(cmd, args, {
    ...spawnOpts,
    env: {
      ...BENCH_LIMITS,
      ...process.env,
      PORT: String(rport),
      HOST: '127.0.0.1',
      REALCHAT_DATA_DIR: dataDir,
      REALCHAT_JWT_SECRET: DEFAULT_SECRET,
      REALCHAT_DEV_AUTH: '1',
      LOG_LEVEL: process.env['LOG_LEVEL'] ?? 'warn',
    },
  });
  tail(child, 'realchat');
  const until = Date.now() + 180_000;
  while (!(await up())) {
    if (child.exitCode !== null) throw new Error(`npm start exited with ${child.exitCode}`);
    if (Date.now() > until) {
      await stopper(child)();
      throw new Error('RealChat did not become healthy in 180 s');
    }
    await sleep(300);
  }
  const pids = pidsListeningOn(rport);
  const stopChild = stopper(child);
  const stop = async (): Promise<void> => {
    await stopChild();
    rmSync(dataDir, { recursive: true, force: true });
  };
  return { ...common, pids, startedByUs: true, stop, version };
}
