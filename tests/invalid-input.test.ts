import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SignJWT } from 'jose';
import { randomUUID } from 'node:crypto';
import { BACKENDS, createConversation, http, startTestServer, type TestServer } from './harness/server.js';
import { TestClient } from './harness/ws-client.js';

describe.each(BACKENDS)('invalid input is answered and stores nothing (%s)', (backend) => {
  let s: TestServer;
  let alice: { userId: string; token: string };
  let conv: string;
  let counts: () => Promise<{ messages: number; outbox_seq: number }>;

  beforeAll(async () => {
    s = await startTestServer(backend, { REALCHAT_HELLO_TIMEOUT_MS: '500' });
    alice = await s.token();
    conv = await createConversation(s, alice.token, []);
    counts = async () =>
      (
        await s.query<{ messages: number; outbox_seq: number }>(
          `SELECT (SELECT count(*)::int FROM messages) AS messages, (SELECT last_seq::int FROM conversations WHERE id = $1) AS outbox_seq`,
          [conv],
        )
      )[0]!;
  });
  afterAll(async () => s?.close());

  const bigString = 'x'.repeat(70 * 1024);
  const badFrames: Array<[string, unknown, string]> = [
    ['bad JSON', '{"type": "send", ', 'invalid_frame'],
    ['not an object', '[1,2]', 'invalid_frame'],
    ['unknown type', { type: 'explode' }, 'invalid_frame'],
    ['missing type', { conversation_id: 'x' }, 'invalid_frame'],
    ['conversation_id not a uuid', { type: 'send', conversation_id: 'abc', idempotency_key: 'k', payload: 1 }, 'invalid_frame'],
    [
      'idempotency_key wrong type',
      { type: 'send', conversation_id: '00000000-0000-4000-8000-000000000000', idempotency_key: 5, payload: 1 },
      'invalid_frame',
    ],
    [
      'empty idempotency_key',
      { type: 'send', conversation_id: '00000000-0000-4000-8000-000000000000', idempotency_key: '', payload: 1 },
      'invalid_frame',
    ],
    ['missing payload', { type: 'send', conversation_id: '00000000-0000-4000-8000-000000000000', idempotency_key: 'k' }, 'invalid_frame'],
    [
      'payload with NUL',
      { type: 'send', conversation_id: '00000000-0000-4000-8000-000000000000', idempotency_key: 'k', payload: 'a\u0000b' },
      'invalid_frame',
    ],
    [
      'payload too deep',
      {
        type: 'send',
        conversation_id: '00000000-0000-4000-8000-000000000000',
        idempotency_key: 'k',
        payload: JSON.parse('['.repeat(100) + ']'.repeat(100)),
      },
      'invalid_frame',
    ],
    [
      'oversize payload',
      { type: 'send', conversation_id: '00000000-0000-4000-8000-000000000000', idempotency_key: 'k', payload: bigString },
      'payload_too_large',
    ],
    [
      'sync with negative after',
      { type: 'sync', conversation_id: '00000000-0000-4000-8000-000000000000', after_sequence: -1 },
      'invalid_frame',
    ],
    [
      'sync with fractional limit',
      { type: 'sync', conversation_id: '00000000-0000-4000-8000-000000000000', after_sequence: 0, limit: 1.5 },
      'invalid_frame',
    ],
    [
      'read with string sequence',
      { type: 'read', conversation_id: '00000000-0000-4000-8000-000000000000', sequence_number: '3' },
      'invalid_frame',
    ],
    ['second hello', { type: 'hello', token: 'x' }, 'invalid_frame'],
  ];

  it.each(badFrames)('WebSocket: %s', async (_name, frame, code) => {
    const before = await counts();
    const c = await TestClient.connect(s.wsUrl, alice.token);
    const since = c.frames.length;
    c.send(frame);
    const err = await c.waitFor((f) => f.type === 'error', 5000, since);
    expect(err.code).toBe(code);
    expect(typeof err.message).toBe('string');
    // The connection survives a bad frame and still works.
    c.send({ type: 'ping' });
    await c.waitFor((f) => f.type === 'pong');
    expect(c.closeCode).toBeNull();
    expect(await counts()).toEqual(before);
    c.close();
  });

  it('WebSocket: a binary frame is refused', async () => {
    const c = await TestClient.connect(s.wsUrl, alice.token);
    c.ws.send(Buffer.from([1, 2, 3]));
    expect((await c.waitFor((f) => f.type === 'error')).code).toBe('invalid_frame');
    c.close();
  });

  it('WebSocket: an error names the idempotency key it answers', async () => {
    const c = await TestClient.connect(s.wsUrl, alice.token);
    c.send({ type: 'send', conversation_id: conv, idempotency_key: 'ref-me', payload: bigString });
    expect(await c.waitFor((f) => f.type === 'error')).toMatchObject({ code: 'payload_too_large', ref: 'ref-me' });
    c.close();
  });

  it('WebSocket: a frame above the frame limit closes the socket (uWS drops it: 1006), and the server lives on', async () => {
    const c = await TestClient.connect(s.wsUrl, alice.token);
    c.send({ type: 'send', conversation_id: conv, idempotency_key: 'huge', payload: 'y'.repeat(2 * 1024 * 1024) });
    expect([1006, 1009]).toContain(await c.waitClosed());
    expect((await http(s, 'GET', '/healthz')).status).toBe(200);
  });

  const forged = async () =>
    new SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject(randomUUID())
      .setExpirationTime('1h')
      .sign(new TextEncoder().encode('not-the-server-secret-0123456789abcdef'));
  const tokenCases: Array<[string, () => Promise<string>]> = [
    ['garbage token', async () => 'not.a.jwt'],
    ['forged signature', forged],
    ['expired token', async () => (await s.token(undefined, -60)).token],
    [
      'no exp',
      async () => new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject(randomUUID()).sign(new TextEncoder().encode(s.secret)),
    ],
    [
      'sub not a uuid',
      async () =>
        new SignJWT({})
          .setProtectedHeader({ alg: 'HS256' })
          .setSubject('alice')
          .setExpirationTime('1h')
          .sign(new TextEncoder().encode(s.secret)),
    ],
    [
      'alg none',
      async () =>
        `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from(JSON.stringify({ sub: randomUUID(), exp: 9999999999 })).toString('base64url')}.`,
    ],
  ];

  it.each(tokenCases)('hello with %s is refused: error unauthorized, close 4500', async (_n, make) => {
    const c = await TestClient.open(s.wsUrl);
    c.send({ type: 'hello', token: await make() });
    expect((await c.waitFor((f) => f.type === 'error')).code).toBe('unauthorized');
    expect(await c.waitClosed()).toBe(4500);
  });

  it.each(tokenCases)('REST with %s is 401', async (_n, make) => {
    const r = await http(s, 'GET', '/v1/conversations', { token: await make() });
    expect(r.status).toBe(401);
    expect(r.body.error.code).toBe('unauthorized');
  });

  it('REST without a token is 401', async () => {
    const r = await http(s, 'POST', `/v1/conversations/${conv}/messages`, { body: { idempotency_key: 'k', payload: 1 } });
    expect(r.status).toBe(401);
  });

  it('a first frame that is not hello is refused and the socket closed (4501)', async () => {
    const c = await TestClient.open(s.wsUrl);
    c.send({ type: 'send', conversation_id: conv, idempotency_key: 'early', payload: 1 });
    expect((await c.waitFor((f) => f.type === 'error')).code).toBe('unauthorized');
    expect(await c.waitClosed()).toBe(4501);
  });

  it('no hello within the timeout closes the socket (4003)', async () => {
    const c = await TestClient.open(s.wsUrl);
    expect(await c.waitClosed(5000)).toBe(4003);
  });

  const restCases: Array<[string, string, string, unknown, string | undefined, number, string]> = [
    ['bad JSON body', 'POST', '/v1/conversations', undefined, '{"member_ids": [', 400, 'invalid_request'],
    ['member_ids not an array', 'POST', '/v1/conversations', { member_ids: 'x' }, undefined, 400, 'invalid_request'],
    ['member id not a uuid', 'POST', '/v1/conversations', { member_ids: ['nope'] }, undefined, 400, 'invalid_request'],
    ['title wrong type', 'POST', '/v1/conversations', { member_ids: [], title: 7 }, undefined, 400, 'invalid_request'],
    [
      'unknown conversation',
      'GET',
      '/v1/conversations/00000000-0000-4000-8000-000000000000/messages',
      undefined,
      undefined,
      404,
      'not_found',
    ],
    ['conversation id not a uuid', 'GET', '/v1/conversations/abc/messages', undefined, undefined, 404, 'not_found'],
    [
      'after_sequence not a number',
      'GET',
      '/v1/conversations/CONV/messages?after_sequence=x',
      undefined,
      undefined,
      400,
      'invalid_request',
    ],
    ['limit too large', 'GET', '/v1/conversations/CONV/messages?limit=100000', undefined, undefined, 400, 'invalid_request'],
    ['missing idempotency_key', 'POST', '/v1/conversations/CONV/messages', { payload: 1 }, undefined, 400, 'invalid_request'],
    [
      'payload too large',
      'POST',
      '/v1/conversations/CONV/messages',
      { idempotency_key: 'big', payload: 'z'.repeat(70 * 1024) },
      undefined,
      413,
      'payload_too_large',
    ],
    [
      'body beyond the request limit',
      'POST',
      '/v1/conversations/CONV/messages',
      { idempotency_key: 'big2', payload: 'z'.repeat(2 * 1024 * 1024) },
      undefined,
      413,
      'payload_too_large',
    ],
    ['unknown route', 'GET', '/v1/nothing', undefined, undefined, 404, 'not_found'],
  ];

  it.each(restCases)('REST: %s', async (_n, method, path, body, raw, status, code) => {
    const before = await counts();
    const r = await http(s, method, path.replace('CONV', conv), { token: alice.token, body, ...(raw ? { rawBody: raw } : {}) });
    expect(r.status).toBe(status);
    expect(r.body.error.code).toBe(code);
    expect(await counts()).toEqual(before);
  });

  it('non-members are refused everywhere', async () => {
    const eve = await s.token();
    const e = await TestClient.connect(s.wsUrl, eve.token);
    const before = await counts();
    expect(await e.sendMessage(conv, 'eve-1', 'hi')).toMatchObject({ type: 'error', code: 'forbidden', ref: 'eve-1' });
    e.send({ type: 'sync', conversation_id: conv, after_sequence: 0 });
    expect(await e.waitFor((f) => f.type === 'error' && f.ref === conv)).toMatchObject({ code: 'forbidden' });
    const since = e.frames.length;
    e.send({ type: 'typing', conversation_id: conv });
    expect(await e.waitFor((f) => f.type === 'error', 5000, since)).toMatchObject({ code: 'forbidden' });
    const since2 = e.frames.length;
    e.send({ type: 'read', conversation_id: conv, sequence_number: 0 });
    expect(await e.waitFor((f) => f.type === 'error', 5000, since2)).toMatchObject({ code: 'forbidden' });
    expect(
      (await http(s, 'POST', `/v1/conversations/${conv}/messages`, { token: eve.token, body: { idempotency_key: 'e', payload: 1 } }))
        .status,
    ).toBe(403);
    expect((await http(s, 'GET', `/v1/conversations/${conv}/messages`, { token: eve.token })).status).toBe(403);
    expect(
      (await http(s, 'POST', `/v1/conversations/${conv}/members`, { token: eve.token, body: { user_ids: [eve.userId] } })).status,
    ).toBe(403);
    expect(await counts()).toEqual(before);
    e.close();
  });

  it('dev token endpoint answers with a usable token', async () => {
    const r = await http(s, 'POST', '/v1/dev/token', { body: { name: 'dev' } });
    expect(r.status).toBe(200);
    const c = await TestClient.connect(s.wsUrl, r.body.token);
    expect(c.frames[0]).toMatchObject({ type: 'welcome', user_id: r.body.user_id });
    c.close();
  });
});
