/**
 * The chaos run's TCP proxy (tests/chaos/proxy.ts) must degrade a link the way a network does:
 * late, never reordered. Its loss mode wrote undelayed chunks at once, past a stalled one, and the
 * long run's gateway behind it crashed in kafkajs' frame decoder on the reordered bytes
 * (docs/chaos.md, "Harness bugs").
 */
import { createConnection, createServer, type Server } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { TcpProxy } from './chaos/proxy.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

/** A server that records every byte it receives. */
async function sink(): Promise<{ port: number; received: () => string }> {
  let got = '';
  const server: Server = createServer((s) => s.on('data', (d: Buffer) => (got += d.toString())));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  cleanups.push(() => new Promise((r) => server.close(r)));
  const addr = server.address();
  if (!addr || typeof addr === 'string') throw new Error('no port');
  return { port: addr.port, received: () => got };
}

/** A sink behind a proxy, and a client connected through it (each separate write: its own chunk). */
async function link() {
  const target = await sink();
  const proxy = await TcpProxy.start(target.port);
  cleanups.push(() => proxy.close());
  const client = createConnection({ host: '127.0.0.1', port: proxy.port });
  client.setNoDelay(true);
  cleanups.push(() => client.destroy());
  await new Promise<void>((r) => client.once('connect', () => r()));
  return { target, proxy, client };
}

describe('chaos proxy', () => {
  it('under loss, and across its heal, keeps the byte order', async () => {
    const { target, proxy, client } = await link();
    proxy.lossRate = 0.3;
    proxy.rtoMs = 40;
    const sent: string[] = [];
    for (let i = 0; i < 120; i++) {
      const chunk = `<${i}>`;
      sent.push(chunk);
      client.write(chunk);
      // Separate writes arrive as separate chunks at the proxy.
      await sleep(2);
      if (i === 80) proxy.heal();
    }
    const deadline = Date.now() + 5000;
    while (target.received().length < sent.join('').length && Date.now() < deadline) await sleep(20);
    expect(target.received()).toBe(sent.join(''));
  });

  it('adds latency without capping throughput: chunks in flight overlap, in order', async () => {
    const { target, proxy, client } = await link();
    proxy.delayMs = 100;
    const sent: string[] = [];
    const started = performance.now();
    for (let i = 0; i < 40; i++) {
      sent.push(`<${i}>`);
      client.write(`<${i}>`);
      await sleep(2);
      // Still in flight: nothing is early.
      if (performance.now() - started < 90) expect(target.received()).toBe('');
    }
    const deadline = Date.now() + 5000;
    while (target.received().length < sent.join('').length && Date.now() < deadline) await sleep(5);
    expect(target.received()).toBe(sent.join(''));
    // Held one after another, 40 chunks would take 4 s; a link with latency delivers them in
    // about the time they took to send plus one delay.
    expect(performance.now() - started).toBeLessThan(1500);
  });
});
