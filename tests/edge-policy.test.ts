/**
 * What a default-configured node refuses to strangers: other Host names (DNS rebinding), other
 * browser origins (cross-site WebSocket hijacking), metrics on the public port (with an internal
 * port), too many connections or cheap writes, and what it always sends (security headers) and logs.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { randomUUID } from 'node:crypto';
import { request } from 'node:http';
import { LogSink, createConversation, http, startTestServer, type TestServer } from './harness/server.js';
import { TestClient } from './harness/ws-client.js';

/** The status of a WebSocket upgrade with the given headers (101 when it opened). */
async function upgradeStatus(url: string, headers: Record<string, string>): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers, handshakeTimeout: 5000 });
    ws.once('open', () => {
      ws.terminate();
      resolve({ status: 101, body: '' });
    });
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (b: Buffer) => (body += b.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    ws.once('error', (err) => reject(err));
  });
}

/** A request through node:http, which (unlike fetch) sends the Host header it is given. */
async function raw(s: TestServer, path: string, headers: Record<string, string>, method = 'GET', body?: string) {
  return new Promise<{ status: number; headers: Headers; text: string; json: any }>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: s.app.port, path, method, headers, timeout: 5000 }, (res) => {
      let text = '';
      res.on('data', (b: Buffer) => (text += b.toString()));
      res.on('end', () => {
        const h = new Headers();
        for (const [k, v] of Object.entries(res.headers)) if (typeof v === 'string') h.set(k, v);
        let json: any = null;
        try {
          json = JSON.parse(text);
        } catch {
          /* not JSON */
        }
        resolve({ status: res.statusCode ?? 0, headers: h, text, json });
      });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(body);
  });
}

describe('Host header (DNS rebinding) on a loopback-bound node', () => {
  let s: TestServer;
  const logs = new LogSink();
  beforeAll(async () => {
    s = await startTestServer('pglite', {}, {}, { logs });
  });
  afterAll(async () => s?.close());

  it('a rebound name is refused everywhere (REST, dev tokens, static files, WebSocket upgrade) and mints nothing', async () => {
    const port = s.app.port;
    const users = async () => (await s.query<{ n: number }>('SELECT count(*)::int AS n FROM users'))[0]!.n;
    const before = await users();
    const minted = await raw(s, '/v1/dev/token', { host: `attacker.example:${port}`, 'content-type': 'application/json' }, 'POST', '{}');
    expect(minted.status).toBe(421);
    expect(minted.json.error.code).toBe('host_not_allowed');
    expect(await users()).toBe(before);
    expect((await raw(s, '/', { host: 'attacker.example' })).status).toBe(421);
    expect((await raw(s, '/healthz', { host: 'attacker.example' })).status).toBe(421);
    expect((await upgradeStatus(s.wsUrl, { host: `attacker.example:${port}` })).status).toBe(421);
  });

  it('loopback names and IP literals are served', async () => {
    const port = s.app.port;
    for (const host of [
      `127.0.0.1:${port}`,
      `localhost:${port}`,
      'localhost',
      `[::1]:${port}`,
      `app.localhost:${port}`,
      `10.1.2.3:${port}`,
    ]) {
      expect((await raw(s, '/v1/dev/token', { host, 'content-type': 'application/json' }, 'POST', '{}')).status, host).toBe(200);
    }
    expect((await upgradeStatus(s.wsUrl, { host: `localhost:${port}` })).status).toBe(101);
  });

  it('refusals are logged with their kind and address, rate limited', async () => {
    const before = logs.find((l) => l.kind === 'refused:host_not_allowed').length;
    for (let i = 0; i < 60; i++) await raw(s, '/healthz', { host: 'attacker.example' });
    const lines = logs.find((l) => l.kind === 'refused:host_not_allowed');
    expect(lines.length - before).toBeGreaterThan(0);
    expect(lines.length - before).toBeLessThanOrEqual(11);
    expect(lines[lines.length - 1]).toMatchObject({ level: 'warn', code: 'host_not_allowed', address: expect.any(String) });
  });
});

