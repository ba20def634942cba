/**
 * Requests an attacker would send: none may end the process, none may make the node hold unbounded
 * memory, and no payload may be stored other than as sent (docs/architecture.md, bad input and abuse).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type Socket } from 'node:net';
import { BACKENDS, LogSink, createConversation, http, startTestServer, type TestServer } from './harness/server.js';
import { TestClient } from './harness/ws-client.js';
import { UNLIMITED_RATES } from './harness/env.js';
import { until } from './harness/until.js';
import { plainDecimalLength } from '../common/validate.js';

const ZERO_CONV = '00000000-0000-4000-8000-000000000000';

describe.each(BACKENDS)('one request cannot end the process (%s)', (backend) => {
  let s: TestServer;
  let alice: { userId: string; token: string };
  const logs = new LogSink();
  beforeAll(async () => {
    s = await startTestServer(backend, {}, {}, { logs });
    alice = await s.token();
  });
  afterAll(async () => s?.close());

  const malformed = ['%', '%zz', '%E0%A4%A', 'a%', '%%', '%ff%fe'];
  const routes: Array<[string, string]> = [
    ['GET', '/v1/conversations/:id/messages'],
    ['POST', '/v1/conversations/:id/messages'],
    ['POST', '/v1/conversations/:id/members'],
  ];

  it.each(routes)(
    '%s %s with a malformed percent-escape in the id: 401 without a token, 404 with one, and the node lives',
    async (method, path) => {
      for (const bad of malformed) {
        const url = path.replace(':id', bad);
        const body = method === 'POST' ? { idempotency_key: 'k', payload: 1, user_ids: [ZERO_CONV] } : undefined;
        const anon = await http(s, method, url, body ? { body } : {});
        expect(anon.status, `${method} ${url}`).toBe(401);
        const authed = await http(s, method, url, { token: alice.token, ...(body ? { body } : {}) });
        expect(authed.status, `${method} ${url}`).toBe(404);
        expect(authed.body.error.code).toBe('not_found');
      }
      expect((await http(s, 'GET', '/healthz')).status).toBe(200);
      expect(logs.find((l) => l.level === 'error' || l.level === 'fatal')).toEqual([]);
    },
  );
});

describe.each(BACKENDS)('payload edge cases are refused before anything serializes or stores them (%s)', (backend) => {
  let s: TestServer;
  let alice: { userId: string; token: string };
  let conv: string;
  const logs = new LogSink();
  beforeAll(async () => {
    s = await startTestServer(backend, { ...UNLIMITED_RATES }, {}, { logs });
    alice = await s.token();
    conv = await createConversation(s, alice.token, []);
  });
  afterAll(async () => s?.close());

  const stored = async () => (await s.query<{ n: number }>('SELECT count(*)::int AS n FROM messages'))[0]!.n;
  const frame = (payloadText: string, key: string) =>
    `{"type":"send","conversation_id":"${conv}","idempotency_key":"${key}","payload":${payloadText}}`;
  const restBody = (payloadText: string, key: string) => `{"idempotency_key":"${key}","payload":${payloadText}}`;

  const cases: Array<[string, string, string]> = [
    ['100,000 nested arrays', '['.repeat(100_000) + ']'.repeat(100_000), 'nests deeper'],
    ['1e400 (JavaScript reads Infinity, PostgreSQL would store null)', '{"n":1e400}', 'finite'],
    ['-1e400', '[-1e400]', 'finite'],
    ['thousands of 5e-324 (printed ~50x larger by PostgreSQL)', '[' + Array(5000).fill('5e-324').join(',') + ']', 'decimal'],
    ['a number of 300 digits', '1' + '0'.repeat(300), 'decimal'],
  ];

  it.each(cases)('WebSocket: %s → invalid_frame, nothing stored, no error logged', async (_name, payload, message) => {
    const before = await stored();
    const c = await TestClient.connect(s.wsUrl, alice.token);
    const since = c.frames.length;
    c.send(frame(payload, 'bad'));
    const err = await c.waitFor((f) => f.type === 'error', 5000, since);
    expect(err.code).toBe('invalid_frame');
    expect(err.message).toContain(message);
    // The connection still works.
    expect((await c.sendMessage(conv, `ok-${Math.random()}`, { fine: 1.5 })).type).toBe('ack');
    expect(await stored()).toBe(before + 1);
    c.close();
    expect(logs.find((l) => l.level === 'error' || l.level === 'fatal')).toEqual([]);
  });

  it.each(cases)('REST: %s → 400 invalid_request, nothing stored', async (_name, payload, message) => {
    const before = await stored();
    const r = await http(s, 'POST', `/v1/conversations/${conv}/messages`, { token: alice.token, rawBody: restBody(payload, 'bad-rest') });
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe('invalid_request');
    expect(r.body.error.message).toContain(message);
    expect(await stored()).toBe(before);
  });

  it('numbers within the bound are stored and read back exactly; the bound is what PostgreSQL prints', async () => {
    const numbers = [1e-38, -1e-37, 123456789012345680000, 0.1 + 0.2, -0.000001, 1.5e-7, 42, 0, 1e21, 9007199254740991];
    for (const n of numbers) {
      const [row] = await s.query<{ len: number }>('SELECT length(($1::text::jsonb)::text) AS len', [JSON.stringify(n)]);
      expect(plainDecimalLength(n), `${n}`).toBe(row!.len);
    }
    for (const n of [5e-324, 1.7976931348623157e308, 1e300, -1.5e-200]) {
      const [row] = await s.query<{ len: number }>('SELECT length(($1::text::jsonb)::text) AS len', [JSON.stringify(n)]);
      expect(plainDecimalLength(n), `${n}`).toBe(row!.len);
    }
    const c = await TestClient.connect(s.wsUrl, alice.token);
    const ack = await c.sendMessage(conv, 'numbers', { numbers });
    expect(ack, JSON.stringify(ack)).toMatchObject({ type: 'ack' });
    const page = await http(s, 'GET', `/v1/conversations/${conv}/messages?after_sequence=${ack.sequence_number - 1}&limit=1`, {
      token: alice.token,
    });
    expect(page.body.messages[0].payload).toEqual({ numbers });
    c.close();
  });
});

/** Seeds `n` messages of about `bytes` bytes each. */
async function seed(s: TestServer, token: string, conv: string, n: number, bytes: number): Promise<void> {
  const c = await TestClient.connect(s.wsUrl, token);
  // Windows of 50: a connection may have 64 requests in flight.
  for (let w = 0; w < n; w += 50) {
    for (let i = w; i < Math.min(n, w + 50); i++)
      c.send({ type: 'send', conversation_id: conv, idempotency_key: `seed-${i}`, payload: { text: 'x'.repeat(bytes), i } });
    await c.waitForCount((f) => f.type === 'ack', Math.min(n, w + 50), 60_000);
  }
  c.close();
}

