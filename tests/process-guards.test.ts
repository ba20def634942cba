/**
 * The last line of defence (common/process-main.ts), with a real child process: an unhandled
 * rejection is logged as fatal and the process keeps serving; an uncaught exception is logged as
 * fatal with its context, then the process drains and exits 1.
 */
import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

const MAIN = join(import.meta.dirname, '..', 'dist', 'common', 'process-main.js');

const SCRIPT = `
import { runMain } from ${JSON.stringify(MAIN)};
runMain('probe', async () => {
  setTimeout(() => { Promise.reject(new Error('nobody awaited me')); }, 100);
  setTimeout(() => console.log(JSON.stringify({ msg: 'still serving' })), 400);
  setTimeout(() => { throw new Error('escaped a callback'); }, 600);
  return { stop: async () => console.log(JSON.stringify({ msg: 'drained' })) };
});
`;

describe('process-level handlers', () => {
  it('unhandled rejection: fatal log, keeps running; uncaught exception: fatal log with context, drain, exit 1', async () => {
    expect(existsSync(MAIN), 'npm test builds dist/ first').toBe(true);
    const child = spawn(process.execPath, ['--input-type=module', '-e', SCRIPT], {
      env: { PATH: process.env.PATH ?? '', LOG_LEVEL: 'info' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    const lines = out
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l));
    const msgs = lines.map((l) => l.msg);
    // The rejection is logged and the process goes on; the exception is logged and the process drains.
    expect(msgs.slice(0, 2)).toEqual(['unhandled promise rejection (a bug); still serving', 'still serving']);
    expect(msgs.slice(2).sort()).toEqual(['drained', 'uncaught exception (a bug): draining, then exiting 1']);
    expect(lines[0]).toMatchObject({ level: 'fatal', role: 'probe', err: { message: 'nobody awaited me' } });
    expect(lines.find((l) => l.origin)).toMatchObject({
      level: 'fatal',
      origin: 'uncaughtException',
      err: { message: 'escaped a callback' },
    });
    expect(code).toBe(1);
  });
});
