/** Runs the built roles (dist/<role>/main.js) as real child processes, for crash and signal tests. */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const READY: Record<Role, string> = {
  standalone: 'realchat listening',
  gateway: 'realchat listening',
  relay: 'relay started',
  delivery: 'delivery started',
  notifier: 'notifier started',
  mirror: 'mirror started',
};
/** Where a role's entry lives under dist/ when not at <role>/main.js. */
const ENTRY: Partial<Record<Role, string>> = { notifier: 'delivery/notifier', mirror: 'delivery/mirror' };

/** `standalone` is `npm start` (the whole pipeline in one process); the others are the distributed roles. */
export type Role = 'standalone' | 'gateway' | 'relay' | 'delivery' | 'notifier' | 'mirror';

export interface RoleProcess {
  role: Role;
  child: ChildProcess;
  logs: string[];
  /** kill -9 */
  crash(): Promise<void>;
  /** SIGTERM; resolves with the exit code. */
  terminate(): Promise<number | null>;
}

export async function spawnRole(role: Role, env: Record<string, string>): Promise<RoleProcess> {
  const main = join(ROOT, 'dist', ENTRY[role] ?? role, 'main.js');
  if (!existsSync(main)) throw new Error(`${main} is missing: \`npm test\` builds it first (npm run build)`);
  const child = spawn(process.execPath, [main], {
    env: { PATH: process.env.PATH ?? '', LOG_LEVEL: 'info', HOST: '127.0.0.1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: string[] = [];
  // REALCHAT_TEST_LOG_DIR keeps every role's full log on disk, for diagnosing a failed run.
  const logDir = process.env.REALCHAT_TEST_LOG_DIR;
  let file: ReturnType<typeof createWriteStream> | null = null;
  if (logDir) {
    mkdirSync(logDir, { recursive: true });
    file = createWriteStream(join(logDir, `${role}-${env.REALCHAT_NODE_ID ?? 'node'}-${child.pid}.log`));
    child.once('exit', () => file?.end());
  }
  // Keep the tail only: a long test must not grow memory without bound.
  const keep = (b: Buffer) => {
    file?.write(b);
    logs.push(b.toString());
    if (logs.length > 2000) logs.splice(0, logs.length - 1000);
  };
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${role} did not start in 120 s: ${logs.join('').slice(-3000)}`)), 120_000);
    let tail = '';
    child.stdout!.on('data', (b: Buffer) => {
      keep(b);
      tail = (tail + b.toString()).slice(-4096);
      if (tail.includes(READY[role])) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.stderr!.on('data', keep);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`${role} exited with ${code}: ${logs.join('').slice(-3000)}`));
    });
  });
  return {
    role,
    child,
    logs,
    async crash() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      await exited;
    },
    async terminate() {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill('SIGTERM');
      return exited;
    },
  };
}
