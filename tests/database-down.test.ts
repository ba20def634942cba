import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPostgres, type PostgresServer } from './harness/postgres.js';
import { createConversation, http, startTestServer, type TestServer } from './harness/server.js';
import { TestClient, type Frame } from './harness/ws-client.js';

describe('database down', () => {
  let pg: PostgresServer;
  let s: TestServer;
  beforeAll(async () => {
    pg = await startPostgres();
    s = await startTestServer('postgres', {
      DATABASE_URL: pg.url,
      REALCHAT_DB_QUERY_TIMEOUT_MS: '1500',
      REALCHAT_DB_CONNECT_TIMEOUT_S: '1',
    });
  });
  afterAll(async () => {
    await s?.close().catch(() => {});
    pg?.stop();
  });

  it('refuses sends with unavailable (503 + Retry-After), keeps connections, and accepts the same key once it is back', async () => {
    const alice = await s.token();
    const bob = await s.token();
    const conv = await createConversation(s, alice.token, [bob.userId]);
    const a = await TestClient.connect(s.wsUrl, alice.token);
    const b = await TestClient.connect(s.wsUrl, bob.token);
    expect((await a.sendMessage(conv, 'before', 1)).type).toBe('ack');
    await b.waitFor((f) => f.type === 'message');

    pg.kill();
    const refused = await a.sendMessage(conv, 'during', 2);
    expect(refused).toMatchObject({ type: 'error', code: 'unavailable', ref: 'during' });
    const rest = await http(s, 'POST', `/v1/conversations/${conv}/messages`, {
      token: alice.token,
      body: { idempotency_key: 'during-rest', payload: 3 },
    });
    expect(rest.status).toBe(503);
    expect(rest.body.error.code).toBe('unavailable');
    expect(rest.headers.get('retry-after')).toBe('1');
    expect((await http(s, 'GET', '/readyz')).status).toBe(503);
    expect(a.closeCode).toBeNull();

    pg.restart();
    let ack: Frame | undefined;
    for (let i = 0; i < 20; i++) {
      ack = await a.sendMessage(conv, 'during', 2);
      if (ack.type === 'ack') break;
      await new Promise((r) => setTimeout(r, 250));
    }
    expect(ack).toMatchObject({ type: 'ack', sequence_number: 2 });
    expect((await http(s, 'GET', '/readyz')).status).toBe(200);
    await b.waitFor((f) => f.type === 'message' && f.message.sequence_number === 2);
    const rows = await s.query<{ seq: number; key: string }>(
      `SELECT sequence::int AS seq, idempotency_key AS key FROM messages WHERE conversation_id = $1 ORDER BY sequence`,
      [conv],
    );
    expect(rows).toEqual([
      { seq: 1, key: 'before' },
      { seq: 2, key: 'during' },
    ]);
    a.close();
    b.close();
  });
});
