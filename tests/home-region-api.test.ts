/**
 * The home region in the API (docs/multi-region.md): conversations show where they are homed; a
 * create may name only this region for now; a write to a conversation homed elsewhere (a copy) is
 * refused `unavailable` with reason `home_elsewhere` and leaves nothing behind. Both backends.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCopyOf } from './harness/regions.js';
import { BACKENDS, createConversation, http, startTestServer, type TestServer } from './harness/server.js';

describe.each(BACKENDS)('home region in the API (%s)', (backend) => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer(backend, { REALCHAT_REGION: 'eu-1' });
  });
  afterAll(() => s?.close());

  it('a conversation is homed in the region that created it; only that region may be asked for', async () => {
    const alice = await s.token();
    const created = await http(s, 'POST', '/v1/conversations', { token: alice.token, body: { member_ids: [] } });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ home_region: 'eu-1', home_epoch: 0 });
    const named = await http(s, 'POST', '/v1/conversations', { token: alice.token, body: { member_ids: [], home_region: 'eu-1' } });
    expect(named.status).toBe(201);
    for (const home_region of ['us-1', null, '', 'EU-1']) {
      const r = await http(s, 'POST', '/v1/conversations', { token: alice.token, body: { member_ids: [], home_region } });
      expect([home_region, r.status, r.body.error?.code]).toEqual([home_region, 400, 'invalid_request']);
    }
    const listed = await http(s, 'GET', '/v1/conversations', { token: alice.token });
    expect(listed.body.conversations).toHaveLength(2);
    for (const c of listed.body.conversations) expect(c).toMatchObject({ home_region: 'eu-1', home_epoch: 0 });
  });

  it('a send to a conversation homed elsewhere is refused unavailable (home_elsewhere), and nothing is written', async () => {
    const alice = await s.token();
    const conv = await createConversation(s, alice.token, []);
    // Make it a copy, as the mirror applier writes one (sql/migrations/0013_regions.sql).
    await makeCopyOf((t, p) => s.query(t, p), conv, 'us-1');
    const r = await http(s, 'POST', `/v1/conversations/${conv}/messages`, {
      token: alice.token,
      body: { payload: { text: 'hi' } },
      headers: { 'idempotency-key': 'k1' },
    });
    expect(r.status, JSON.stringify(r.body)).toBe(503);
    expect(r.body.error, JSON.stringify(r.body)).toMatchObject({ code: 'unavailable', reason: 'home_elsewhere' });
    expect(r.headers.get('retry-after')).toBe('1');
    expect(await s.query(`SELECT id FROM messages WHERE conversation_id = '${conv}'`)).toEqual([]);
    const listed = await http(s, 'GET', '/v1/conversations', { token: alice.token });
    expect(listed.body.conversations.find((c: { conversation_id: string }) => c.conversation_id === conv)).toMatchObject({
      home_region: 'us-1',
      last_sequence: 0,
    });
  });
});
