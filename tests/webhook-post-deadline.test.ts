/**
 * A webhook POST's deadline cannot be faked by a blocked event loop (delivery/webhooks/http-post.ts):
 * an answer that reached the socket before the deadline, while the loop was busy past it, is an
 * answer (a timeout would send the event again); a receiver that does not answer still times out
 * near the deadline. The receiver is another process, so it answers while this one is blocked.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { get } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { postPinned } from '../delivery/webhooks/http-post.js';
import { blockLoop } from './harness/block-loop.js';

// `/slow` answers 200 after 50 ms, `/ping` at once, `/never` not at all.
const RECEIVER = `
const http = require('node:http');
http.createServer((q, s) => {
  q.resume();
  q.on('end', () => {
    if (q.url === '/never') return;
    setTimeout(() => s.end('ok'), q.url === '/slow' ? 50 : 0);
  });
}).listen(0, '127.0.0.1', function () { process.stdout.write(this.address().port + '\\n'); });
`;

describe('webhook POST deadline', () => {
  let receiver: ChildProcess;
  let port: number;
  beforeAll(async () => {
    receiver = spawn(process.execPath, ['-e', RECEIVER], { stdio: ['ignore', 'pipe', 'inherit'] });
    const [line] = (await once(receiver.stdout!, 'data')) as [Buffer];
    port = Number(line.toString().trim());
  });
  afterAll(() => {
    receiver?.kill();
  });

  const post = (path: string, timeoutMs: number) =>
    postPinned({
      url: new URL(`http://127.0.0.1:${port}${path}`),
      address: { address: '127.0.0.1', family: 4 },
      headers: {},
      body: '{}',
      timeoutMs,
    });

  /** A round trip on another connection: the POST is written meanwhile, and the loop then blocks in a socket callback. */
  const pingThenBlock = (ms: number) =>
    new Promise<void>((resolve, reject) => {
      get(`http://127.0.0.1:${port}/ping`, (res) => {
        res.resume();
        res.on('end', () => {
          blockLoop(ms);
          resolve();
        });
      }).on('error', reject);
    });

  it('an answer that arrived while the loop was blocked past the deadline is ok', async () => {
    const result = post('/slow', 150);
    await pingThenBlock(1000); // the receiver has 1 s to answer, on a busy machine too
    expect(await result).toEqual({ outcome: 'ok', status: 200, error: null });
  });

  it('a receiver that does not answer still times out near the deadline', async () => {
    const t0 = performance.now();
    const result = await post('/never', 150);
    const took = performance.now() - t0;
    expect(result.outcome).toBe('timeout');
    expect(took).toBeGreaterThanOrEqual(145);
    expect(took).toBeLessThan(2000);
  });
});
