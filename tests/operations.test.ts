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
});
