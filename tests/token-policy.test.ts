/**
 * The gateway's token rules, against a real in-process server: maximum lifetime, issuer and
 * audience, RS256/ES256 public keys (and the algorithm-confusion attack), JWKS from a file and over
 * HTTP (key rotation, a JWKS endpoint that never answers), sockets closed when their token expires
 * (4502) and the SDK's refresh, and what auth failures write to the log. Each test fails when its
 * rule is removed from gateway/auth.ts or gateway/ws-handler.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { Socket } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import WebSocket from 'ws';
import { SignJWT, decodeJwt, exportJWK, exportSPKI, generateKeyPair, type CryptoKey, type JWK, type JWTPayload } from 'jose';
import { BACKENDS, LogSink, createConversation, http, startTestServer, type Backend, type TestServer } from './harness/server.js';
import { TestClient, type Frame } from './harness/ws-client.js';
import { RealChatClient, type ConnectionState, type Envelope, type StateChange, type WebSocketConstructor } from '../client/index.js';
import { until } from './harness/until.js';

const DAY_S = 24 * 3600;
/**
 * The database does not matter to these rules (only the SDK test, which resumes from the database,
 * runs on both backends). A fresh database on the run's PostgreSQL starts in under a second, where an
 * in-process PGlite takes 5-25 s on a loaded 2-core machine.
 */
const BACKEND: Backend = 'postgres';
const nowS = () => Math.floor(Date.now() / 1000);
const utf8 = (s: string) => new TextEncoder().encode(s);

interface Claims {
  sub?: string;
  exp?: number;
  iss?: string;
  aud?: string | string[];
}

/** Signs `claims` (sub: a fresh UUID, exp: 1 h ahead unless given; `undefined` values are left out). */
async function sign(alg: 'HS256' | 'RS256' | 'ES256', key: CryptoKey | Uint8Array, claims: Claims = {}, kid?: string): Promise<string> {
  const payload: JWTPayload = { sub: randomUUID(), exp: nowS() + 3600, ...claims };
  for (const k of Object.keys(payload)) if (payload[k] === undefined) delete payload[k];
  return new SignJWT(payload)
    .setProtectedHeader({ alg, typ: 'JWT', ...(kid ? { kid } : {}) })
    .setIssuedAt()
    .sign(key);
}

/** An unsigned token (`alg: none`) that would otherwise be valid. */
function noneToken(claims: Claims = {}): string {
  const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
  return `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ sub: randomUUID(), exp: nowS() + 3600, ...claims })}.`;
}

/** REST status of an authenticated request. */
async function restStatus(s: TestServer, token: string): Promise<number> {
  return (await http(s, 'GET', '/v1/conversations', { token })).status;
}

interface HelloResult {
  /** The first welcome or error frame. */
  frame: Frame;
  /** Close code for a refused hello (null when welcomed). */
  closeCode: number | null;
  ms: number;
}

/** Opens a socket, says hello, and reports the answer (waiting for the close when refused). */
async function hello(s: TestServer, token: string, timeoutMs = 10_000): Promise<HelloResult> {
  const started = Date.now();
  const c = await TestClient.open(s.wsUrl);
  try {
    c.send({ type: 'hello', token });
    const frame = await c.waitFor((f) => f.type === 'welcome' || f.type === 'error', timeoutMs);
    const ms = Date.now() - started;
    if (frame.type === 'welcome') return { frame, closeCode: null, ms };
    return { frame, closeCode: await c.waitClosed(5000), ms };
  } finally {
    c.close();
  }
}

async function expectAccepted(s: TestServer, token: string): Promise<void> {
  expect(await restStatus(s, token)).toBe(200);
  const r = await hello(s, token);
  expect(r.frame, JSON.stringify(r.frame)).toMatchObject({ type: 'welcome', user_id: decodeJwt(token).sub });
}

async function expectRefused(s: TestServer, token: string): Promise<void> {
  expect(await restStatus(s, token)).toBe(401);
  const r = await hello(s, token);
  expect(r.frame, JSON.stringify(r.frame)).toMatchObject({ type: 'error', code: 'unauthorized' });
  expect(r.closeCode).toBe(4500);
}

