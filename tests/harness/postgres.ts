/**
 * Starts a real PostgreSQL 15 server as a local process for the test run (no containers here).
 * Debian's server refuses to run as root, so as root it runs as the `postgres` user.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface PostgresServer {
  url: string;
  port: number;
  dir: string;
  /** Stops the server immediately (like a crash) and keeps its data. */
  kill(): void;
  /** Starts it again on the same port and data. */
  restart(): void;
  /** Stops it and deletes its data. */
  stop(): void;
}

const PG_BIN = process.env.REALCHAT_PG_BIN ?? '/usr/lib/postgresql/15/bin';

/**
 * A free port below the kernel's ephemeral range (32768-60999 here): a port handed out from that
 * range can be taken by some process's outgoing connection before our server (re)binds it, which
 * made restarts on the same port flaky when test files run in parallel.
 */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = 20000 + Math.floor(Math.random() * 12000);
    const free = await new Promise<boolean>((resolve) => {
      const s = createServer();
      s.once('error', () => resolve(false));
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
    });
    if (free) return port;
  }
  throw new Error('no free port in 20000-31999');
}

function asPostgres(cmd: string, args: string[]): string[] {
  return process.getuid?.() === 0 ? ['runuser', '-u', 'postgres', '--', cmd, ...args] : [cmd, ...args];
}

function run(argv: string[]): void {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) throw new Error(`${argv.join(' ')} failed (${r.status}): ${r.stderr || r.stdout}`);
}

export async function startPostgres(opts: { walLevel?: 'replica' | 'logical' } = {}): Promise<PostgresServer> {
  if (!existsSync(join(PG_BIN, 'initdb'))) {
    throw new Error(`PostgreSQL server binaries not found in ${PG_BIN}: run the README's test command (it installs postgresql-15)`);
  }
  const dir = mkdtempSync(join(tmpdir(), 'realchat-pg-'));
  if (process.getuid?.() === 0) {
    const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres']).toString().trim());
    chownSync(dir, uid, gid);
  }
  const data = join(dir, 'data');
  const port = await freePort();
  run(asPostgres(join(PG_BIN, 'initdb'), ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync', '--no-instructions']));
  const serverOpts = [
    `-p ${port}`,
    `-k ${dir}`,
    `-c listen_addresses=127.0.0.1`,
    // fsync off is safe against process crashes (the OS keeps the writes); synchronous_commit stays on,
    // or a killed server would lose acknowledged commits.
    `-c fsync=off`,
    `-c full_page_writes=off`,
    `-c max_connections=300`,
    `-c wal_level=${opts.walLevel ?? 'replica'}`,
  ].join(' ');
  const start = () =>
    run(asPostgres(join(PG_BIN, 'pg_ctl'), ['-D', data, '-o', serverOpts, '-l', join(dir, 'server.log'), '-w', '-t', '60', 'start']));
  const kill = () => {
    const argv = asPostgres(join(PG_BIN, 'pg_ctl'), ['-D', data, '-m', 'immediate', '-w', '-t', '30', 'stop']);
    spawnSync(argv[0]!, argv.slice(1), { timeout: 60_000 });
  };
  start();
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    port,
    dir,
    kill,
    restart: start,
    stop() {
      kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