describe('pages are bounded in bytes as well as rows', () => {
  let s: TestServer;
  let alice: { userId: string; token: string };
  let conv: string;
  beforeAll(async () => {
    s = await startTestServer('postgres', { ...UNLIMITED_RATES });
    alice = await s.token();
    conv = await createConversation(s, alice.token, []);
    await seed(s, alice.token, conv, 40, 60 * 1024);
  });
  afterAll(async () => s?.close());

  it('REST: a 500-row page of 60 KiB messages stops near 1 MiB with has_more; paging returns every message once, in order', async () => {
    const seen: number[] = [];
    let after = 0;
    for (let pages = 0; pages < 40; pages++) {
      const r = await http(s, 'GET', `/v1/conversations/${conv}/messages?after_sequence=${after}&limit=500`, { token: alice.token });
      expect(r.status).toBe(200);
      expect(JSON.stringify(r.body).length).toBeLessThan(1.1 * 1024 * 1024);
      expect(r.body.messages.length).toBeGreaterThan(0);
      seen.push(...r.body.messages.map((m: any) => m.sequence_number));
      after = seen[seen.length - 1]!;
      if (!r.body.has_more) break;
      expect(r.body.messages.length).toBeLessThan(40);
    }
    expect(seen).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
  });

  it('WebSocket sync: a page is at most a quarter of the connection buffer bound', async () => {
    const c = await TestClient.connect(s.wsUrl, alice.token);
    c.send({ type: 'sync', conversation_id: conv, after_sequence: 0, limit: 500 });
    const page = await c.waitFor((f) => f.type === 'messages');
    expect(page.has_more).toBe(true);
    expect(JSON.stringify(page).length).toBeLessThanOrEqual(256 * 1024 + 64 * 1024);
    c.close();
  });
});

