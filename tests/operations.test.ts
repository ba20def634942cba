import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createConversation, http, startTestServer, type TestServer } from './harness/server.js';
import { TestClient } from './harness/ws-client.js';

describe('health, readiness, metrics, drain', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer('pglite');
  });
  afterAll(async () => s?.close());

  it('healthz and readyz answer', async () => {
    expect((await http(s, 'GET', '/healthz')).body).toEqual({ status: 'ok' });
    expect((await http(s, 'GET', '/readyz')).body).toEqual({ status: 'ready' });
  });

  it('metrics expose connections, accepted messages, write latency and deliveries', async () => {
    const alice = await s.token();
    const conv = await createConversation(s, alice.token, []);
    const a = await TestClient.connect(s.wsUrl, alice.token);
    await a.sendMessage(conv, 'm1', 1);
    await a.waitFor((f) => f.type === 'message');
    const text: string = (await http(s, 'GET', '/metrics')).body;
    expect(text).toMatch(/^realchat_active_connections\{node_id="[^"]+"\} 1$/m);
    expect(text).toMatch(/^realchat_messages_accepted_total\{via="ws",node_id="[^"]+"\} 1$/m);
    expect(text).toMatch(/^realchat_db_write_seconds_count\{node_id="[^"]+"\} 1$/m);
    expect(text).toMatch(/^realchat_deliveries_total\{via="live",node_id="[^"]+"\} 1$/m);
    expect(text).toMatch(/^# HELP realchat_failed_deliveries_total/m);
    expect(text).toMatch(/^nodejs_eventloop_lag_seconds/m);
    a.close();
  });

  it('drain tells clients to reconnect with a jittered delay, then closes them with 4000', async () => {
    const other = await startTestServer('pglite');
    const u = await other.token();
    const c = await TestClient.connect(other.wsUrl, u.token);
    const closing = other.close();
    const f = await c.waitFor((x) => x.type === 'reconnect').catch(() => null);
    await closing;
    expect(f).toMatchObject({ type: 'reconnect', reason: 'draining' });
    expect(f!.retry_after_ms).toBeGreaterThanOrEqual(0);
    expect(f!.retry_after_ms).toBeLessThan(2000);
    expect(await c.waitClosed()).toBe(4000);
  });

  it('a draining node refuses requests on kept-alive connections and closes them, so the client moves', async () => {
    const other = await startTestServer('pglite');
    const sock = connect({ host: '127.0.0.1', port: other.app.port });
    sock.on('error', () => {});
    let received = '';
    sock.on('data', (b: Buffer) => (received += b.toString()));
    const ended = new Promise<void>((r) => sock.once('close', () => r()));
    await new Promise((r) => sock.once('connect', r));
    const get = (path: string) => sock.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${other.app.port}\r\n\r\n`);
    get('/healthz');
    await until(() => received.includes('"ok"'));
    expect(received).toMatch(/^HTTP\/1\.1 200/);
    received = '';
    const closing = other.close();
    get('/v1/openapi.json');
    await Promise.race([
      ended,
      new Promise((_, rej) => setTimeout(() => rej(new Error(`connection not closed: ${received.slice(0, 200)}`)), 5000)),
    ]);
    await closing;
    expect(received).toMatch(/^HTTP\/1\.1 503/);
    expect(received).toContain('"unavailable"');
    expect(received.toLowerCase()).toContain('retry-after: 1');
  });
});

async function until(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}
