/** Real redis-server / redis-sentinel processes for integration tests (Debian packages). */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createConnection } from 'node:net';
import type { Redis } from 'ioredis';
import { freePort } from './postgres.js';

/** Redis's clock in ms (TIME): presence liveness is decided on it, so tests compare against it too. */
export async function redisNowMs(r: Redis): Promise<number> {
  const [sec, usec] = (await r.time()) as unknown as [string | number, string | number];
  return Number(sec) * 1000 + Math.floor(Number(usec) / 1000);
}

export interface RedisProcess {
  port: number;
  child: ChildProcess;
  kill(): Promise<void>;
}

async function waitPort(port: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = createConnection({ port, host: '127.0.0.1' });
      s.once('connect', () => {
        s.end();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on ${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** `dir`: the process's own temp dir, removed once it has exited. */
function run(bin: string, args: string[], port: number, dir?: string): Promise<RedisProcess> {
  const child = spawn(bin, args, { stdio: 'ignore' });
  const exited = new Promise<void>((resolve) =>
    child.once('exit', () => {
      if (dir) rmSync(dir, { recursive: true, force: true });
      resolve();
    }),
  );
  return waitPort(port).then(() => ({
    port,
    child,
    async kill() {
      child.kill('SIGKILL');
      await exited;
    },
  }));
}

/** redis-server arguments for a test server: loopback only, no persistence, diskless replication. */
export function redisServerArgs(port: number, opts: { replicaOf?: number; dir?: string } = {}): string[] {
  return [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--save',
    '',
    '--appendonly',
    'no',
    '--protected-mode',
    'no',
    ...(opts.dir ? ['--dir', opts.dir] : []),
    '--repl-diskless-sync',
    'yes',
    ...(opts.replicaOf ? ['--replicaof', '127.0.0.1', String(opts.replicaOf)] : []),
  ];
}

/** A sentinel's config file: monitors `name` at `primaryPort` with quorum 2 and fast failover settings. */
export function sentinelConf(port: number, primaryPort: number, opts: { name: string; dir?: string }): string {
  const { name } = opts;
  return [
    `port ${port}`,
    'bind 127.0.0.1',
    'protected-mode no',
    ...(opts.dir ? [`dir ${opts.dir}`] : []),
    `sentinel monitor ${name} 127.0.0.1 ${primaryPort} 2`,
    `sentinel down-after-milliseconds ${name} 1000`,
    `sentinel failover-timeout ${name} 5000`,
    `sentinel parallel-syncs ${name} 1`,
    '',
  ].join('\n');
}

/** `port`: start on that port (a server that comes back where its clients look, with an empty dataset). */
export async function startRedis(opts: { replicaOf?: number; port?: number } = {}): Promise<RedisProcess> {
  const port = opts.port ?? (await freePort());
  // Full resyncs write an RDB file: keep it in a temp dir, never in the working directory.
  const dir = mkdtempSync(join(tmpdir(), 'realchat-redis-'));
  return run('/usr/bin/redis-server', redisServerArgs(port, { replicaOf: opts.replicaOf, dir }), port, dir);
}

export interface SentinelCluster {
  primary: RedisProcess;
  replica: RedisProcess;
  sentinels: RedisProcess[];
  name: string;
  stop(): Promise<void>;
}

/** A primary, a replica and three sentinels (quorum 2) on loopback, with fast failover settings. */
export async function startSentinelCluster(name = 'realchat'): Promise<SentinelCluster> {
  const primary = await startRedis();
  const replica = await startRedis({ replicaOf: primary.port });
  const dir = mkdtempSync(join(tmpdir(), 'realchat-sentinel-'));
  const sentinels: RedisProcess[] = [];
  for (let i = 0; i < 3; i++) {
    const port = await freePort();
    const conf = join(dir, `sentinel-${i}.conf`);
    writeFileSync(conf, sentinelConf(port, primary.port, { name }));
    sentinels.push(await run('/usr/bin/redis-sentinel', [conf], port));
  }
  return {
    primary,
    replica,
    sentinels,
    name,
    async stop() {
      for (const p of [...sentinels, replica, primary]) await p.kill().catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
