/**
 * The gateway's PostgreSQL breaker as an operator sees it: a send that times out is refused
 * `unavailable` with what tripped it in the warning (`cause`), the breaker's opening is logged once
 * and gauged (`realchat_breaker_open{dependency="postgres"}`),
 * sends meanwhile are refused at once with a message that says so, and its closing is logged when
 * a probe succeeds. Before these lines the refusals of a breaker and of slow statements read alike
 * (perf/README.md, "Tenth round").
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import postgres from 'postgres';
import { LogSink, createConversation, freshDatabase, http, startTestServer, type TestServer } from './harness/server.js';

describe('PostgreSQL breaker (real PostgreSQL)', () => {
  let s: TestServer;
  let side: postgres.Sql;
  const logs = new LogSink();
  beforeAll(async () => {
    const url = await freshDatabase();
    s = await startTestServer(
      'postgres',
      {
        DATABASE_URL: url,
        REALCHAT_DB_QUERY_TIMEOUT_MS: '500',
        REALCHAT_BREAKER_POSTGRES_FAILURES: '1',
        REALCHAT_BREAKER_POSTGRES_OPEN_MS: '2000',
      },
      {},
      { logs },
    );
    side = postgres(url, { max: 1, onnotice: () => {} });
  });
  afterAll(async () => {
    await side?.end({ timeout: 1 });
    await s?.close();
  });

  it('a timed-out send names its cause; the breaker logs opening once, refuses at once while open, and logs closing', async () => {
    const alice = await s.token();
    const bob = await s.token();
    const conv = await createConversation(s, alice.token, [bob.userId]);
    const breakerGauge = async () => (await s.app.metrics.breakerOpen.get()).values.find((v) => v.labels.dependency === 'postgres')?.value;
    expect(await breakerGauge()).toBe(0);
    const send = (key: string) =>
      http(s, 'POST', `/v1/conversations/${conv}/messages`, { token: alice.token, body: { idempotency_key: key, payload: key } });

    // Another transaction holds the conversation's row: the send's batch waits for it past the timeout.
    let release!: () => void;
    const held = new Promise<void>((r) => {
      release = r;
    });
    let locked!: () => void;
    const lockTaken = new Promise<void>((r) => {
      locked = r;
    });
    const holder = side.begin(async (tx) => {
      await tx`SELECT 1 FROM conversations WHERE id = ${conv} FOR UPDATE`;
      locked();
      await held;
    });
    await lockTaken;
    try {
      const timedOut = await send('k1');
      expect(timedOut.status).toBe(503);
      expect(timedOut.body.error.code).toBe('unavailable');
      const refusal = logs.find((l) => l.kind === 'refused:unavailable')[0];
      // Whichever fired first: the gateway's own timeout, or the statement_timeout it sets to match.
      expect(refusal).toMatchObject({
        level: 'warn',
        cause: expect.stringMatching(
          /^(TimeoutError: .*timed out after 500 ms|PostgresError 57014: canceling statement due to statement timeout)/,
        ),
      });
      expect(logs.find((l) => l.kind === 'breaker:postgres')).toMatchObject([{ level: 'warn', state: 'open' }]);
      expect(await breakerGauge()).toBe(1);

      // Open: refused at once, without waiting for the database.
      const t0 = performance.now();
      const atOnce = await send('k2');
      expect(atOnce.status).toBe(503);
      expect(atOnce.body.error.message).toMatch(/refused at once/);
      expect(performance.now() - t0).toBeLessThan(400);
    } finally {
      release();
      await holder;
    }
    // After OPEN_MS a probe goes through, succeeds, and closes it.
    await new Promise((r) => setTimeout(r, 2100));
    const ok = await send('k3');
    expect(ok.status).toBe(201);
    expect(logs.find((l) => l.kind === 'breaker:postgres').map((l) => l.state)).toEqual(['open', 'closed']);
    expect(await breakerGauge()).toBe(0);
  });
});
