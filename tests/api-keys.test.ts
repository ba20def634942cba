/**
 * API keys and the admin token (docs/protocol.md, "API keys"): the admin routes need the admin
 * token or a key with the admin scope; a bot key sends as its bot user and members receive it live;
 * scopes are enforced per route; a revoked key is refused; without REALCHAT_ADMIN_TOKEN the admin
 * API does not exist.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BACKENDS, createConversation, http, startTestServer, type TestServer } from './harness/server.js';
import { TestClient } from './harness/ws-client.js';

const ADMIN = randomBytes(32).toString('hex');

describe.each(BACKENDS)('API keys (%s)', (backend) => {
  let s: TestServer;
  const open: TestClient[] = [];
  beforeAll(async () => {
    s = await startTestServer(backend, { REALCHAT_ADMIN_TOKEN: ADMIN });
  });
  afterAll(async () => {
    for (const c of open) c.ws.close();
    await s?.close();
  });

  const mintKey = async (userId: string, scopes: string[], token = ADMIN) => {
    const r = await http(s, 'POST', '/v1/admin/api-keys', { token, body: { user_id: userId, name: 'test bot', scopes } });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    return r.body as { key_id: string; key: string; user_id: string; scopes: string[] };
  };

  it('admin routes need the admin token: none 401, a user token 403, a wrong one 401', async () => {
    const body = { user_id: randomUUID(), name: 'x', scopes: ['messages:write'] };
    expect((await http(s, 'POST', '/v1/admin/api-keys', { body })).status).toBe(401);
    const alice = await s.token();
    const asUser = await http(s, 'POST', '/v1/admin/api-keys', { token: alice.token, body });
    expect(asUser.status).toBe(403);
    expect(asUser.body.error.code).toBe('forbidden');
    // one character off (a token ending in 0 gets a 1: replacing its last character with 0, as
    // this did, passed the admin token itself one run in sixteen)
    const wrong = `${ADMIN.slice(0, -1)}${ADMIN.endsWith('0') ? '1' : '0'}`;
    expect((await http(s, 'POST', '/v1/admin/api-keys', { token: wrong, body })).status).toBe(401);
    expect((await http(s, 'GET', '/v1/admin/webhooks', { token: alice.token })).status).toBe(403);
    expect((await http(s, 'POST', '/v1/admin/api-keys', { token: ADMIN, body })).status).toBe(201);
  });

  it('refuses unknown scopes and bad input', async () => {
    for (const body of [
      { user_id: randomUUID(), name: 'x', scopes: ['messages:everything'] },
      { user_id: randomUUID(), name: 'x', scopes: [] },
      { user_id: 'nope', name: 'x', scopes: ['messages:write'] },
      { user_id: randomUUID(), name: '', scopes: ['messages:write'] },
    ]) {
      const r = await http(s, 'POST', '/v1/admin/api-keys', { token: ADMIN, body });
      expect(r.status, JSON.stringify(body)).toBe(400);
    }
  });

  it('a bot key sends a message that members receive live; the key is shown once and stored hashed', async () => {
    const alice = await s.token();
    const bot = randomUUID();
    const key = await mintKey(bot, ['messages:write', 'messages:read', 'conversations:write']);
    expect(key.key).toMatch(/^rc_[0-9a-f]{24}_[A-Za-z0-9_-]{43}$/);
    const stored = await s.query<{ key_hash: Buffer }>('SELECT key_hash FROM api_keys WHERE id = $1', [key.key_id]);
    // The secret is base64url and may itself contain '_', so it is cut by position, not split on '_'.
    const secret = key.key.slice('rc_'.length + 24 + 1);
    expect(secret).toHaveLength(43);
    expect(stored[0]!.key_hash.toString('hex')).not.toContain(secret);
    expect(stored[0]!.key_hash.toString('base64url')).not.toContain(secret);
    expect(JSON.stringify(await s.query('SELECT * FROM api_keys'))).not.toContain(key.key);
    // The bot creates a conversation with alice (it acts as its own user), alice listens.
    const conv = await createConversation(s, key.key, [alice.userId], 'bot room');
    const c = await TestClient.connect(s.wsUrl, alice.token);
    open.push(c);
    const sent = await http(s, 'POST', `/v1/conversations/${conv}/messages`, {
      token: key.key,
      body: { idempotency_key: 'bot-1', payload: { text: 'hello from the bot' } },
    });
    expect(sent.status, JSON.stringify(sent.body)).toBe(201);
    expect(sent.body.sender_id).toBe(bot);
    const live = await c.waitFor((f) => f.type === 'message' && f.message.message_id === sent.body.message_id);
    expect(live.message.sender_id).toBe(bot);
    expect(live.message.payload).toEqual({ text: 'hello from the bot' });
    // The list never shows the key itself.
    const list = await http(s, 'GET', `/v1/admin/api-keys?user_id=${bot}`, { token: ADMIN });
    expect(list.status).toBe(200);
    expect(list.body.api_keys.map((k: any) => k.key_id)).toEqual([key.key_id]);
    expect(JSON.stringify(list.body)).not.toContain(key.key);
  });

  it('scopes are enforced per route: without messages:write a send is 403', async () => {
    const alice = await s.token();
    const bot = randomUUID();
    const conv = await createConversation(s, alice.token, [bot]);
    const reader = await mintKey(bot, ['messages:read']);
    const send = await http(s, 'POST', `/v1/conversations/${conv}/messages`, {
      token: reader.key,
      body: { idempotency_key: 'k1', payload: { text: 'x' } },
    });
    expect(send.status).toBe(403);
    expect(send.body.error.code).toBe('forbidden');
    expect(send.body.error.message).toContain('messages:write');
    expect((await http(s, 'GET', `/v1/conversations/${conv}/messages`, { token: reader.key })).status).toBe(200);
    // Other user scopes and the admin scopes are separate.
    expect((await http(s, 'GET', '/v1/conversations', { token: reader.key })).status).toBe(403);
    expect((await http(s, 'GET', '/v1/admin/api-keys', { token: reader.key })).status).toBe(403);
    // A key with api_keys:admin may administer keys, not webhooks.
    const keyAdmin = await mintKey(randomUUID(), ['api_keys:admin']);
    expect((await http(s, 'GET', '/v1/admin/api-keys', { token: keyAdmin.key })).status).toBe(200);
    expect((await http(s, 'GET', '/v1/admin/webhooks', { token: keyAdmin.key })).status).toBe(403);
    // The admin token acts for no user.
    expect((await http(s, 'GET', '/v1/conversations', { token: ADMIN })).status).toBe(403);
  });

  it('a revoked key is 401; revoking again answers the same; an unknown key is 401', async () => {
    const alice = await s.token();
    const bot = randomUUID();
    const conv = await createConversation(s, alice.token, [bot]);
    const key = await mintKey(bot, ['messages:write']);
    const send = (k: string, n: number) =>
      http(s, 'POST', `/v1/conversations/${conv}/messages`, { token: k, body: { idempotency_key: `r${n}`, payload: n } });
    expect((await send(key.key, 1)).status).toBe(201);
    const revoked = await http(s, 'DELETE', `/v1/admin/api-keys/${key.key_id}`, { token: ADMIN });
    expect(revoked.status).toBe(200);
    expect(revoked.body.revoked_at).toBeTypeOf('string');
    const r = await send(key.key, 2);
    expect(r.status).toBe(401);
    expect(r.body.error.code).toBe('unauthorized');
    expect((await http(s, 'DELETE', `/v1/admin/api-keys/${key.key_id}`, { token: ADMIN })).body.revoked_at).toBe(revoked.body.revoked_at);
    expect((await http(s, 'DELETE', `/v1/admin/api-keys/${'0'.repeat(24)}`, { token: ADMIN })).status).toBe(404);
    // Same id, another secret; and a key-shaped string that matches nothing.
    expect((await send(`rc_${key.key_id}_${'A'.repeat(43)}`, 3)).status).toBe(401);
    expect((await send(`rc_${'1'.repeat(24)}_${'A'.repeat(43)}`, 4)).status).toBe(401);
  });

  it('API keys are refused over the WebSocket (JWT only there)', async () => {
    const key = await mintKey(randomUUID(), ['messages:read']);
    await expect(TestClient.connect(s.wsUrl, key.key)).rejects.toThrow(/unauthorized/);
  });
});

describe('without REALCHAT_ADMIN_TOKEN', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer('pglite');
  });
  afterAll(async () => s?.close());

  it('the admin routes are 404 for everyone', async () => {
    const alice = await s.token();
    const r = await http(s, 'POST', '/v1/admin/api-keys', {
      token: alice.token,
      body: { user_id: alice.userId, name: 'x', scopes: ['messages:write'] },
    });
    expect(r.status).toBe(404);
    expect((await http(s, 'GET', '/v1/admin/webhooks')).status).toBe(404);
  });
});
