/** Runs the built gateway (dist/) as a real child process, for crash and signal tests. */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface ServerProcess {
  child: ChildProcess;
  port: number;
  logs: string[];
  /** kill -9 */
  crash(): Promise<void>;
  /** SIGTERM; resolves with the exit code. */
  terminate(): Promise<number | null>;
}

export async function spawnGateway(env: Record<string, string>, port: number): Promise<ServerProcess> {
  const main = join(ROOT, 'dist', 'gateway', 'main.js');
  if (!existsSync(main)) throw new Error('dist/gateway/main.js is missing: `npm test` builds it first (npm run build)');
  const child = spawn(process.execPath, [main], {
    env: { PATH: process.env.PATH ?? '', LOG_LEVEL: 'info', ...env, PORT: String(port), HOST: '127.0.0.1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: string[] = [];
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`gateway did not start: ${logs.join('').slice(-2000)}`)), 30_000);
    const onData = (b: Buffer) => {
      logs.push(b.toString());
      if (b.toString().includes('realchat listening')) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', (b: Buffer) => logs.push(b.toString()));
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`gateway exited with ${code}: ${logs.join('').slice(-2000)}`));
    });
  });
  return {
    child,
    port,
    logs,
    async crash() {
      child.kill('SIGKILL');
      await exited;
    },
    async terminate() {
      child.kill('SIGTERM');
      return exited;
    },
  };
}