describe('clients that never read cannot pin memory', () => {
  let s: TestServer;
  let alice: { userId: string; token: string };
  let conv: string;
  beforeAll(async () => {
    s = await startTestServer('postgres', {
      ...UNLIMITED_RATES,
      REALCHAT_SLOW_READER_TIMEOUT_MS: '1500',
      REALCHAT_MAX_PAGE_BYTES: String(64 * 1024 * 1024),
      REALCHAT_MAX_PENDING_RESPONSE_BYTES: String(8 * 1024 * 1024),
      REALCHAT_RESPONSE_STALL_MS: '1500',
    });
    alice = await s.token();
    conv = await createConversation(s, alice.token, []);
    await seed(s, alice.token, conv, 300, 60 * 1024);
  }, 180_000);
  afterAll(async () => s?.close());
  const activeConnections = async (): Promise<number> => {
    const text: string = (await http(s, 'GET', '/metrics')).body;
    const m = /^realchat_active_connections(?:\{[^}]*\})? (\d+)/m.exec(text);
    if (!m) throw new Error('realchat_active_connections missing from /metrics');
    return Number(m[1]);
  };

  it('WebSocket: 10 non-reading sockets asking for many large pages get at most their buffer bound each, then close 4002', async () => {
    const clients: TestClient[] = [];
    for (let i = 0; i < 10; i++) clients.push(await TestClient.connect(s.wsUrl, alice.token));
    const rssBefore = process.memoryUsage().rss;
    const received = clients.map(() => 0);
    clients.forEach((c, i) => {
      (c.ws as any)._socket.on('data', (b: Buffer) => (received[i]! += b.length));
      (c.ws as any)._socket.pause();
      for (let k = 0; k < 60; k++) c.send({ type: 'sync', conversation_id: conv, after_sequence: k, limit: 500 });
    });
    // Paused until the server has given up on every one of them: when that happens depends on how
    // fast it reads pages and how much the kernel's socket buffers take first, so no fixed wait (a
    // socket resumed before the server gave up would read every page and never be closed).
    let rssGrowth = 0;
    await until(
      'the server to close every non-reading socket',
      async () => {
        rssGrowth = Math.max(rssGrowth, process.memoryUsage().rss - rssBefore);
        return (await activeConnections()) === 0;
      },
      45_000,
      200,
    );
    for (const c of clients) (c.ws as any)._socket.resume();
    for (const c of clients) expect(await c.waitClosed(15_000)).toBe(4002);
    // Each reply is at most a quarter of the 1 MiB bound and is sent only below half of it; what
    // arrives beyond that bound sat in the kernel's socket buffers, not in the server.
    for (const r of received) expect(r).toBeLessThan(16 * 1024 * 1024);
    // 600 unbounded pages of 300 x 60 KiB would be gigabytes.
    expect(rssGrowth).toBeLessThan(300 * 1024 * 1024);
    expect((await http(s, 'GET', '/healthz')).status).toBe(200);
  });

  it('REST: responses held for clients that do not read are bounded node-wide; the stalled ones are dropped and service returns', async () => {
    const path = `/v1/conversations/${conv}/messages?after_sequence=0&limit=500`;
    // Raw sockets that send a request and never read its ~18 MB answer.
    const sockets: Socket[] = [];
    for (let i = 0; i < 3; i++) {
      const sock = connect({ host: '127.0.0.1', port: s.app.port });
      sock.on('error', () => {});
      await new Promise((r) => sock.once('connect', r));
      sock.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${alice.token}\r\n\r\n`);
      sock.pause();
      sockets.push(sock);
    }
    // Once the server has read those pages and holds their answers (how soon depends on the
    // machine's load: a fixed 800 ms wait failed CI once), another request is refused.
    let refused = await http(s, 'GET', `/v1/conversations/${conv}/messages?after_sequence=0&limit=1`, { token: alice.token });
    const deadline = Date.now() + 15_000;
    while (refused.status !== 503 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      refused = await http(s, 'GET', `/v1/conversations/${conv}/messages?after_sequence=0&limit=1`, { token: alice.token });
    }
    expect(refused.status).toBe(503);
    expect(refused.body.error.code).toBe('unavailable');
    expect(refused.headers.get('retry-after')).toBe('1');
    // After the stall timeout the held responses are abandoned and their memory released.
    await expect
      .poll(
        async () => (await http(s, 'GET', `/v1/conversations/${conv}/messages?after_sequence=0&limit=1`, { token: alice.token })).status,
        { timeout: 10_000, interval: 300 },
      )
      .toBe(200);
    for (const sock of sockets) sock.destroy();
  });
});
