/**
 * LISTEN has a deadline (relay/main.ts listenWithRetry): against a server that accepts connections
 * but never answers, the relay's start does not hang; it polls meanwhile, retries, and listens once
 * the server answers. A TCP proxy in front of a real PostgreSQL plays the black hole, then forwards.
 */
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSql, type Sql } from '../common/db.js';
import { createLogger } from '../common/log.js';
import { listenWithRetry } from '../relay/main.js';
import { LogSink, freshDatabase } from './harness/server.js';

describe('LISTEN with a deadline', () => {
  let url: string;
  let proxy: Server;
  let mode: 'blackhole' | 'forward' = 'blackhole';
  const held: Socket[] = [];
  let sql: Sql;

  beforeAll(async () => {
    url = await freshDatabase();
    const target = new URL(url);
    proxy = createServer((client) => {
      held.push(client);
      client.on('error', () => {});
      if (mode === 'blackhole') return; // accepts, reads, never answers: a paused server
      const upstream = createConnection({ host: target.hostname, port: Number(target.port) });
      upstream.on('error', () => client.destroy());
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  });
  afterAll(async () => {
    await sql?.end({ timeout: 1 }).catch(() => {});
    for (const s of held) s.destroy();
    await new Promise((r) => proxy.close(r));
  });

  it('gives up on a LISTEN after its timeout, retries, and listens once the server answers', async () => {
    const target = new URL(url);
    target.hostname = '127.0.0.1';
    target.port = String((proxy.address() as { port: number }).port);
    // connect_timeout far beyond the LISTEN deadline: only the deadline can end the wait.
    sql = createSql({
      url: target.toString(),
      maxConnections: 2,
      connectTimeoutS: 3,
      queryTimeoutMs: 5000,
      applicationName: 'listen-test',
    });
    const logs = new LogSink();
    const log = createLogger({ level: 'warn', nodeId: 'relay-test', role: 'relay', destination: logs });
    let notified = 0;
    const t0 = Date.now();
    const listener = listenWithRetry(sql, 'realchat_test', () => notified++, { timeoutMs: 500, log });
    try {
      // Returned at once: the start goes on (polling) while LISTEN is pending.
      expect(Date.now() - t0).toBeLessThan(100);
      await new Promise((r) => setTimeout(r, 1200));
      expect(listener.listening()).toBe(false);
      const failures = logs.find((l) => l.msg === 'LISTEN failed: polling until it succeeds');
      expect(failures.length).toBeGreaterThanOrEqual(1);
      expect(failures[0]!.err.message).toMatch(/LISTEN realchat_test timed out after 500 ms/);

      mode = 'forward';
      const deadline = Date.now() + 30_000;
      while (!listener.listening() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      expect(listener.listening()).toBe(true);
      const direct = postgres(url, { max: 1, onnotice: () => {} });
      try {
        for (let i = 0; i < 50 && notified === 0; i++) {
          await direct`SELECT pg_notify('realchat_test', 'x')`;
          await new Promise((r) => setTimeout(r, 100));
        }
      } finally {
        await direct.end();
      }
      expect(notified).toBeGreaterThan(0);
    } finally {
      await listener.stop();
    }
  }, 60_000);
});
