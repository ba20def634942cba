/**
 * Overload on the single-connection embedded database: sends beyond what can wait are refused at
 * once with `unavailable` (bounded queue), and everything accepted is still delivered promptly — the
 * relay is not starved behind an unbounded backlog of queued queries.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LogSink, createConversation, http, startTestServer, type TestServer } from './harness/server.js';
import { TestClient } from './harness/ws-client.js';

describe('overload (embedded database)', () => {
  let s: TestServer;
  const logs = new LogSink();
  beforeAll(async () => {
    s = await startTestServer(
      'pglite',
      { REALCHAT_DB_MAX_QUEUED: '8', REALCHAT_SENDS_PER_S: '100000', REALCHAT_SEND_BURST: '100000' },
      {},
      { logs },
    );
  });
  afterAll(async () => s?.close());

  it('refuses what cannot wait, delivers everything accepted', async () => {
    const alice = await s.token();
    const bob = await s.token();
    const conv = await createConversation(s, alice.token, [bob.userId]);
    const b = await TestClient.connect(s.wsUrl, bob.token);
    const results = await Promise.all(
      Array.from({ length: 300 }, (_, i) =>
        http(s, 'POST', `/v1/conversations/${conv}/messages`, { token: alice.token, body: { idempotency_key: `o${i}`, payload: i } }),
      ),
    );
    const accepted = results.filter((r) => r.status === 201);
    const refused = results.filter((r) => r.status === 503);
    expect(accepted.length + refused.length).toBe(300);
    expect(refused.length).toBeGreaterThan(0);
    expect(refused[0]!.body.error.code).toBe('unavailable');
    expect(refused[0]!.headers.get('retry-after')).toBe('1');
    // The operator sees which bound refused them, in a rate-limited warning (not one line per refusal).
    const lines = logs.find((l) => l.kind === 'refused:unavailable');
    expect(lines.length).toBeGreaterThan(0);
    expect(lines.length).toBeLessThanOrEqual(Math.min(10, refused.length));
    expect(lines[0]).toMatchObject({ level: 'warn', code: 'unavailable', reason: expect.stringMatching(/busy|unavailable/) });
    expect(refused.map((r) => r.body.error.message)).toContain(lines[0]!.reason);
    await b.waitForCount((f) => f.type === 'message', accepted.length, 15_000);
    expect(b.messages(conv).map((m) => m.sequence_number)).toEqual(Array.from({ length: accepted.length }, (_, i) => i + 1));
    b.close();
  });
});
