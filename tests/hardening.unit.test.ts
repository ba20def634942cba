/** Unit tests of the hardening rules that need no server: config defaults, edge policy, log limits, guards. */
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../common/config.js';
import { createEdgePolicy, hostName } from '../gateway/edge.js';
import { LogLimiter } from '../common/log-limiter.js';
import { checkPayload, plainDecimalLength } from '../common/validate.js';
import { createLogger } from '../common/log.js';
import { createMetrics } from '../common/metrics.js';
import { createWsBehavior, type WsDeps } from '../gateway/ws-handler.js';
import { createHttpHandler, ResponseBudget } from '../gateway/http.js';

const SECRET = 'x'.repeat(40);

describe('dev auth defaults', () => {
  it('on for the embedded default on loopback only', () => {
    expect(loadConfig({}).devAuth).toBe(true);
    expect(loadConfig({ HOST: '127.0.0.1' }).devAuth).toBe(true);
    expect(loadConfig({ HOST: 'localhost' }).devAuth).toBe(true);
  });

  it('off once a real key is configured, or with a database', () => {
    expect(loadConfig({ REALCHAT_JWT_SECRET: SECRET }).devAuth).toBe(false);
    expect(loadConfig({ REALCHAT_JWT_JWKS: 'https://idp.example/jwks.json' }).devAuth).toBe(false);
    expect(loadConfig({ DATABASE_URL: 'postgres://x/y' }).devAuth).toBe(false);
  });

  it('a non-loopback HOST refuses to start the embedded default unless dev auth is set explicitly', () => {
    expect(() => loadConfig({ HOST: '0.0.0.0' })).toThrow(ConfigError);
    expect(() => loadConfig({ HOST: '0.0.0.0' })).toThrow(/REALCHAT_DEV_AUTH=1/);
    expect(loadConfig({ HOST: '0.0.0.0', REALCHAT_DEV_AUTH: '1' }).devAuth).toBe(true);
    expect(loadConfig({ HOST: '0.0.0.0', REALCHAT_DEV_AUTH: '0' }).devAuth).toBe(false);
    expect(loadConfig({ HOST: '0.0.0.0', REALCHAT_JWT_SECRET: SECRET }).devAuth).toBe(false);
  });

  it('Host names: loopback binds check them; a public bind checks the configured names or none', () => {
    expect(loadConfig({}).edge.allowedHosts).toEqual([]);
    expect(loadConfig({ DATABASE_URL: 'postgres://x/y' }).edge.allowedHosts).toBeNull();
    expect(
      loadConfig({ DATABASE_URL: 'postgres://x/y', REALCHAT_PUBLIC_HOSTS: 'Chat.Example.com, api.example.com' }).edge.allowedHosts,
    ).toEqual(['chat.example.com', 'api.example.com']);
  });

  it('allowed origins must be exact origins', () => {
    expect(loadConfig({ REALCHAT_ALLOWED_ORIGINS: 'https://app.example.com, http://localhost:5173' }).edge.allowedOrigins).toEqual([
      'https://app.example.com',
      'http://localhost:5173',
    ]);
    for (const bad of ['app.example.com', 'https://app.example.com/path', 'ftp://app.example.com', '*']) {
      expect(() => loadConfig({ REALCHAT_ALLOWED_ORIGINS: bad }), bad).toThrow(ConfigError);
    }
  });
});

describe('edge policy', () => {
  const edge = createEdgePolicy({
    allowedOrigins: ['https://app.example.com'],
    allowedHosts: ['chat.example.com'],
    trustedProxies: ['10.0.0.1'],
    internalPort: null,
    internalHost: '127.0.0.1',
  });

  it('host names', () => {
    expect(hostName('Chat.Example.com:8443')).toBe('chat.example.com');
    expect(hostName('[::1]:80')).toBe('[::1]');
    for (const ok of ['chat.example.com', '127.0.0.1:1', '[::1]', 'localhost:3000', 'a.localhost', '192.168.1.9'])
      expect(() => edge.checkHost(ok), ok).not.toThrow();
    for (const bad of ['', 'evil.example', 'chat.example.com.evil.example', 'localhost.evil.example', '127.0.0.1.nip.io']) {
      expect(() => edge.checkHost(bad), bad).toThrow(expect.objectContaining({ code: 'host_not_allowed' }));
    }
  });

  it('origins: none, the own origin and listed ones; exact match only', () => {
    for (const ok of ['', 'https://app.example.com', 'http://chat.example.com', 'https://chat.example.com'])
      expect(() => edge.checkOrigin(ok, 'chat.example.com'), ok).not.toThrow();
    for (const bad of [
      'null',
      'https://app.example.com.evil',
      'https://evil.com',
      'http://app.example.com',
      'https://chat.example.com:444',
    ]) {
      expect(() => edge.checkOrigin(bad, 'chat.example.com'), bad).toThrow(expect.objectContaining({ code: 'origin_not_allowed' }));
    }
  });

  it('client address: X-Forwarded-For only from a trusted proxy, last hop', () => {
    expect(edge.clientAddress('203.0.113.5', '1.2.3.4')).toBe('203.0.113.5');
    expect(edge.clientAddress('10.0.0.1', '1.2.3.4, 198.51.100.7')).toBe('198.51.100.7');
    expect(edge.clientAddress('10.0.0.1', 'garbage')).toBe('10.0.0.1');
  });
});