describe('Host names configured for a public deployment', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer('pglite', { REALCHAT_PUBLIC_HOSTS: 'chat.example.com' });
  });
  afterAll(async () => s?.close());

  it('exact names only: no suffix or prefix tricks', async () => {
    expect((await raw(s, '/healthz', { host: 'chat.example.com' })).status).toBe(200);
    expect((await raw(s, '/healthz', { host: 'CHAT.example.com:443' })).status).toBe(200);
    for (const host of ['chat.example.com.attacker.example', 'evilchat.example.com', 'example.com', 'xchat.example.com']) {
      expect((await raw(s, '/healthz', { host })).status, host).toBe(421);
    }
  });
});

describe('browser origins', () => {
  let s: TestServer;
  let token: string;
  beforeAll(async () => {
    s = await startTestServer('pglite', { REALCHAT_ALLOWED_ORIGINS: 'https://app.example.com' });
    token = (await s.token()).token;
  });
  afterAll(async () => s?.close());

  it('a WebSocket upgrade from another site is refused with 403 before the upgrade; no Origin, the own origin and listed origins pass', async () => {
    const host = `127.0.0.1:${s.app.port}`;
    for (const origin of [
      'https://evil.example',
      'https://app.example.com.evil.example',
      'http://app.example.com',
      'https://app.example.com:8443',
      'null',
      `http://${host}.evil.example`,
    ]) {
      const r = await upgradeStatus(s.wsUrl, { origin });
      expect(r.status, origin).toBe(403);
      expect(JSON.parse(r.body).error.code).toBe('origin_not_allowed');
    }
    expect((await upgradeStatus(s.wsUrl, {})).status).toBe(101);
    expect((await upgradeStatus(s.wsUrl, { origin: `http://${host}` })).status).toBe(101);
    expect((await upgradeStatus(s.wsUrl, { origin: 'https://app.example.com' })).status).toBe(101);
  });

  it('REST: listed origins get CORS (preflight and responses); other origins are refused', async () => {
    const pre = await raw(
      s,
      '/v1/conversations',
      { origin: 'https://app.example.com', 'access-control-request-method': 'POST' },
      'OPTIONS',
    );
    expect(pre.status).toBe(204);
    expect(pre.headers.get('access-control-allow-origin')).toBe('https://app.example.com');
    expect(pre.headers.get('access-control-allow-headers')).toContain('authorization');
    const listed = await raw(s, '/v1/conversations', { origin: 'https://app.example.com', authorization: `Bearer ${token}` });
    expect(listed.status).toBe(200);
    expect(listed.headers.get('access-control-allow-origin')).toBe('https://app.example.com');
    const other = await raw(s, '/v1/conversations', { origin: 'https://evil.example', authorization: `Bearer ${token}` });
    expect(other.status).toBe(403);
    expect(other.headers.get('access-control-allow-origin')).toBeNull();
    expect((await raw(s, '/v1/conversations', { origin: 'https://evil.example' }, 'OPTIONS')).status).toBe(403);
  });
});

describe('security headers', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer('pglite');
  });
  afterAll(async () => s?.close());

  it('API responses are never cached, sniffed or leaked as referrers; the app page allows connections to itself only', async () => {
    for (const path of ['/healthz', '/v1/conversations', '/v1/nope']) {
      const r = await raw(s, path, {});
      expect(r.headers.get('cache-control'), path).toBe('no-store');
      expect(r.headers.get('x-content-type-options'), path).toBe('nosniff');
      expect(r.headers.get('referrer-policy'), path).toBe('no-referrer');
    }
    const page = await raw(s, '/', {});
    if (page.status === 200 && page.headers.get('content-type')?.includes('text/html')) {
      const csp = page.headers.get('content-security-policy')!;
      expect(csp).toMatch(/connect-src 'self'(;| )/);
      expect(csp).not.toMatch(/ ws:| wss:/);
      expect(csp).toContain("frame-ancestors 'none'");
    } else {
      expect(page.status).toBe(404); // the web app is not built in this checkout
    }
  });
});

describe('internal port', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer('pglite', { REALCHAT_INTERNAL_PORT: '0' });
  });
  afterAll(async () => s?.close());

  it('with REALCHAT_INTERNAL_PORT, /metrics leaves the public port and is served on the internal one (loopback)', async () => {
    expect((await raw(s, '/metrics', {})).status).toBe(404);
    const port = s.app.internalPort!;
    expect(port).toBeGreaterThan(0);
    const m = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(5000) });
    expect(m.status).toBe(200);
    expect(await m.text()).toContain('realchat_active_connections');
    expect((await fetch(`http://127.0.0.1:${port}/readyz`, { signal: AbortSignal.timeout(5000) })).status).toBe(200);
    expect((await raw(s, '/healthz', {})).status).toBe(200);
  });
});

