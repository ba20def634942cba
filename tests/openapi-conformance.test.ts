/**
 * docs/openapi.yaml is kept true by this file: a real server answers valid and invalid requests on
 * every route, and every answer must be documented for its operation (status, content type, body
 * schema, headers). The document itself is checked for shape, references, routes and error codes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { createECDH, randomBytes, randomUUID } from 'node:crypto';
import { parse } from 'yaml';
import { ERROR_CODES } from '../common/errors.js';
import { findOpenApiFile, loadOpenApiDocument } from '../gateway/openapi.js';
import { REST_ROUTES } from '../gateway/server.js';
import { BACKENDS, startTestServer, type TestServer } from './harness/server.js';
import { HARDENING_HEADERS, OpenApiValidator, ptr, rawRequest, resolvePointer, type Json, type RawResponse } from './harness/openapi.js';

/** REALCHAT_ADMIN_TOKEN of the servers below (the admin routes). */
const REGION_SECRET = randomBytes(32).toString('hex');
const ADMIN_TOKEN = randomBytes(32).toString('hex');
const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];
/** WebSocket-only codes: never an HTTP answer. */
const WS_ONLY_CODES = new Set(['invalid_frame']);
/** Body size beyond the default request limit (max(4 x 64 KiB, 256 KiB)). */
const OVERSIZE_BODY_BYTES = 300 * 1024;

function operations(doc: Json): Array<{ method: string; template: string; op: Json }> {
  const out: Array<{ method: string; template: string; op: Json }> = [];
  for (const [template, item] of Object.entries(doc.paths as Json)) {
    for (const method of HTTP_METHODS)
      if ((item as Json)[method]) out.push({ method: method.toUpperCase(), template, op: (item as Json)[method] });
  }
  return out;
}

/** Every `$ref` in the document, with where it sits. */
function refs(node: unknown, at = '#', out: Array<{ at: string; ref: string }> = []): Array<{ at: string; ref: string }> {
  if (Array.isArray(node)) {
    node.forEach((x, i) => {
      refs(x, `${at}/${i}`, out);
    });
  } else if (node && typeof node === 'object') {
    for (const [k, v] of Object.entries(node)) {
      if (k === '$ref' && typeof v === 'string') out.push({ at, ref: v });
      else refs(v, `${at}/${k.replace(/~/g, '~0').replace(/\//g, '~1')}`, out);
    }
  }
  return out;
}

/** The REST routes gateway/server.ts registers (uWS `:id` becomes `{id}`); `/*` routes are not API routes. */
function serverRoutes(): string[] {
  return REST_ROUTES.map((r) => `${r.method} ${r.path.replace(/:([A-Za-z_]+)/g, '{$1}')}`).sort();
}

describe('docs/openapi.yaml', () => {
  const doc = loadOpenApiDocument();
  const v = new OpenApiValidator(doc);

  it('is an OpenAPI 3.1 document that gateway/openapi.ts finds and parses', () => {
    expect(findOpenApiFile()).toMatch(/docs[\\/]openapi\.yaml$/);
    expect(doc.openapi).toMatch(/^3\.1\.\d+$/);
    expect(typeof (doc.info as Json).title).toBe('string');
    expect(typeof (doc.info as Json).version).toBe('string');
    expect(Object.keys(doc.paths as Json).length).toBeGreaterThan(0);
    // Plain YAML: what /v1/openapi.json serves is exactly what the file says.
    expect(JSON.parse(JSON.stringify(doc))).toEqual(doc);
  });

  it('every operation has an operationId, documented responses and only known security schemes', () => {
    const ids = new Set<string>();
    const schemes = Object.keys((doc.components as Json)?.securitySchemes ?? {});
    for (const { method, template, op } of operations(doc)) {
      const name = `${method} ${template}`;
      expect(op.operationId, name).toBeTypeOf('string');
      expect(ids.has(op.operationId), `duplicate operationId ${op.operationId}`).toBe(false);
      ids.add(op.operationId);
      const statuses = Object.keys(op.responses ?? {});
      expect(statuses.length, `${name} has no responses`).toBeGreaterThan(0);
      for (const s of statuses) expect(s, name).toMatch(/^[1-5]\d\d$/);
      expect(
        statuses.some((s) => s.startsWith('2')),
        `${name} has no success response`,
      ).toBe(true);
      expect(statuses, `${name} must document 500`).toContain('500');
      for (const req of op.security ?? []) for (const scheme of Object.keys(req)) expect(schemes, name).toContain(scheme);
      // Path parameters of the template are declared (on the path item or the operation).
      const declared = [...((doc.paths as Json)[template].parameters ?? []), ...(op.parameters ?? [])]
        .map((p: Json) => (p.$ref ? (resolvePointer(doc, p.$ref) as Json) : p))
        .filter((p: Json) => p.in === 'path')
        .map((p: Json) => p.name);
      for (const m of template.matchAll(/\{([^}]+)\}/g)) expect(declared, `${name}: path parameter ${m[1]}`).toContain(m[1]);
    }
  });

  it('every operation documents the answers of the edge checks, every authenticated one 401, every request body 400 and 413, every 429/503 a Retry-After', () => {
    for (const { method, template, op } of operations(doc)) {
      const name = `${method} ${template}`;
      if ((op.security ?? []).length > 0) expect(Object.keys(op.responses), name).toContain('401');
      if (op.requestBody) {
        expect(Object.keys(op.responses), name).toContain('400');
        expect(Object.keys(op.responses), name).toContain('413');
      }
      // Checked before any route runs: the Host guard, the browser Origin, the response budget.
      expect(Object.keys(op.responses), `${name}: host_not_allowed`).toContain('421');
      expect(Object.keys(op.responses), `${name}: origin_not_allowed`).toContain('403');
      expect(Object.keys(op.responses), `${name}: unavailable`).toContain('503');
      for (const s of ['429', '503']) {
        const r = v.responseFor(method, template, Number(s));
        if (r) expect(Object.keys(r.response.headers ?? {}), `${name} ${s}`).toContain('Retry-After');
      }
    }
  });

  it('every $ref is local and resolves', () => {
    const all = refs(doc);
    expect(all.length).toBeGreaterThan(10);
    for (const { at, ref } of all) {
      expect(ref.startsWith('#/'), `${at}: non-local $ref ${ref}`).toBe(true);
      expect(resolvePointer(doc, ref), `${at}: $ref ${ref} does not resolve`).toBeDefined();
    }
  });

  it('every schema compiles (JSON Schema 2020-12, strict)', () => {
    for (const name of Object.keys((doc.components as Json).schemas)) v.schemaAt(ptr('components', 'schemas', name));
    for (const { method, template, op } of operations(doc)) {
      for (const [status] of Object.entries(op.responses)) {
        const { response, pointer } = v.responseFor(method, template, Number(status))!;
        for (const media of Object.keys(response.content ?? {})) v.schemaAt(`${pointer}/${ptr('content', media, 'schema').slice(2)}`);
      }
      for (const media of Object.keys(op.requestBody?.content ?? {})) {
        v.schemaAt(ptr('paths', template, method.toLowerCase(), 'requestBody', 'content', media, 'schema'));
      }
    }
  });

  it('documents exactly the REST routes gateway/server.ts registers', () => {
    const documented = operations(doc)
      .map(({ method, template }) => `${method} ${template}`)
      .sort();
    expect(documented).toEqual(serverRoutes());
  });

  it('the error codes are the registry in common/errors.ts, each under its own HTTP status', () => {
    const httpCodes = Object.keys(ERROR_CODES).filter((c) => !WS_ONLY_CODES.has(c));
    expect([...((doc.components as Json).schemas.ErrorCode.enum as string[])].sort()).toEqual(httpCodes.sort());
    // Every documented error response accepts only codes whose registry status is that status.
    for (const { method, template, op } of operations(doc)) {
      for (const status of Object.keys(op.responses).filter((s) => Number(s) >= 400)) {
        const { pointer } = v.responseFor(method, template, Number(status))!;
        const validate = v.schemaAt(`${pointer}/${ptr('content', 'application/json', 'schema').slice(2)}`);
        const accepted = httpCodes.filter((code) => validate({ error: { code, message: 'x' } }));
        expect(accepted.length, `${method} ${template} ${status} accepts no code`).toBeGreaterThan(0);
        for (const code of accepted)
          expect(ERROR_CODES[code as keyof typeof ERROR_CODES].status, `${method} ${template} ${status} accepts ${code}`).toBe(
            Number(status),
          );
      }
    }
  });
});

