/**
 * Sending from the application's own transaction (sql/migrations/0009_send_in_transaction.sql):
 * `SELECT realchat_send(...)` inside the caller's transaction commits with it (delivered live like
 * any send) or rolls back with it (no row, no event, no sequence gap), under the API's rules.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import { BACKENDS, createConversation, http, startTestServer, type TestServer } from './harness/server.js';
import { TestClient } from './harness/ws-client.js';

describe.each(BACKENDS)('realchat_send in the caller transaction (%s)', (backend) => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer(backend);
  });
  afterAll(async () => s?.close());

  /** The SQLSTATE a statement fails with (null: it did not fail). */
  async function sqlState(text: string, params: unknown[]): Promise<string | null> {
    try {
      await s.query(text, params);
      return null;
    } catch (err) {
      return (err as { code?: string }).code ?? 'none';
    }
  }

  it('commits with the application change and is delivered live; a rollback leaves no message, no event and no sequence gap', async () => {
    const alice = await s.token();
    const bob = await s.token();
    const conv = await createConversation(s, alice.token, [bob.userId]);
    const b = await TestClient.connect(s.wsUrl, bob.token);
    await s.query('CREATE TABLE IF NOT EXISTS app_orders (id text PRIMARY KEY, state text NOT NULL)');

    // Rolled back: neither the order nor the message.
    await s.app.sql
      .begin(async (tx) => {
        await tx`INSERT INTO app_orders VALUES ('o-1', 'shipped')`;
        await tx`SELECT realchat_send(${conv}, ${alice.userId}, 'order-o-1', '{"text": "shipped"}'::jsonb)`;
        throw new Error('the application changes its mind');
      })
      .catch(() => {});
    expect(await s.query('SELECT 1 FROM app_orders WHERE id = $1', ['o-1'])).toEqual([]);
    expect(await s.query('SELECT 1 FROM messages WHERE conversation_id = $1', [conv])).toEqual([]);
    // Only the message's event: the conversation's creation wrote its own (members added), which
    // the relay may not have published and deleted yet on a slow machine.
    expect(await s.query("SELECT 1 FROM outbox WHERE aggregateid = $1 AND type = 'message.created'", [conv])).toEqual([]);

    // Committed: both, and the message takes sequence 1 (the rollback left no gap).
    const [row] = await s.app.sql.begin(async (tx) => {
      await tx`INSERT INTO app_orders VALUES ('o-2', 'shipped')`;
      return tx<{ envelope: Record<string, unknown> }[]>`
        SELECT realchat_send(${conv}, ${alice.userId}, 'order-o-2', '{"text": "Your order shipped"}'::jsonb) AS envelope`;
    });
    expect(row!.envelope).toMatchObject({
      conversation_id: conv,
      sender_id: alice.userId,
      sequence_number: 1,
      payload: { text: 'Your order shipped' },
    });
    const live = await b.waitFor((f) => f.type === 'message' && f.message.conversation_id === conv);
    expect(live.message).toEqual(row!.envelope);
    expect(live.via).toBe('live');
    // The API sees it as any other message, and the next send follows it.
    const next = await http(s, 'POST', `/v1/conversations/${conv}/messages`, {
      token: bob.token,
      body: { idempotency_key: 'k', payload: 'thanks' },
    });
    expect(next.body.sequence_number).toBe(2);
    b.close();
  });

  it("the API's rules: idempotency per sender and key, membership, existence, payload limits", async () => {
    const alice = await s.token();
    const eve = await s.token();
    const conv = await createConversation(s, alice.token, []);
    // Text cast to jsonb: a jsonb-typed parameter would be JSON-encoded once more by the driver.
    const send = 'SELECT realchat_send($1::uuid, $2::uuid, $3, $4::text::jsonb) AS envelope';
    const [first] = await s.query<{ envelope: { message_id: string } }>(send, [conv, alice.userId, 'same', '{"n": 1}']);
    const [again] = await s.query<{ envelope: { message_id: string } }>(send, [conv, alice.userId, 'same', '{"n": 1}']);
    expect(again!.envelope).toEqual(first!.envelope);
    expect(await sqlState(send, [conv, alice.userId, 'same', '{"n": 2}'])).toBe('RC409');
    expect(await sqlState(send, [conv, eve.userId, 'k', '1'])).toBe('RC403');
    expect(await sqlState(send, [randomUUID(), alice.userId, 'k', '1'])).toBe('RC404');
    expect(await sqlState(send, [conv, alice.userId, '', '1'])).toBe('RC400');
    expect(await sqlState(send, [conv, alice.userId, 'k'.repeat(129), '1'])).toBe('RC400');
    expect(await sqlState(send, [conv, alice.userId, 'deep', `${'['.repeat(65)}${']'.repeat(65)}`])).toBe('RC400');
    expect(await sqlState(send, [conv, alice.userId, 'deep-ok', `${'['.repeat(64)}${']'.repeat(64)}`])).toBeNull();
    expect(await sqlState(send, [conv, alice.userId, 'num', '1e400'])).toBe('RC400');
    expect(await sqlState(send, [conv, alice.userId, 'big', JSON.stringify('x'.repeat(70_000))])).toBe('RC400');
    // Refused sends wrote nothing: two messages (same, deep-ok), sequences 1 and 2.
    const rows = await s.query<{ sequence: number }>('SELECT sequence::int FROM messages WHERE conversation_id = $1 ORDER BY sequence', [
      conv,
    ]);
    expect(rows.map((r) => r.sequence)).toEqual([1, 2]);
  });
});