/** A JWKS endpoint on 127.0.0.1: serves `keys` (mutable), or never answers when `hang` is set. */
class JwksServer {
  keys: JWK[] = [];
  hang = false;
  status = 200;
  fetches = 0;
  private readonly sockets = new Set<Socket>();
  private constructor(private readonly server: Server) {}

  static async start(): Promise<JwksServer> {
    let self: JwksServer | null = null;
    const server = createServer((_req, res) => {
      self!.fetches++;
      if (self!.hang) return; // never answers
      if (self!.status !== 200) {
        res.writeHead(self!.status, { 'content-type': 'text/plain' });
        res.end('identity provider unavailable');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys: self!.keys }));
    });
    self = new JwksServer(server);
    server.on('connection', (sock) => {
      self!.sockets.add(sock);
      sock.on('close', () => self!.sockets.delete(sock));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return self;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/.well-known/jwks.json`;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

async function publicJwk(key: CryptoKey, kid: string, alg: string): Promise<JWK> {
  return { ...(await exportJWK(key)), kid, alg, use: 'sig' };
}

/** Servers with only a public key / JWKS: no HS256 secret (the harness always sets one), no dev auth. */
const NO_SECRET = { REALCHAT_JWT_SECRET: '', REALCHAT_DEV_AUTH: 'false' };

const servers: TestServer[] = [];
async function server(...args: Parameters<typeof startTestServer>): Promise<TestServer> {
  const s = await startTestServer(...args);
  servers.push(s);
  return s;
}
afterAll(async () => {
  await Promise.all(servers.map((s) => s.close()));
});

describe('token lifetime (clock tolerance 0)', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await server(BACKEND, { REALCHAT_JWT_CLOCK_TOLERANCE_S: '0' });
  });

  it('refuses a token whose exp is further ahead than REALCHAT_JWT_MAX_TTL_S (default 24 h); accepts 1 h', async () => {
    const key = utf8(s.secret);
    await expectRefused(s, await sign('HS256', key, { exp: nowS() + 30 * DAY_S }));
    await expectRefused(s, await sign('HS256', key, { exp: nowS() + DAY_S + 120 }));
    await expectAccepted(s, await sign('HS256', key, { exp: nowS() + 3600 }));
    await expectAccepted(s, await sign('HS256', key, { exp: nowS() + DAY_S - 60 }));
  });

  it('closes a socket whose token expires while open: error unauthorized, then close 4502; the token is refused afterwards', async () => {
    const { token } = await s.token(undefined, 2);
    const expMs = decodeJwt(token).exp! * 1000;
    const c = await TestClient.connect(s.wsUrl, token);
    const opened = Date.now();
    const code = await c.waitClosed(4500);
    const closedAt = Date.now();
    expect(code).toBe(4502);
    expect(closedAt - opened).toBeLessThan(4000);
    // Not before the token expired, and at most one sweep (1 s) plus slack after it.
    expect(closedAt).toBeGreaterThanOrEqual(expMs - 50);
    expect(closedAt).toBeLessThan(expMs + 2000);
    const errors = c.frames.filter((f) => f.type === 'error');
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ code: 'unauthorized' });
    expect(c.frames.at(-1)).toBe(errors[0]); // the error frame is the last thing before the close
    // A fresh connection (and REST) with the same token is refused now.
    await expectRefused(s, token);
  });
});

describe('token lifetime (default clock tolerance, 30 s)', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await server(BACKEND);
  });

  it('a token accepted at hello is not closed as expired a moment later (hello and the 4502 sweep agree on the tolerance)', async () => {
    // Expired 5 s ago by the server's clock: within the 30 s tolerance, so REST still accepts it.
    const { token } = await s.token(undefined, -5);
    expect(await restStatus(s, token)).toBe(200);
    const c = await TestClient.open(s.wsUrl);
    c.send({ type: 'hello', token });
    const first = await c.waitFor((f) => f.type === 'welcome' || f.type === 'error');
    if (first.type === 'error') {
      // Refusing an already expired token at hello is consistent too.
      expect(first.code).toBe('unauthorized');
      expect(await c.waitClosed()).toBe(4500);
      return;
    }
    // Welcomed: the socket must then live as long as the token is accepted, not be cut by the next
    // sweep (which would make an SDK whose provider hands out that token reconnect once a second).
    await new Promise((r) => setTimeout(r, 2500));
    const closed = c.closeCode;
    c.close();
    expect(closed, `welcomed, then closed ${closed} ${c.closeReason}; frames: ${c.tail()}`).toBeNull();
  });
});

describe('issuer and audience', () => {
  const ISS = 'https://idp.example.test/';
  const AUD = 'realchat-api';
  let s: TestServer;
  beforeAll(async () => {
    s = await server(BACKEND, { REALCHAT_JWT_ISSUER: ISS, REALCHAT_JWT_AUDIENCE: AUD, REALCHAT_DEV_AUTH: 'true' });
  });

  it('refuses tokens lacking iss/aud or carrying wrong values; accepts correct ones and dev tokens', async () => {
    const key = utf8(s.secret);
    const refused: Array<[string, Claims]> = [
      ['neither', {}],
      ['no aud', { iss: ISS }],
      ['no iss', { aud: AUD }],
      ['wrong iss', { iss: 'https://evil.example.test/', aud: AUD }],
      ['iss differing by a trailing slash', { iss: ISS.replace(/\/$/, ''), aud: AUD }],
      ['wrong aud', { iss: ISS, aud: 'another-api' }],
      ['aud list without ours', { iss: ISS, aud: ['a', 'b'] }],
    ];
    for (const [name, claims] of refused) {
      const token = await sign('HS256', key, claims);
      expect(await restStatus(s, token), name).toBe(401);
      const r = await hello(s, token);
      expect([r.frame.type, r.frame.code, r.closeCode], name).toEqual(['error', 'unauthorized', 4500]);
    }
    await expectAccepted(s, await sign('HS256', key, { iss: ISS, aud: AUD }));
    await expectAccepted(s, await sign('HS256', key, { iss: ISS, aud: ['other-api', AUD] }));

    // The harness mints tokens without iss/aud: refused here.
    expect(await restStatus(s, (await s.token()).token)).toBe(401);

    // Dev tokens carry both and work, over REST and WebSocket.
    const dev = await http(s, 'POST', '/v1/dev/token', { body: { name: 'alice' } });
    expect(dev.status).toBe(200);
    const claims = decodeJwt(dev.body.token);
    expect(claims.iss).toBe(ISS);
    expect([claims.aud].flat()).toContain(AUD);
    await expectAccepted(s, dev.body.token);
  });
});

describe.each(['RS256', 'ES256'] as const)('%s public key via REALCHAT_JWT_PUBLIC_KEY, no secret', (alg) => {
  let s: TestServer;
  let pem: string;
  let privateKey: CryptoKey;
  beforeAll(async () => {
    const pair = await generateKeyPair(alg, { extractable: true });
    privateKey = pair.privateKey;
    pem = await exportSPKI(pair.publicKey);
    s = await server(BACKEND, { ...NO_SECRET, REALCHAT_JWT_PUBLIC_KEY: pem });
  });

  it('accepts tokens signed with the key; refuses other keys, other algorithms, alg none and HS256 keyed with the PEM text', async () => {
    await expectAccepted(s, await sign(alg, privateKey));
    // Another key pair of the same kind.
    const other = await generateKeyPair(alg);
    await expectRefused(s, await sign(alg, other.privateKey));
    // The other asymmetric algorithm (not pinned for this key).
    const otherAlg = alg === 'RS256' ? 'ES256' : 'RS256';
    await expectRefused(s, await sign(otherAlg, (await generateKeyPair(otherAlg)).privateKey));
    // Algorithm confusion: HS256 with the public key's PEM text (as published) as the HMAC secret.
    await expectRefused(s, await sign('HS256', utf8(pem)));
    await expectRefused(s, await sign('HS256', utf8(pem.trim())));
    // Unsigned.
    await expectRefused(s, noneToken());
    // No secret is configured, so HS256 tokens signed with the harness' secret are refused too.
    await expectRefused(s, (await s.token()).token);
    // Dev auth is off.
    expect((await http(s, 'POST', '/v1/dev/token', { body: {} })).status).toBe(404);
  });
});

describe('JWKS from a file', () => {
  let s: TestServer;
  let dir: string;
  let rsa: CryptoKey;
  let ec: CryptoKey;
  beforeAll(async () => {
    const r = await generateKeyPair('RS256', { extractable: true });
    const e = await generateKeyPair('ES256', { extractable: true });
    rsa = r.privateKey;
    ec = e.privateKey;
    dir = mkdtempSync(join(tmpdir(), 'rc-jwks-'));
    const file = join(dir, 'jwks.json');
    writeFileSync(
      file,
      JSON.stringify({ keys: [await publicJwk(r.publicKey, 'rsa-1', 'RS256'), await publicJwk(e.publicKey, 'ec-1', 'ES256')] }),
    );
    s = await server(BACKEND, { ...NO_SECRET, REALCHAT_JWT_JWKS: file });
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('accepts tokens signed by a key in the set (RS256 and ES256); refuses unknown kids, wrong keys and HS256', async () => {
    await expectAccepted(s, await sign('RS256', rsa, {}, 'rsa-1'));
    await expectAccepted(s, await sign('ES256', ec, {}, 'ec-1'));
    const stranger = await generateKeyPair('RS256');
    await expectRefused(s, await sign('RS256', stranger.privateKey, {}, 'rsa-2')); // kid not in the set
    await expectRefused(s, await sign('RS256', stranger.privateKey, {}, 'rsa-1')); // a known kid, another key
    await expectRefused(s, await sign('HS256', utf8(s.secret))); // no secret on this node
    await expectRefused(s, noneToken());
    // The max TTL applies to JWKS-verified tokens as well.
    await expectRefused(s, await sign('RS256', rsa, { exp: nowS() + 30 * DAY_S }, 'rsa-1'));
  });
});

describe('JWKS over HTTP', () => {
  let jwks: JwksServer;
  let s: TestServer;
  beforeAll(async () => {
    jwks = await JwksServer.start();
    s = await server(BACKEND, { ...NO_SECRET, REALCHAT_JWT_JWKS: jwks.url });
  });
  afterAll(async () => {
    await jwks?.close();
  });

  it('key rotation: an unknown kid is refused without refetching during the cooldown; after it, the new key is fetched and accepted', async () => {
    const a = await generateKeyPair('RS256', { extractable: true });
    const b = await generateKeyPair('ES256', { extractable: true });
    jwks.keys = [await publicJwk(a.publicKey, 'key-a', 'RS256')];
    expect(await restStatus(s, await sign('RS256', a.privateKey, {}, 'key-a'))).toBe(200);
    expect(jwks.fetches).toBe(1);
    // Key B is not published yet.
    expect(await restStatus(s, await sign('ES256', b.privateKey, {}, 'key-b'))).toBe(401);
    // Published now, but the set was fetched less than the cooldown (30 s) ago: still refused, and a
    // flood of tokens with made-up kids does not turn into a flood of fetches.
    jwks.keys = [...jwks.keys, await publicJwk(b.publicKey, 'key-b', 'ES256')];
    const flood = await Promise.all(
      Array.from({ length: 20 }, async (_, i) => restStatus(s, await sign('ES256', b.privateKey, {}, i === 0 ? 'key-b' : `made-up-${i}`))),
    );
    expect(flood.every((st) => st === 401)).toBe(true);
    expect(jwks.fetches).toBe(1);
    // 31 s later (jose reads the cooldown from Date.now; tokens and exp checks use `new Date()`).
    const realNow = Date.now;
    Date.now = () => realNow.call(Date) + 31_000;
    try {
      const tokenB = await sign('ES256', b.privateKey, {}, 'key-b');
      expect(await restStatus(s, tokenB)).toBe(200);
      expect(jwks.fetches).toBe(2);
      const r = await hello(s, tokenB);
      expect(r.frame.type).toBe('welcome');
      // Key A is still published: both keys work.
      expect(await restStatus(s, await sign('RS256', a.privateKey, {}, 'key-a'))).toBe(200);
    } finally {
      Date.now = realNow;
    }
  });
});

describe('a JWKS endpoint that fails (never answers, or answers 503)', () => {
  let jwks: JwksServer;
  let s: TestServer;
  beforeAll(async () => {
    jwks = await JwksServer.start();
    jwks.hang = true;
    // The harness' HS256 secret stays configured: HS256 tokens must keep working meanwhile.
    s = await server(BACKEND, { REALCHAT_JWT_JWKS: jwks.url, REALCHAT_DEV_AUTH: 'false' });
  });
  afterAll(async () => {
    await jwks?.close();
  });

  it('hello is answered within a bounded time (not the hello timeout), REST too, and the server keeps serving', async () => {
    const { privateKey } = await generateKeyPair('RS256');
    const token = await sign('RS256', privateKey, {}, 'k1');
    const pending = hello(s, token, 8000);
    const restStarted = Date.now();
    const pendingRest = http(s, 'GET', '/v1/conversations', { token }).then((res) => ({
      status: res.status,
      ms: Date.now() - restStarted,
    }));
    // While the fetch hangs, other work goes on.
    const t0 = Date.now();
    expect((await http(s, 'GET', '/healthz')).status).toBe(200);
    const hs = await s.token();
    const ok = await hello(s, hs.token);
    expect(ok.frame.type).toBe('welcome');
    expect(Date.now() - t0).toBeLessThan(1500);

    const r = await pending;
    expect(jwks.fetches).toBeGreaterThanOrEqual(1);
    expect(r.frame.type).toBe('error');
    expect(['unavailable', 'unauthorized']).toContain(r.frame.code);
    // The fetch timeout is 3 s (jose's own default would be 5 s; the hello timeout is 10 s).
    expect(r.ms).toBeLessThan(4500);
    expect(r.closeCode).not.toBeNull();
    expect(r.closeCode).not.toBe(4003); // not the hello timeout

    const rest = await pendingRest;
    expect(rest.ms).toBeLessThan(4500);
    expect([401, 503]).toContain(rest.status);
  });

  it('a JWKS endpoint that answers 503 makes hello fail as unavailable (4004, the SDK retries), not unauthorized (4500, the SDK stops)', async () => {
    jwks.hang = false;
    jwks.status = 503;
    try {
      const { privateKey } = await generateKeyPair('RS256');
      const token = await sign('RS256', privateKey, {}, 'k1');
      const before = jwks.fetches;
      const r = await hello(s, token);
      expect(jwks.fetches).toBeGreaterThan(before);
      expect([r.frame.type, r.frame.code, r.closeCode]).toEqual(['error', 'unavailable', 4004]);
      expect((await http(s, 'GET', '/v1/conversations', { token })).status).toBe(503);
    } finally {
      jwks.status = 200;
    }
  });
});

describe.each(BACKENDS)('SDK refresh after 4502 (%s)', (backend) => {
  let s: TestServer;
  const clients: RealChatClient[] = [];
  beforeAll(async () => {
    s = await server(backend, { REALCHAT_JWT_CLOCK_TOLERANCE_S: '0' });
  });
  afterAll(() => {
    for (const c of clients) c.close();
  });

  function client(token: ConstructorParameters<typeof RealChatClient>[0]['token']) {
    const c = new RealChatClient({
      url: s.wsUrl,
      token,
      WebSocket: WebSocket as unknown as WebSocketConstructor,
      reconnectBaseMs: 50,
      reconnectCapMs: 500,
    });
    clients.push(c);
    const messages: Envelope[] = [];
    const states: StateChange[] = [];
    const welcomes: string[] = [];
    c.on('message', (m) => messages.push(m));
    c.on('state', (ch) => states.push(ch));
    c.on('welcome', (w) => welcomes.push(w.session_id));
    return { c, messages, states, welcomes };
  }

  it('with a token provider: reconnects with a fresh token and resumes; a message sent meanwhile arrives exactly once', async () => {
    const alice = await s.token();
    const bob = await s.token();
    const conv = await createConversation(s, alice.token, [bob.userId]);
    const issued: string[] = [];
    let sentWhileAway: number | null = null;
    const a = client(async () => {
      if (issued.length === 1) {
        // Called again after the 4502: bob's message is committed while alice is away.
        sentWhileAway = (
          await http(s, 'POST', `/v1/conversations/${conv}/messages`, {
            token: bob.token,
            body: { idempotency_key: 'away', payload: { text: 'm2' } },
          })
        ).status;
      }
      const t = (await s.token(alice.userId, 2)).token;
      issued.push(t);
      return t;
    });
    await a.c.connect();
    const first = await http(s, 'POST', `/v1/conversations/${conv}/messages`, {
      token: bob.token,
      body: { idempotency_key: 'before', payload: { text: 'm1' } },
    });
    expect(first.status).toBe(201);
    await until('alice receives m1', () => a.messages.length === 1, 5000);
    await until('alice is welcomed again with a fresh token', () => a.welcomes.length >= 2, 6000);
    await until('alice receives m2', () => a.messages.length >= 2, 5000);
    await new Promise((r) => setTimeout(r, 300)); // room for a duplicate to show up
    expect(sentWhileAway).toBe(201);
    expect(issued.length).toBeGreaterThanOrEqual(2);
    expect(new Set(issued).size).toBe(issued.length);
    const texts = a.messages.filter((m) => m.conversation_id === conv).map((m) => (m.payload as { text: string }).text);
    expect(texts).toEqual(['m1', 'm2']);
    expect(a.messages.map((m) => m.sequence_number)).toEqual([1, 2]);
    const seen = a.states.map((x) => x.state);
    expect(seen).toContain('reconnecting');
    expect(seen).not.toContain('closed');
    expect(a.states.find((x) => x.state === 'reconnecting')?.reason).toMatch(/^4502/);
    a.c.close();
  });

  it('with a plain string token: stops in state closed with an unauthorized error', async () => {
    const alice = await s.token(undefined, 2);
    const a = client(alice.token);
    await a.c.connect();
    await until('state closed', () => a.c.connectionState === ('closed' as ConnectionState), 5000);
    const closed = a.states.at(-1)!;
    expect(closed.state).toBe('closed');
    expect(closed.reason).toMatch(/^4502/);
    expect(closed.error?.code).toBe('unauthorized');
    expect(a.states.map((x) => x.state)).not.toContain('reconnecting');
    expect(a.welcomes).toHaveLength(1);
  });
});

describe('auth failure logging', () => {
  const logs = new LogSink();
  let s: TestServer;
  beforeAll(async () => {
    s = await server(BACKEND, {}, {}, { logs });
  });
  const refusedLines = () => logs.find((l) => l.kind === 'refused:unauthorized');

  it('a bad token is logged as refused:unauthorized at warn, without the token; a burst of 50 is rate limited', async () => {
    const forged = await sign('HS256', utf8('not-the-server-secret-0123456789abcdef'));
    const garbage = `garbage-${randomUUID()}-token`;
    const expired = (await s.token(undefined, -120)).token;
    for (const token of [forged, garbage, expired]) {
      expect(await restStatus(s, token)).toBe(401);
      const r = await hello(s, token);
      expect(r.closeCode).toBe(4500);
    }
    const lines = refusedLines();
    expect(lines.length).toBeGreaterThanOrEqual(2);
    for (const l of lines) expect(l.level).toBe('warn');
    const all = logs.lines.map((l) => JSON.stringify(l)).join('\n');
    for (const token of [forged, garbage, expired]) {
      expect(all).not.toContain(token);
      // Nor the signature (the part that makes a stolen token usable).
      const sig = token.split('.')[2];
      if (sig) expect(all).not.toContain(sig);
    }

    const before = refusedLines().length;
    const bad = await Promise.all(Array.from({ length: 50 }, () => sign('HS256', utf8('wrong-secret-wrong-secret-wrong-secret!'))));
    const statuses = await Promise.all(bad.map((t) => restStatus(s, t)));
    expect(statuses.every((st) => st === 401)).toBe(true);
    const after = refusedLines().length;
    // The limiter allows 10 lines per kind per 10 s; the earlier lines used part of the same window.
    expect(after).toBeLessThanOrEqual(11);
    expect(after - before).toBeLessThan(50);
    const text = logs.lines.map((l) => JSON.stringify(l)).join('\n');
    for (const t of bad) expect(text).not.toContain(t.split('.')[2]);
  });
});