describe('connection caps', () => {
  let s: TestServer;
  const open: TestClient[] = [];
  beforeAll(async () => {
    s = await startTestServer('pglite', { REALCHAT_MAX_CONNECTIONS_PER_USER: '3', REALCHAT_MAX_CONNECTIONS_PER_ADDRESS: '5' });
  });
  afterEach(() => {
    for (const c of open.splice(0)) c.close();
  });
  afterAll(async () => s?.close());

  it('per user: the connection past the cap gets too_many_connections and close 4005; closing one makes room', async () => {
    const { token } = await s.token();
    for (let i = 0; i < 3; i++) open.push(await TestClient.connect(s.wsUrl, token));
    const extra = await TestClient.open(s.wsUrl);
    extra.send({ type: 'hello', token });
    expect(await extra.waitFor((f) => f.type === 'error')).toMatchObject({ code: 'too_many_connections' });
    expect(await extra.waitClosed()).toBe(4005);
    open.pop()!.close();
    await expect
      .poll(
        async () => {
          try {
            const c = await TestClient.connect(s.wsUrl, token);
            open.push(c);
            return true;
          } catch {
            return false;
          }
        },
        { timeout: 5000 },
      )
      .toBe(true);
  });

  it('per client address: the upgrade past the cap is answered 429 before any WebSocket exists', async () => {
    for (let i = 0; i < 5; i++) open.push(await TestClient.connect(s.wsUrl, (await s.token()).token));
    const r = await upgradeStatus(s.wsUrl, {});
    expect(r.status).toBe(429);
    expect(JSON.parse(r.body).error.code).toBe('too_many_connections');
    open.pop()!.close();
    await expect.poll(async () => (await upgradeStatus(s.wsUrl, {})).status, { timeout: 5000 }).toBe(101);
  });
});

describe('writes a stranger could repeat are rate limited', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer('pglite', {
      REALCHAT_CONVERSATION_CREATES_PER_MIN: '3',
      REALCHAT_MEMBER_ADDS_PER_MIN: '2',
      REALCHAT_DEV_TOKENS_PER_MIN: '2',
    });
  });
  afterAll(async () => s?.close());

  it('conversation creation per user', async () => {
    const a = await s.token();
    for (let i = 0; i < 3; i++) await createConversation(s, a.token, []);
    const r = await http(s, 'POST', '/v1/conversations', { token: a.token, body: { member_ids: [] } });
    expect(r.status).toBe(429);
    expect(r.body.error.code).toBe('rate_limited');
    expect(Number(r.headers.get('retry-after'))).toBeGreaterThan(0);
    // Another user is not affected.
    await createConversation(s, (await s.token()).token, []);
  });

  it('member additions per user', async () => {
    const a = await s.token();
    const conv = await createConversation(s, a.token, []);
    for (let i = 0; i < 2; i++)
      expect(
        (await http(s, 'POST', `/v1/conversations/${conv}/members`, { token: a.token, body: { user_ids: [randomUUID()] } })).status,
      ).toBe(200);
    const r = await http(s, 'POST', `/v1/conversations/${conv}/members`, { token: a.token, body: { user_ids: [randomUUID()] } });
    expect(r.status).toBe(429);
    expect((await s.query<{ n: number }>('SELECT count(*)::int AS n FROM members WHERE conversation_id = $1', [conv]))[0]!.n).toBe(3);
  });

  it('dev tokens per client address', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) statuses.push((await http(s, 'POST', '/v1/dev/token', { body: {} })).status);
    expect(statuses).toEqual([200, 200, 429]);
  });
});

describe('dev auth exposed beyond loopback', () => {
  it('starts only when asked for explicitly, and then warns loudly', async () => {
    const logs = new LogSink();
    const s = await startTestServer('pglite', { HOST: '0.0.0.0', REALCHAT_DEV_AUTH: '1' }, {}, { logs });
    try {
      expect(logs.find((l) => l.level === 'warn' && /DEV AUTH IS ON/.test(l.msg))).toHaveLength(1);
    } finally {
      await s.close();
    }
  });
});