describe('payload numbers', () => {
  const limits = { maxPayloadBytes: 65536, maxNumberChars: 40 };
  it('plain decimal length', () => {
    expect(plainDecimalLength(5e-324)).toBe(326);
    expect(plainDecimalLength(1e21)).toBe(22);
    expect(plainDecimalLength(-1.5e-7)).toBe(11);
    expect(plainDecimalLength(123.25)).toBe(6);
    expect(plainDecimalLength(1.5e22)).toBe(23);
  });
  it('stored size counts what PostgreSQL prints', () => {
    expect(checkPayload({ a: [1, 2] }, limits, 'invalid_frame')).toEqual({ bytes: 11, storedBytes: '{"a": [1, 2]}'.length });
    expect(checkPayload(1e-20, limits, 'invalid_frame').storedBytes).toBe(22);
  });
});

describe('log limiter', () => {
  it('logs at most the budget per kind and interval, then reports what it suppressed', () => {
    const lines: any[] = [];
    let now = 0;
    const log = createLogger({
      level: 'info',
      nodeId: 't',
      role: 'test',
      destination: { write: (l: string) => lines.push(JSON.parse(l)) },
    });
    const limiter = new LogLimiter(log, 3, 1000, () => now);
    for (let i = 0; i < 10; i++) limiter.write('warn', 'a', { i }, 'm');
    limiter.write('warn', 'b', {}, 'm');
    expect(lines.filter((l) => l.kind === 'a')).toHaveLength(3);
    expect(lines.filter((l) => l.kind === 'b')).toHaveLength(1);
    now = 1000;
    limiter.write('warn', 'a', {}, 'm');
    expect(lines[lines.length - 1]).toMatchObject({ kind: 'a', suppressed_before: 7 });
  });
});

describe('uWS callbacks are guarded', () => {
  const log = createLogger({ level: 'silent', nodeId: 't', role: 'test' });
  const metrics = createMetrics({ nodeId: 't', defaultMetrics: false });
  const config = loadConfig({});
  const boom = () => {
    throw new Error('boom');
  };
  const throwing = new Proxy({}, { get: () => boom });

  it('no WebSocket callback lets an exception escape; each one is counted', async () => {
    const behavior = createWsBehavior({
      config,
      log,
      metrics,
      logs: new LogLimiter(log),
      sockets: new Set(),
      edge: throwing,
    } as unknown as WsDeps);
    const res = { cork: (fn: () => void) => fn(), writeStatus: () => ({ end: () => {} }) };
    expect(() => behavior.upgrade!(res as never, throwing as never, {} as never)).not.toThrow();
    for (const cb of ['open', 'message', 'drain', 'close'] as const) {
      expect(() => (behavior[cb] as (...a: unknown[]) => void)(throwing, new ArrayBuffer(1), false), cb).not.toThrow();
    }
    const counted = (await metrics.internalErrors.get()).values.map((v) => v.labels.where);
    expect(counted).toEqual(expect.arrayContaining(['ws_upgrade', 'ws_open', 'ws_message', 'ws_drain', 'ws_close']));
  });

  it('an HTTP route whose request object throws answers 500 and does not throw', () => {
    const written: string[] = [];
    const res = {
      onAborted: () => {},
      cork: (fn: () => void) => fn(),
      writeStatus: (s: string) => written.push(s),
      writeHeader: () => {},
      end: () => written.push('end'),
      getRemoteAddressAsText: () => new TextEncoder().encode('127.0.0.1').buffer,
      getWriteOffset: () => 0,
    };
    const route = createHttpHandler({
      metrics,
      maxBodyBytes: 1000,
      newTraceId: () => 't',
      edge: createEdgePolicy(config.edge),
      logs: new LogLimiter(log),
      budget: new ResponseBudget(1 << 20),
      stallMs: 1000,
    });
    const handler = route('GET /x', () => ({ status: 200 }));
    expect(() => handler(res as never, throwing as never)).not.toThrow();
    expect(written[0]).toMatch(/^500/);
  });
});
