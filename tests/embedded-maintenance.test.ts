/**
 * The embedded default maintains its own database (standalone/embedded-maintenance.ts). PGlite
 * has neither autovacuum nor a checkpointer, so the outbox, whose every row is deleted once
 * published, would keep the space of every event ever written, and the WAL would grow with every
 * write. The first case shows both on PGlite itself (if it ever starts doing this by itself, it
 * fails and the maintenance can go); the second that the maintenance reclaims both while nothing
 * is lost.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createConversation, startTestServer, type TestServer } from './harness/server.js';
import { TestClient } from './harness/ws-client.js';
import { UNLIMITED_RATES } from './harness/env.js';
import { until } from './harness/until.js';

const MESSAGES = 1500;
const PAYLOAD = 'x'.repeat(1000);

describe('embedded default: outbox space and WAL are reclaimed', () => {
  let s: TestServer | null = null;
  afterEach(async () => {
    await s?.close();
    s = null;
  });

  async function sendAll(server: TestServer): Promise<void> {
    const alice = await server.token();
    const conv = await createConversation(server, alice.token, []);
    const c = await TestClient.connect(server.wsUrl, alice.token);
    // Windows of 50: a connection may have 64 requests in flight.
    for (let w = 0; w < MESSAGES; w += 50) {
      for (let i = w; i < Math.min(MESSAGES, w + 50); i++)
        c.send({ type: 'send', conversation_id: conv, idempotency_key: `k-${i}`, payload: { text: PAYLOAD, i } });
      await c.waitForCount((f) => f.type === 'ack', Math.min(MESSAGES, w + 50), 60_000);
    }
    c.close();
    await until('the relay to publish every row', async () => (await outboxRows(server)) === 0, 30_000, 50);
    const [stored] = await server.query<{ n: number }>('SELECT count(*)::int AS n FROM messages');
    expect(stored!.n).toBe(MESSAGES);
  }
  const outboxRows = async (server: TestServer) => (await server.query<{ n: number }>('SELECT count(*)::int AS n FROM outbox'))[0]!.n;
  const outboxBytes = async (server: TestServer) =>
    Number((await server.query<{ b: string }>(`SELECT pg_relation_size('outbox')::text AS b`))[0]!.b);
  /** WAL written since the last checkpoint's redo point: what a restart would replay, and what cannot be recycled yet. */
  const walSinceCheckpoint = async (server: TestServer) =>
    Number(
      (
        await server.query<{ b: string }>(
          `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), redo_lsn)::bigint::text AS b FROM pg_control_checkpoint()`,
        )
      )[0]!.b,
    );

  it('without maintenance, PGlite keeps the space of every published row and every WAL byte since start', async () => {
    s = await startTestServer('pglite', { ...UNLIMITED_RATES, REALCHAT_EMBEDDED_MAINTENANCE_INTERVAL_MS: '0' });
    await sendAll(s);
    // A second look a while later: nothing reclaims it in the background either.
    await new Promise((r) => setTimeout(r, 1500));
    expect(await outboxBytes(s)).toBeGreaterThan(MESSAGES * PAYLOAD.length);
    expect(await walSinceCheckpoint(s)).toBeGreaterThan(MESSAGES * PAYLOAD.length);
  });

  it('with it, the empty outbox shrinks back to (almost) nothing and the WAL is checkpointed', async () => {
    s = await startTestServer('pglite', { ...UNLIMITED_RATES, REALCHAT_EMBEDDED_MAINTENANCE_INTERVAL_MS: '200' });
    await sendAll(s);
    await until('the outbox heap to be truncated', async () => (await outboxBytes(s!)) <= 64 * 1024, 15_000, 100);
    await until('a checkpoint after the writes', async () => (await walSinceCheckpoint(s!)) < 256 * 1024, 15_000, 100);
    expect(await outboxRows(s)).toBe(0);
  });
});