function testVapidKeys(): Record<string, string> {
  const ecdh = createECDH('prime256v1');
  const pub = ecdh.generateKeys();
  const priv = Buffer.alloc(32);
  const raw = ecdh.getPrivateKey();
  raw.copy(priv, 32 - raw.length);
  return { REALCHAT_VAPID_PUBLIC_KEY: pub.toString('base64url'), REALCHAT_VAPID_PRIVATE_KEY: priv.toString('base64url') };
}

describe.each(BACKENDS)('REST answers conform to docs/openapi.yaml (%s)', (backend) => {
  let s: TestServer;
  const v = new OpenApiValidator();
  let alice: { userId: string; token: string };
  let bob: { userId: string; token: string };
  let conv: string;

  beforeAll(async () => {
    s = await startTestServer(backend, {
      HOST: '127.0.0.1',
      REALCHAT_MAX_ROOM_MEMBERS: '4',
      // One user's burst is spent by the 429 case; the others stay well below it.
      REALCHAT_SENDS_PER_S: '1',
      REALCHAT_SEND_BURST: '40',
      // Web Push on both backends (the embedded default would generate a pair; PostgreSQL mode needs one).
      ...testVapidKeys(),
      // The admin routes (API keys, webhooks); webhook URLs on loopback for the receiver-less cases here.
      REALCHAT_ADMIN_TOKEN: ADMIN_TOKEN,
      REALCHAT_WEBHOOK_ALLOW_PRIVATE: '1',
      // Forwarded sends from other regions (docs/multi-region.md).
      REALCHAT_REGION_SECRET: REGION_SECRET,
    });
    alice = await s.token();
    bob = await s.token();
  });
  afterAll(async () => s?.close());

  /** Sends a request, checks the answer against the document, returns status and parsed body. */
  async function call(
    method: string,
    template: string,
    opts: { path?: string; token?: string; body?: unknown; raw?: string | Buffer; headers?: Record<string, string> } = {},
  ): Promise<{ status: number; body: any; res: RawResponse }> {
    const headers: Record<string, string> = { ...(opts.headers ?? {}) };
    if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`;
    let body: string | Buffer | undefined = opts.raw;
    if (opts.body !== undefined) body = JSON.stringify(opts.body);
    if (body !== undefined && !('content-type' in headers)) headers['content-type'] = 'application/json';
    const res = await rawRequest(s.http, method, opts.path ?? template, { headers, ...(body !== undefined ? { body } : {}) });
    return { status: res.status, body: v.check(method, template, res), res };
  }

  const CONV = '/v1/conversations/{id}';
  const at = (id: string, tail: 'members' | 'messages', query = '') => `/v1/conversations/${id}/${tail}${query}`;

  it('POST /v1/dev/token', async () => {
    const fresh = await call('POST', '/v1/dev/token', { body: {} });
    expect(fresh.status).toBe(200);
    expect((await call('POST', '/v1/dev/token', { body: { name: 'alice' } })).status).toBe(200);
    const id = randomUUID().toUpperCase();
    const mine = await call('POST', '/v1/dev/token', { body: { user_id: id, name: null } });
    expect(mine.status).toBe(200);
    expect(mine.body.user_id).toBe(id.toLowerCase());
    // The body may be empty.
    expect((await call('POST', '/v1/dev/token', { headers: {} })).status).toBe(200);
    // The minted token works on an authenticated route.
    expect((await call('GET', '/v1/conversations', { token: fresh.body.token })).status).toBe(200);

    for (const bad of [
      { user_id: 'nope' },
      { user_id: null },
      { name: '' },
      { name: 'n'.repeat(101) },
      { name: 5 },
      { name: 'a\u0000b' },
    ]) {
      const r = await call('POST', '/v1/dev/token', { body: bad });
      expect(r.status, JSON.stringify(bad)).toBe(400);
    }
    for (const raw of ['[1]', 'null', '"x"', '{"name":', 'not json'])
      expect((await call('POST', '/v1/dev/token', { raw })).status, raw).toBe(400);
    expect((await call('POST', '/v1/dev/token', { raw: 'x'.repeat(OVERSIZE_BODY_BYTES) })).status).toBe(413);
  });

  it('POST /v1/conversations', async () => {
    const created = await call('POST', '/v1/conversations', { token: alice.token, body: { member_ids: [], title: 'room' } });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ title: 'room', member_ids: [alice.userId], last_sequence: 0 });
    conv = created.body.conversation_id;
    const untitled = await call('POST', '/v1/conversations', {
      token: alice.token,
      body: { member_ids: [randomUUID(), randomUUID()], title: null },
    });
    expect(untitled.status).toBe(201);
    expect(untitled.body.title).toBeNull();
    expect((await call('POST', '/v1/conversations', { token: alice.token, body: { member_ids: [], title: 't'.repeat(200) } })).status).toBe(
      201,
    );

    const invalid: unknown[] = [
      {},
      { member_ids: 'x' },
      { member_ids: ['nope'] },
      { member_ids: [7] },
      { member_ids: Array.from({ length: 1001 }, () => randomUUID()) },
      { member_ids: [], title: 7 },
      { member_ids: [], title: 't'.repeat(201) },
      { member_ids: [], title: 'a\u0000b' },
    ];
    for (const body of invalid)
      expect((await call('POST', '/v1/conversations', { token: alice.token, body })).status, JSON.stringify(body).slice(0, 80)).toBe(400);
    for (const raw of ['', '[]', '{"member_ids": ['])
      expect((await call('POST', '/v1/conversations', { token: alice.token, raw })).status, raw).toBe(400);
    // Room full: REALCHAT_MAX_ROOM_MEMBERS is 4 here.
    const tooMany = Array.from({ length: 4 }, () => randomUUID());
    expect((await call('POST', '/v1/conversations', { token: alice.token, body: { member_ids: tooMany } })).status).toBe(409);
    expect(
      (
        await call('POST', '/v1/conversations', {
          token: alice.token,
          raw: JSON.stringify({ member_ids: [], title: 'x'.repeat(OVERSIZE_BODY_BYTES) }),
        })
      ).status,
    ).toBe(413);
    expect((await call('POST', '/v1/conversations', { body: { member_ids: [] } })).status).toBe(401);
    expect((await call('POST', '/v1/conversations', { token: 'not.a.jwt', body: { member_ids: [] } })).status).toBe(401);
  });

  it('GET /v1/conversations', async () => {
    const all = await call('GET', '/v1/conversations', { token: alice.token });
    expect(all.status).toBe(200);
    expect(all.body.conversations.length).toBeGreaterThanOrEqual(3);
    expect(all.body.has_more).toBe(false);
    const one = await call('GET', '/v1/conversations', { path: '/v1/conversations?limit=1', token: alice.token });
    expect(one.body.conversations).toHaveLength(1);
    expect(one.body.has_more).toBe(true);
    expect((await call('GET', '/v1/conversations', { path: '/v1/conversations?limit=1000', token: alice.token })).status).toBe(200);
    expect((await call('GET', '/v1/conversations', { token: bob.token })).body).toEqual({ conversations: [], has_more: false });
    for (const q of ['limit=0', 'limit=1001', 'limit=abc', 'limit=-1', 'limit=1.5']) {
      expect((await call('GET', '/v1/conversations', { path: `/v1/conversations?${q}`, token: alice.token })).status, q).toBe(400);
    }
    expect((await call('GET', '/v1/conversations')).status).toBe(401);
    expect((await call('GET', '/v1/conversations', { token: (await s.token(undefined, -60)).token })).status).toBe(401);
  });

  it('POST /v1/conversations/{id}/members', async () => {
    const T = `${CONV}/members`;
    const added = await call('POST', T, { path: at(conv, 'members'), token: alice.token, body: { user_ids: [randomUUID()] } });
    expect(added.status).toBe(200);
    expect(added.body.added_user_ids).toHaveLength(1);
    expect(added.body.member_count).toBe(2);
    // Already a member: ignored. Upper-case ids are the same ids.
    const again = await call('POST', T, {
      path: at(conv.toUpperCase(), 'members'),
      token: alice.token,
      body: { user_ids: [alice.userId.toUpperCase()] },
    });
    expect(again.body).toMatchObject({ added_user_ids: [], member_count: 2 });

    for (const body of [
      {},
      { user_ids: [] },
      { user_ids: ['x'] },
      { user_ids: 'x' },
      { user_ids: Array.from({ length: 1001 }, () => randomUUID()) },
    ]) {
      expect(
        (await call('POST', T, { path: at(conv, 'members'), token: alice.token, body })).status,
        JSON.stringify(body).slice(0, 80),
      ).toBe(400);
    }
    expect((await call('POST', T, { path: at(conv, 'members'), token: alice.token, raw: '{' })).status).toBe(400);
    expect((await call('POST', T, { path: at(conv, 'members'), token: bob.token, body: { user_ids: [bob.userId] } })).status).toBe(403);
    expect(
      (await call('POST', T, { path: at(randomUUID(), 'members'), token: alice.token, body: { user_ids: [bob.userId] } })).status,
    ).toBe(404);
    expect(
      (await call('POST', T, { path: at('not-a-uuid', 'members'), token: alice.token, body: { user_ids: [bob.userId] } })).status,
    ).toBe(404);
    expect((await call('POST', T, { path: at('%zz', 'members'), token: alice.token, body: { user_ids: [bob.userId] } })).status).toBe(404);
    // 2 members + 3 new > 4.
    const full = await call('POST', T, {
      path: at(conv, 'members'),
      token: alice.token,
      body: { user_ids: [randomUUID(), randomUUID(), randomUUID()] },
    });
    expect(full.status).toBe(409);
    expect((await call('POST', T, { path: at(conv, 'members'), token: alice.token, raw: 'x'.repeat(OVERSIZE_BODY_BYTES) })).status).toBe(
      413,
    );
    expect((await call('POST', T, { path: at(conv, 'members'), body: { user_ids: [bob.userId] } })).status).toBe(401);
  });

  it('POST /v1/conversations/{id}/messages', async () => {
    const T = `${CONV}/messages`;
    const path = at(conv, 'messages');
    const first = await call('POST', T, {
      path,
      token: alice.token,
      body: { idempotency_key: 'k1', payload: { text: 'hello', n: [1, 2.5, null, true] } },
    });
    expect(first.status).toBe(201);
    // v1.1: the member added above is the timeline's entry 1 (members_added), so this message is 2.
    expect(first.body).toMatchObject({ conversation_id: conv, sender_id: alice.userId, sequence_number: 2, idempotency_key: 'k1' });
    const retry = await call('POST', T, {
      path,
      token: alice.token,
      body: { idempotency_key: 'k1', payload: { n: [1, 2.5, null, true], text: 'hello' } },
    });
    expect(retry.status).toBe(200);
    expect(retry.body).toEqual(first.body);
    for (const payload of ['text', 42, [], false]) {
      expect(
        (await call('POST', T, { path, token: alice.token, body: { idempotency_key: `k-${JSON.stringify(payload)}`, payload } })).status,
      ).toBe(201);
    }
    expect((await call('POST', T, { path, token: alice.token, body: { idempotency_key: 'x'.repeat(128), payload: 1 } })).status).toBe(201);

    expect((await call('POST', T, { path, token: alice.token, body: { idempotency_key: 'k1', payload: 'different' } })).status).toBe(409);
    const invalid: unknown[] = [
      { payload: 1 },
      { idempotency_key: 'k' },
      { idempotency_key: '', payload: 1 },
      { idempotency_key: 'x'.repeat(129), payload: 1 },
      { idempotency_key: 5, payload: 1 },
      { idempotency_key: 'a\u0000b', payload: 1 },
      { idempotency_key: 'nul', payload: { s: 'a\u0000b' } },
      { idempotency_key: 'deep', payload: JSON.parse('['.repeat(100) + ']'.repeat(100)) },
    ];
    for (const body of invalid)
      expect((await call('POST', T, { path, token: alice.token, body })).status, JSON.stringify(body).slice(0, 80)).toBe(400);
    for (const raw of ['', '[]', '{"idempotency_key":'])
      expect((await call('POST', T, { path, token: alice.token, raw })).status, raw).toBe(400);
    expect(
      (await call('POST', T, { path, token: alice.token, body: { idempotency_key: 'big', payload: 'z'.repeat(70 * 1024) } })).status,
    ).toBe(413);
    expect(
      (await call('POST', T, { path, token: alice.token, body: { idempotency_key: 'huge', payload: 'z'.repeat(OVERSIZE_BODY_BYTES) } }))
        .status,
    ).toBe(413);
    expect((await call('POST', T, { path, token: bob.token, body: { idempotency_key: 'b', payload: 1 } })).status).toBe(403);
    expect(
      (await call('POST', T, { path: at(randomUUID(), 'messages'), token: alice.token, body: { idempotency_key: 'u', payload: 1 } }))
        .status,
    ).toBe(404);
    expect(
      (await call('POST', T, { path: at('abc', 'messages'), token: alice.token, body: { idempotency_key: 'u', payload: 1 } })).status,
    ).toBe(404);
    expect((await call('POST', T, { path, body: { idempotency_key: 'n', payload: 1 } })).status).toBe(401);
  });

  // Found by Schemathesis: a null payload used to be bound as SQL NULL (500 internal).
  it('a null payload is stored (201), never answered 500', async () => {
    const r = await call('POST', `${CONV}/messages`, {
      path: at(conv, 'messages'),
      token: alice.token,
      body: { idempotency_key: 'null-payload', payload: null },
    });
    expect(r.status).toBe(201);
    expect(r.body.payload).toBeNull();
  });

  it('POST /v1/conversations/{id}/messages beyond the send rate: 429 with Retry-After', async () => {
    const carol = await s.token();
    const room = (await call('POST', '/v1/conversations', { token: carol.token, body: { member_ids: [] } })).body.conversation_id;
    const results = await Promise.all(
      Array.from({ length: 60 }, (_, i) =>
        call('POST', `${CONV}/messages`, {
          path: at(room, 'messages'),
          token: carol.token,
          body: { idempotency_key: `r${i}`, payload: i },
        }),
      ),
    );
    const statuses = results.map((r) => r.status);
    expect(statuses).toContain(201);
    expect(statuses).toContain(429);
    const limited = results.find((r) => r.status === 429)!;
    expect(limited.body.error.code).toBe('rate_limited');
    expect(Number(limited.res.headers['retry-after'])).toBeGreaterThanOrEqual(1);
  });

  it('GET /v1/conversations/{id}/messages', async () => {
    const T = `${CONV}/messages`;
    const page = await call('GET', T, { path: at(conv, 'messages'), token: alice.token });
    expect(page.status).toBe(200);
    expect(page.body.messages.length).toBeGreaterThanOrEqual(6);
    expect(page.body.messages.map((m: Json) => m.sequence_number)).toEqual(page.body.messages.map((_: unknown, i: number) => i + 1));
    expect(page.body.has_more).toBe(false);
    const two = await call('GET', T, { path: at(conv, 'messages', '?limit=2'), token: alice.token });
    expect(two.body.messages).toHaveLength(2);
    expect(two.body.has_more).toBe(true);
    const rest = await call('GET', T, { path: at(conv, 'messages', '?after_sequence=2&limit=500'), token: alice.token });
    expect(rest.body.messages[0].sequence_number).toBe(3);
    expect(rest.body.has_more).toBe(false);
    const beyond = await call('GET', T, { path: at(conv, 'messages', '?after_sequence=9007199254740991'), token: alice.token });
    expect(beyond.body).toEqual({ messages: [], has_more: false });
    for (const q of [
      'limit=0',
      'limit=501',
      'limit=x',
      'after_sequence=-1',
      'after_sequence=x',
      'after_sequence=9007199254740992',
      'after_sequence=1.5',
    ]) {
      expect((await call('GET', T, { path: at(conv, 'messages', `?${q}`), token: alice.token })).status, q).toBe(400);
    }
    expect((await call('GET', T, { path: at(conv, 'messages'), token: bob.token })).status).toBe(403);
    expect((await call('GET', T, { path: at(randomUUID(), 'messages'), token: alice.token })).status).toBe(404);
    expect((await call('GET', T, { path: at('nope', 'messages'), token: alice.token })).status).toBe(404);
    expect((await call('GET', T, { path: at(conv, 'messages') })).status).toBe(401);
    expect((await call('GET', T, { path: at(conv, 'messages'), token: 'Bearer' })).status).toBe(401);
  });

  it('v1.1: PATCH /v1/conversations/{id}, roles, members list, removal, edits, deletes, users', async () => {
    const [owner, admin, member, later, outsider] = await Promise.all([s.token(), s.token(), s.token(), s.token(), s.token()]);
    const OWN = { token: owner.token };
    const create = {
      token: owner.token,
      body: { member_ids: [admin.userId, member.userId] },
      headers: { 'idempotency-key': `create-${randomUUID()}` },
    };
    const created = await call('POST', '/v1/conversations', create);
    expect(created.status).toBe(201);
    expect(created.body.last_sequence).toBe(0);
    const room: string = created.body.conversation_id;
    const repeat = await call('POST', '/v1/conversations', create);
    expect(repeat.status).toBe(200);
    expect(repeat.body.conversation_id).toBe(room);
    expect((await call('POST', '/v1/conversations', { ...create, headers: { 'idempotency-key': 'a b' } })).status).toBe(400);
    const path = (tail = '') => `/v1/conversations/${room}${tail}`;

    // PATCH /v1/conversations/{id}: the owner restricts adding members.
    const P = CONV;
    const restricted = await call('PATCH', P, { ...OWN, path: path(), body: { who_can_add: 'admins' } });
    expect([restricted.status, restricted.body]).toEqual([200, { conversation_id: room, who_can_add: 'admins' }]);
    expect((await call('PATCH', P, { path: path(), token: member.token, body: { who_can_add: 'members' } })).status).toBe(403);
    expect((await call('PATCH', P, { path: path(), token: outsider.token, body: { who_can_add: 'members' } })).status).toBe(403);
    for (const body of [{}, { who_can_add: 'everyone' }, { who_can_add: 1 }])
      expect((await call('PATCH', P, { ...OWN, path: path(), body })).status, JSON.stringify(body)).toBe(400);
    expect((await call('PATCH', P, { ...OWN, path: path(), raw: '{' })).status).toBe(400);
    expect((await call('PATCH', P, { ...OWN, path: `/v1/conversations/${randomUUID()}`, body: { who_can_add: 'admins' } })).status).toBe(
      404,
    );
    expect((await call('PATCH', P, { ...OWN, path: path(), raw: 'x'.repeat(OVERSIZE_BODY_BYTES) })).status).toBe(413);
    expect((await call('PATCH', P, { path: path(), body: { who_can_add: 'admins' } })).status).toBe(401);

    // PUT .../members/{user_id}/role: the owner names an admin (the room's first entry).
    const R = `${CONV}/members/{user_id}/role`;
    const role = (u: string) => path(`/members/${u}/role`);
    const promoted = await call('PUT', R, { ...OWN, path: role(admin.userId), body: { role: 'admin' } });
    expect(promoted.status).toBe(200);
    expect(promoted.body).toEqual({ conversation_id: room, user_id: admin.userId, role: 'admin', last_sequence: 1 });
    expect((await call('PUT', R, { ...OWN, path: role(admin.userId), body: { role: 'admin' } })).body.last_sequence).toBe(1);
    const keyed = { ...OWN, path: role(member.userId), headers: { 'idempotency-key': 'role-k' } };
    expect((await call('PUT', R, { ...keyed, body: { role: 'admin' } })).body.last_sequence).toBe(2);
    expect((await call('PUT', R, { ...keyed, body: { role: 'admin' } })).status).toBe(200);
    expect((await call('PUT', R, { ...keyed, body: { role: 'member' } })).status).toBe(409);
    expect((await call('PUT', R, { ...OWN, path: role(member.userId), body: { role: 'member' } })).body.last_sequence).toBe(3);
    expect((await call('PUT', R, { path: role(admin.userId), token: member.token, body: { role: 'member' } })).status).toBe(403);
    expect((await call('PUT', R, { ...OWN, path: role(owner.userId), body: { role: 'member' } })).status).toBe(403);
    expect((await call('PUT', R, { ...OWN, path: role(outsider.userId), body: { role: 'admin' } })).status).toBe(404);
    expect((await call('PUT', R, { ...OWN, path: role('nope'), body: { role: 'admin' } })).status).toBe(404);
    for (const body of [{}, { role: 'owner' }, { role: null }])
      expect((await call('PUT', R, { ...OWN, path: role(admin.userId), body })).status, JSON.stringify(body)).toBe(400);
    expect((await call('PUT', R, { ...OWN, path: role(admin.userId), raw: 'x'.repeat(OVERSIZE_BODY_BYTES) })).status).toBe(413);
    expect((await call('PUT', R, { path: role(admin.userId), body: { role: 'admin' } })).status).toBe(401);

    // Adding is restricted to owner and admins here; an addition is an entry.
    const M = `${CONV}/members`;
    expect((await call('POST', M, { path: path('/members'), token: member.token, body: { user_ids: [later.userId] } })).status).toBe(403);
    const added = await call('POST', M, { path: path('/members'), token: admin.token, body: { user_ids: [later.userId] } });
    expect(added.body).toMatchObject({ added_user_ids: [later.userId], member_count: 4, last_sequence: 4 });

    // GET .../members
    const all = await call('GET', M, { ...OWN, path: path('/members') });
    expect(all.status).toBe(200);
    expect(all.body.has_more).toBe(false);
    const ids = all.body.members.map((x: Json) => x.user_id);
    expect(ids).toEqual([owner.userId, admin.userId, member.userId, later.userId].sort());
    expect(all.body.members.find((x: Json) => x.user_id === owner.userId).role).toBe('owner');
    const first = await call('GET', M, { ...OWN, path: path('/members?limit=1') });
    expect([first.body.members.length, first.body.has_more]).toEqual([1, true]);
    const next = await call('GET', M, { ...OWN, path: path(`/members?limit=1000&after=${ids[0]}`) });
    expect(next.body.members.map((x: Json) => x.user_id)).toEqual(ids.slice(1));
    for (const q of ['limit=0', 'limit=1001', 'limit=x', 'after=nope'])
      expect((await call('GET', M, { ...OWN, path: path(`/members?${q}`) })).status, q).toBe(400);
    expect((await call('GET', M, { path: path('/members'), token: outsider.token })).status).toBe(403);
    expect((await call('GET', M, { ...OWN, path: `/v1/conversations/${randomUUID()}/members` })).status).toBe(404);
    expect((await call('GET', M, { path: path('/members') })).status).toBe(401);

    // PATCH .../messages/{message_id}: the sender edits.
    const S = `${CONV}/messages`;
    const sent = await call('POST', S, {
      path: path('/messages'),
      token: member.token,
      headers: { 'idempotency-key': 'm1' },
      body: { payload: 'hi' },
    });
    expect(sent.status).toBe(201);
    expect(
      (
        await call('POST', S, {
          path: path('/messages'),
          token: member.token,
          headers: { 'idempotency-key': 'm2' },
          body: { idempotency_key: 'other', payload: 1 },
        })
      ).status,
    ).toBe(400);
    const ownerSent = await call('POST', S, { ...OWN, path: path('/messages'), body: { idempotency_key: 'o1', payload: 'owner' } });
    const E = `${CONV}/messages/{message_id}`;
    const msg = (id: string) => path(`/messages/${id}`);
    const edit = { path: msg(sent.body.message_id), token: member.token, body: { idempotency_key: 'e1', payload: 'hi!' } };
    const edited = await call('PATCH', E, edit);
    expect(edited.status).toBe(201);
    expect(edited.body).toMatchObject({ kind: 'edit', ref_message_id: sent.body.message_id, payload: 'hi!', sender_id: member.userId });
    expect((await call('PATCH', E, edit)).status).toBe(200);
    expect((await call('PATCH', E, { ...edit, body: { idempotency_key: 'e1', payload: 'changed' } })).status).toBe(409);
    expect((await call('PATCH', E, { ...edit, body: { payload: 'no key' } })).status).toBe(400);
    expect((await call('PATCH', E, { ...edit, body: { idempotency_key: 'big', payload: 'z'.repeat(70 * 1024) } })).status).toBe(413);
    expect((await call('PATCH', E, { ...edit, token: owner.token, body: { idempotency_key: 'oe', payload: 'x' } })).status).toBe(403);
    expect(
      (await call('PATCH', E, { ...edit, path: msg(edited.body.message_id), body: { idempotency_key: 'e2', payload: 'x' } })).status,
    ).toBe(404);
    expect((await call('PATCH', E, { ...edit, path: msg(randomUUID()), body: { idempotency_key: 'e3', payload: 'x' } })).status).toBe(404);
    expect((await call('PATCH', E, { ...edit, path: msg('nope'), body: { idempotency_key: 'e4', payload: 'x' } })).status).toBe(404);
    expect((await call('PATCH', E, { ...edit, token: undefined })).status).toBe(401);

    // GET .../messages backwards, and the edited message in history.
    const last = edited.body.sequence_number as number;
    const back = await call('GET', S, { ...OWN, path: path(`/messages?before_sequence=${last}&limit=2`) });
    expect(back.body.messages.map((e: Json) => e.sequence_number)).toEqual([last - 2, last - 1]);
    expect(back.body.has_more).toBe(true);
    const history = await call('GET', S, { ...OWN, path: path(`/messages?after_sequence=${sent.body.sequence_number - 1}&limit=1`) });
    expect(history.body.messages[0]).toMatchObject({ message_id: sent.body.message_id, payload: 'hi!' });
    expect(history.body.messages[0].edited_at).toBeTypeOf('string');
    for (const q of ['before_sequence=0', 'before_sequence=x', 'before_sequence=1&after_sequence=0'])
      expect((await call('GET', S, { ...OWN, path: path(`/messages?${q}`) })).status, q).toBe(400);

    // DELETE .../messages/{message_id}: an admin deletes the member's message; the content is erased.
    const removedMsg = await call('DELETE', E, {
      path: msg(sent.body.message_id),
      token: admin.token,
      headers: { 'idempotency-key': 'd1' },
    });
    expect(removedMsg.status).toBe(201);
    expect(removedMsg.body).toMatchObject({ kind: 'delete', ref_message_id: sent.body.message_id, payload: null });
    const again = await call('DELETE', E, { path: msg(sent.body.message_id), token: member.token });
    expect([again.status, again.body.message_id]).toEqual([200, removedMsg.body.message_id]);
    expect((await call('PATCH', E, { ...edit, body: { idempotency_key: 'e5', payload: 'late' } })).status).toBe(409);
    const erased = await call('GET', S, { ...OWN, path: path(`/messages?after_sequence=${sent.body.sequence_number - 1}&limit=1`) });
    expect(erased.body.messages[0]).toMatchObject({ message_id: sent.body.message_id, payload: null, deleted: true });
    expect((await call('DELETE', E, { path: msg(ownerSent.body.message_id), token: member.token })).status).toBe(403);
    expect(
      (await call('DELETE', E, { path: msg(ownerSent.body.message_id), token: owner.token, headers: { 'idempotency-key': 'a b' } })).status,
    ).toBe(400);
    expect(
      (await call('DELETE', E, { path: msg(ownerSent.body.message_id), token: admin.token, headers: { 'idempotency-key': 'd1' } })).status,
    ).toBe(409);
    expect((await call('DELETE', E, { ...OWN, path: msg(randomUUID()) })).status).toBe(404);
    expect((await call('DELETE', E, { path: msg(ownerSent.body.message_id) })).status).toBe(401);

    // DELETE .../members/{user_id}: leave and remove.
    const D = `${CONV}/members/{user_id}`;
    const member_ = (u: string) => path(`/members/${u}`);
    expect((await call('DELETE', D, { path: member_(admin.userId), token: member.token })).status).toBe(403);
    expect((await call('DELETE', D, { path: member_(owner.userId), token: admin.token })).status).toBe(403);
    expect((await call('DELETE', D, { ...OWN, path: member_(owner.userId) })).status).toBe(409);
    expect((await call('DELETE', D, { ...OWN, path: member_(outsider.userId) })).status).toBe(404);
    expect((await call('DELETE', D, { ...OWN, path: member_('nope') })).status).toBe(404);
    const removed = await call('DELETE', D, { path: member_(member.userId), token: admin.token });
    expect(removed.status).toBe(200);
    expect(removed.body).toMatchObject({ conversation_id: room, removed_user_ids: [member.userId], member_count: 3 });
    expect((await call('GET', S, { path: path('/messages'), token: member.token })).status).toBe(403);
    expect((await call('DELETE', D, { path: member_(member.userId), token: member.token })).status).toBe(403);
    const left = await call('DELETE', D, { path: member_(later.userId), token: later.token });
    expect(left.body).toMatchObject({ removed_user_ids: [later.userId], member_count: 2, last_sequence: removed.body.last_sequence + 1 });
    expect((await call('DELETE', D, { path: member_(admin.userId) })).status).toBe(401);

    // Users: names, the directory, one user.
    const name = `Zed ${randomUUID()}`;
    const named = await call('PUT', '/v1/users/me', { token: outsider.token, body: { name: `  ${name} ` } });
    expect(named.body).toEqual({ user_id: outsider.userId, name });
    for (const body of [{}, { name: '' }, { name: '   ' }, { name: 'n'.repeat(101) }, { name: 5 }, { name: 'a\u0000b' }])
      expect((await call('PUT', '/v1/users/me', { token: outsider.token, body })).status, JSON.stringify(body)).toBe(400);
    expect((await call('PUT', '/v1/users/me', { token: outsider.token, raw: 'x'.repeat(OVERSIZE_BODY_BYTES) })).status).toBe(413);
    expect((await call('PUT', '/v1/users/me', { body: { name } })).status).toBe(401);
    const U = '/v1/users';
    const found = await call('GET', U, { ...OWN, path: `/v1/users?query=${encodeURIComponent(name.slice(0, 20).toLowerCase())}` });
    expect(found.body.users).toEqual([{ user_id: outsider.userId, name }]);
    for (const q of ['', 'query=', `query=${'q'.repeat(101)}`, 'query=a&limit=0', 'query=a&limit=101'])
      expect((await call('GET', U, { ...OWN, path: `/v1/users?${q}` })).status, q).toBe(400);
    expect((await call('GET', U, { path: '/v1/users?query=a' })).status).toBe(401);
    const G = '/v1/users/{id}';
    expect((await call('GET', G, { ...OWN, path: `/v1/users/${outsider.userId}` })).body).toEqual({ user_id: outsider.userId, name });
    expect((await call('GET', G, { ...OWN, path: `/v1/users/${randomUUID()}` })).status).toBe(404);
    expect((await call('GET', G, { ...OWN, path: '/v1/users/nope' })).status).toBe(404);
    expect((await call('GET', G, { path: `/v1/users/${outsider.userId}` })).status).toBe(401);
    // Presence of someone the caller shares a conversation with; strangers and unknown ids alike are 403.
    const PRESENCE = '/v1/users/{id}/presence';
    const presence = await call('GET', PRESENCE, { ...OWN, path: `/v1/users/${admin.userId}/presence` });
    expect([presence.status, presence.body.user_id]).toEqual([200, admin.userId]);
    expect((await call('GET', PRESENCE, { ...OWN, path: `/v1/users/${outsider.userId}/presence` })).status).toBe(403);
    expect((await call('GET', PRESENCE, { ...OWN, path: `/v1/users/${randomUUID()}/presence` })).status).toBe(403);
    expect((await call('GET', PRESENCE, { ...OWN, path: '/v1/users/nope/presence' })).status).toBe(404);
    expect((await call('GET', PRESENCE, { path: `/v1/users/${admin.userId}/presence` })).status).toBe(401);
  });

  it('Web Push: GET /v1/push/vapid-public-key, POST and DELETE /v1/push/subscriptions, PUT /v1/conversations/{id}/notifications', async () => {
    const key = await call('GET', '/v1/push/vapid-public-key');
    expect(key.status).toBe(200);
    expect((await call('GET', '/v1/push/vapid-public-key', { headers: { origin: 'https://evil.example' } })).status).toBe(403);
    const ecdh = createECDH('prime256v1');
    const sub = {
      endpoint: `https://push.example.com/send/${randomUUID()}`,
      expirationTime: null,
      keys: { p256dh: ecdh.generateKeys().toString('base64url'), auth: randomBytes(16).toString('base64url') },
    };
    const S = '/v1/push/subscriptions';
    expect((await call('POST', S, { token: alice.token, body: sub })).status).toBe(201);
    expect((await call('POST', S, { token: alice.token, body: sub })).status).toBe(200);
    expect((await call('POST', S, { token: alice.token, body: { ...sub, endpoint: 'http://push.example.com/x' } })).body.error.code).toBe(
      'invalid_request',
    );
    expect((await call('POST', S, { body: sub })).status).toBe(401);
    expect((await call('DELETE', S, { token: alice.token, body: { endpoint: sub.endpoint } })).body).toEqual({
      endpoint: sub.endpoint,
      removed: true,
    });
    expect((await call('DELETE', S, { token: alice.token, body: { endpoint: 7 } })).status).toBe(400);
    const N = '/v1/conversations/{id}/notifications';
    const created = await call('POST', '/v1/conversations', { token: alice.token, body: { member_ids: [bob.userId] } });
    const id = created.body.conversation_id as string;
    const path = `/v1/conversations/${id}/notifications`;
    expect((await call('PUT', N, { path, token: bob.token, body: { muted: true } })).body).toEqual({ conversation_id: id, muted: true });
    expect((await call('PUT', N, { path, token: (await s.token()).token, body: { muted: true } })).status).toBe(403);
    expect(
      (await call('PUT', N, { path: `/v1/conversations/${randomUUID()}/notifications`, token: bob.token, body: { muted: false } })).status,
    ).toBe(404);
    expect((await call('PUT', N, { path, token: bob.token, body: { muted: 1 } })).status).toBe(400);
  });

  it('GET /healthz, /readyz, /metrics', async () => {
    expect((await call('GET', '/healthz')).body).toEqual({ status: 'ok' });
    expect((await call('GET', '/readyz')).body).toEqual({ status: 'ready' });
    const metrics = await call('GET', '/metrics');
    expect(metrics.status).toBe(200);
    expect(metrics.body).toContain('# HELP');
  });

  it('GET /v1/openapi.json serves docs/openapi.yaml, as JSON', async () => {
    const served = await call('GET', '/v1/openapi.json');
    expect(served.status).toBe(200);
    expect(served.body).toEqual(parse(readFileSync(findOpenApiFile()!, 'utf8')));
  });

  it('requests with a foreign Host or a foreign browser Origin are refused as documented: 421 host_not_allowed, 403 origin_not_allowed (hardening: lands with the gateway edge checks)', async () => {
    const samples: Array<[string, string, string, unknown]> = [
      ['POST', '/v1/conversations', '/v1/conversations', { member_ids: [] }],
      ['GET', '/v1/conversations', '/v1/conversations', undefined],
      ['POST', `${CONV}/members`, at(conv, 'members'), { user_ids: [bob.userId] }],
      ['GET', `${CONV}/messages`, at(conv, 'messages'), undefined],
      ['POST', `${CONV}/messages`, at(conv, 'messages'), { idempotency_key: 'origin', payload: 1 }],
      ['POST', '/v1/dev/token', '/v1/dev/token', {}],
      ['GET', '/healthz', '/healthz', undefined],
      ['GET', '/readyz', '/readyz', undefined],
      ['GET', '/metrics', '/metrics', undefined],
      ['GET', '/v1/openapi.json', '/v1/openapi.json', undefined],
    ];
    for (const [method, template, path, body] of samples) {
      const opts = { path, token: alice.token, ...(body === undefined ? {} : { body }) };
      const host = await call(method, template, { ...opts, headers: { host: 'evil.example' } });
      expect([host.status, host.body?.error?.code], `${method} ${path} with Host: evil.example`).toEqual([421, 'host_not_allowed']);
      const origin = await call(method, template, { ...opts, headers: { origin: 'https://evil.example' } });
      expect([origin.status, origin.body?.error?.code], `${method} ${path} with Origin: https://evil.example`).toEqual([
        403,
        'origin_not_allowed',
      ]);
    }
    const own = new URL(s.http);
    expect((await call('GET', '/v1/conversations', { token: alice.token, headers: { origin: own.origin } })).status).toBe(200);
  });

  it('every API response carries Cache-Control: no-store, X-Content-Type-Options: nosniff, Referrer-Policy: no-referrer (hardening: lands with the gateway change)', async () => {
    // Fresh answers from every operation (this test may run alone), then everything checked so far.
    await call('POST', '/v1/dev/token', { body: {} });
    await call('POST', '/v1/conversations', { token: alice.token, body: { member_ids: [] } });
    await call('POST', '/v1/conversations', { token: alice.token, raw: '{' });
    await call('GET', '/v1/conversations');
    await call('GET', '/v1/conversations', { token: alice.token });
    await call('GET', `${CONV}/messages`, { path: at(randomUUID(), 'messages'), token: alice.token });
    await call('POST', `${CONV}/members`, { path: at(randomUUID(), 'members'), token: alice.token, body: { user_ids: [bob.userId] } });
    await call('POST', `${CONV}/messages`, {
      path: at(randomUUID(), 'messages'),
      token: alice.token,
      body: { idempotency_key: 'h', payload: 1 },
    });
    const nowhere = `/v1/conversations/${randomUUID()}`;
    await call('PATCH', CONV, { path: nowhere, token: alice.token, body: { who_can_add: 'admins' } });
    await call('GET', `${CONV}/members`, { path: `${nowhere}/members`, token: alice.token });
    await call('DELETE', `${CONV}/members/{user_id}`, { path: `${nowhere}/members/${bob.userId}`, token: alice.token });
    await call('PUT', `${CONV}/members/{user_id}/role`, {
      path: `${nowhere}/members/${bob.userId}/role`,
      token: alice.token,
      body: { role: 'admin' },
    });
    await call('PATCH', `${CONV}/messages/{message_id}`, {
      path: `${nowhere}/messages/${randomUUID()}`,
      token: alice.token,
      body: { idempotency_key: 'h', payload: 1 },
    });
    await call('DELETE', `${CONV}/messages/{message_id}`, { path: `${nowhere}/messages/${randomUUID()}`, token: alice.token });
    await call('PUT', '/v1/users/me', { token: alice.token, body: { name: 'alice' } });
    await call('GET', '/v1/users', { path: '/v1/users?query=ali', token: alice.token });
    await call('GET', '/v1/users/{id}', { path: `/v1/users/${alice.userId}`, token: alice.token });
    await call('GET', '/healthz');
    await call('GET', '/readyz');
    await call('GET', '/metrics');
    await call('GET', '/v1/openapi.json');
    const missing: string[] = [];
    for (const c of v.checked) {
      const h = c.headers;
      const ok =
        /(^|[\s,])no-store($|[\s,;])/.test(h['cache-control'] ?? '') &&
        h['x-content-type-options'] === 'nosniff' &&
        h['referrer-policy'] === 'no-referrer';
      if (!ok) missing.push(`${c.operation} → ${c.status}: ${HARDENING_HEADERS.map((n) => `${n}=${h[n] ?? '(none)'}`).join(' ')}`);
    }
    expect(missing, `responses without the hardening headers:\n${[...new Set(missing)].join('\n')}`).toEqual([]);
  });

  it('regions: a forwarded send, its retry, and its refusals', async () => {
    const region = { headers: { authorization: `Region ${REGION_SECRET}` } };
    const conv = (await call('POST', '/v1/conversations', { token: alice.token, body: { member_ids: [bob.userId] } })).body.conversation_id;
    const body = { sender_id: bob.userId, conversation_id: conv, idempotency_key: 'fwd-1', payload: { text: 'from another region' } };
    const first = await call('POST', '/v1/regions/messages', { ...region, body });
    expect(first.status).toBe(201);
    const again = await call('POST', '/v1/regions/messages', { ...region, body });
    expect([again.status, again.body.message_id]).toEqual([200, first.body.message_id]);
    expect((await call('POST', '/v1/regions/messages', { body })).status).toBe(401);
    expect((await call('POST', '/v1/regions/messages', { token: bob.token, body })).status).toBe(401);
    expect((await call('POST', '/v1/regions/messages', { ...region, body: { ...body, sender_id: 'x' } })).status).toBe(400);
    expect(
      (
        await call('POST', '/v1/regions/messages', {
          ...region,
          body: { ...body, conversation_id: randomUUID(), idempotency_key: 'fwd-2' },
        })
      ).status,
    ).toBe(404);
    expect((await call('POST', '/v1/regions/messages', { ...region, body: { ...body, payload: { text: 'other' } } })).status).toBe(409);
    // The other writes: an edit by its sender, one by someone else, a bad op, no secret.
    const write = (w: Record<string, unknown>, headers = region.headers) =>
      call('POST', '/v1/regions/writes', { headers, body: { actor_id: bob.userId, conversation_id: conv, ...w } });
    const edit = { op: 'edit', args: { message_id: first.body.message_id, idempotency_key: 'fwd-edit', payload: { text: 'edited' } } };
    const edited = await write(edit);
    expect([edited.status, edited.body.result?.envelope?.kind]).toEqual([200, 'edit']);
    expect((await write({ ...edit, actor_id: alice.userId, args: { ...edit.args, idempotency_key: 'fwd-edit-2' } })).status).toBe(403);
    expect((await write({ op: 'rename', args: {} })).status).toBe(400);
    expect((await write({ op: 'delete', args: [] })).status).toBe(400);
    expect((await write(edit, { authorization: `Region ${REGION_SECRET}x` })).status).toBe(401);
    expect((await write({ op: 'add_members', args: { user_ids: [randomUUID()] }, conversation_id: randomUUID() })).status).toBe(404);
    // Typing from another region: a member's is delivered here; a stranger's is refused.
    const typing = (user: string, headers: Record<string, string> = region.headers) =>
      call('POST', '/v1/regions/typing', { headers, body: { conversation_id: conv, user_id: user } });
    expect((await typing(bob.userId)).status).toBe(200);
    expect((await typing(randomUUID())).status).toBe(403);
    expect((await typing(bob.userId, {})).status).toBe(401);
    expect((await call('POST', '/v1/regions/typing', { ...region, body: { conversation_id: 'x', user_id: bob.userId } })).status).toBe(400);
    // Presence from another region: a change is taken (published to the watchers here), who is connected here is answered.
    const change = { user_id: bob.userId, status: 'offline', last_seen_at: new Date().toISOString() };
    expect((await call('POST', '/v1/regions/presence', { ...region, body: change })).status).toBe(200);
    expect((await call('POST', '/v1/regions/presence', { ...region, body: { ...change, status: 'away' } })).status).toBe(400);
    expect((await call('POST', '/v1/regions/presence', { body: change })).status).toBe(401);
    const here = await call('POST', '/v1/regions/presence/online', { ...region, body: { user_ids: [bob.userId] } });
    expect([here.status, here.body.online]).toEqual([200, []]);
    expect((await call('POST', '/v1/regions/presence/online', { ...region, body: { user_ids: [] } })).status).toBe(400);
    expect((await call('POST', '/v1/regions/presence/online', { body: { user_ids: [bob.userId] } })).status).toBe(401);
    // What a returning region asks: none taken over from b here.
    const failovers = (q: string, headers: Record<string, string> = region.headers) =>
      call('GET', '/v1/regions/failovers', { headers, path: `/v1/regions/failovers${q}` });
    const none = await failovers('?from=b');
    expect([none.status, none.body.failovers]).toEqual([200, []]);
    expect((await failovers('')).status).toBe(400);
    expect((await failovers('?from=b&after=x')).status).toBe(400);
    expect((await failovers('?from=b', {})).status).toBe(401);
  });

  it('admin: API keys and webhooks (create, list, get, update, delete, deliveries), with errors', async () => {
    const admin = { token: ADMIN_TOKEN };
    expect(
      (await call('POST', '/v1/admin/api-keys', { body: { user_id: alice.userId, name: 'x', scopes: ['messages:write'] } })).status,
    ).toBe(401);
    expect(
      (await call('POST', '/v1/admin/api-keys', { ...admin, body: { user_id: alice.userId, name: 'x', scopes: ['nope'] } })).status,
    ).toBe(400);
    const key = await call('POST', '/v1/admin/api-keys', {
      ...admin,
      body: { user_id: randomUUID(), name: 'bot', scopes: ['messages:read'] },
    });
    expect(key.status).toBe(201);
    expect((await call('GET', '/v1/admin/api-keys', { ...admin, path: '/v1/admin/api-keys?limit=2' })).status).toBe(200);
    expect((await call('GET', '/v1/admin/api-keys', { token: alice.token })).status).toBe(403);
    const keyPath = `/v1/admin/api-keys/${key.body.key_id}`;
    expect((await call('DELETE', '/v1/admin/api-keys/{key_id}', { ...admin, path: keyPath })).status).toBe(200);
    expect((await call('DELETE', '/v1/admin/api-keys/{key_id}', { ...admin, path: '/v1/admin/api-keys/nope' })).status).toBe(404);
    expect((await call('POST', '/v1/admin/webhooks', { ...admin, body: { url: 'gopher://x' } })).status).toBe(400);
    const hook = await call('POST', '/v1/admin/webhooks', {
      ...admin,
      body: { url: 'http://127.0.0.1:9/hook', event_types: ['message.created'] },
    });
    expect(hook.status).toBe(201);
    const hookPath = `/v1/admin/webhooks/${hook.body.webhook_id}`;
    expect((await call('GET', '/v1/admin/webhooks', admin)).status).toBe(200);
    expect((await call('GET', '/v1/admin/webhooks', { ...admin, path: '/v1/admin/webhooks?after=x' })).status).toBe(400);
    expect((await call('GET', '/v1/admin/webhooks/{webhook_id}', { ...admin, path: hookPath })).status).toBe(200);
    expect((await call('GET', '/v1/admin/webhooks/{webhook_id}', { ...admin, path: `/v1/admin/webhooks/${randomUUID()}` })).status).toBe(
      404,
    );
    expect((await call('PATCH', '/v1/admin/webhooks/{webhook_id}', { ...admin, path: hookPath, body: { enabled: false } })).status).toBe(
      200,
    );
    expect((await call('PATCH', '/v1/admin/webhooks/{webhook_id}', { ...admin, path: hookPath, body: {} })).status).toBe(400);
    expect((await call('GET', '/v1/admin/webhooks/{webhook_id}/deliveries', { ...admin, path: `${hookPath}/deliveries` })).status).toBe(
      200,
    );
    expect(
      (await call('GET', '/v1/admin/webhooks/{webhook_id}/deliveries', { ...admin, path: `${hookPath}/deliveries?status=lost` })).status,
    ).toBe(400);
    expect((await call('DELETE', '/v1/admin/webhooks/{webhook_id}', { ...admin, path: hookPath })).status).toBe(200);
    expect((await call('DELETE', '/v1/admin/webhooks/{webhook_id}', { ...admin, path: hookPath })).status).toBe(404);
  });

  it('every documented operation was exercised, each with a success and an error answer', () => {
    const seen = new Map<string, Set<number>>();
    for (const c of v.checked) {
      if (!seen.has(c.operation)) seen.set(c.operation, new Set());
      seen.get(c.operation)!.add(c.status);
    }
    for (const { method, template } of operations(v.doc)) {
      const name = `${method} ${template}`;
      const statuses = [...(seen.get(name) ?? [])];
      expect(
        statuses.some((x) => x < 300),
        `${name}: no success answer was checked`,
      ).toBe(true);
      if (!['GET /healthz', 'GET /readyz', 'GET /metrics', 'GET /v1/openapi.json'].includes(name)) {
        expect(
          statuses.some((x) => x >= 400),
          `${name}: no error answer was checked`,
        ).toBe(true);
      }
    }
  });
});

describe('POST /v1/dev/token with dev auth off', () => {
  let s: TestServer;
  const v = new OpenApiValidator();
  beforeAll(async () => {
    s = await startTestServer('pglite', { HOST: '127.0.0.1', REALCHAT_DEV_AUTH: 'false' });
  });
  afterAll(async () => s?.close());

  it('is 404 not_found, as documented', async () => {
    const res = await rawRequest(s.http, 'POST', '/v1/dev/token', { headers: { 'content-type': 'application/json' }, body: '{}' });
    expect(res.status).toBe(404);
    expect(v.check('POST', '/v1/dev/token', res).error.code).toBe('not_found');
  });
});
