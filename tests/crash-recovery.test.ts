/**
 * kill -9 of the gateway process mid-stream, with a real PostgreSQL: clients reconnect, resend
 * unacknowledged messages with the same idempotency keys, resume by sequence, and the recorded
 * history shows nothing lost, nothing duplicated, order intact.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAuthenticator } from '../gateway/auth.js';
import { freePort } from './harness/postgres.js';
import { freshDatabase } from './harness/server.js';
import { spawnRole, type RoleProcess } from './harness/stack.js';
import { CLEAN_REPORT, History, type StoredMessage } from './harness/history.js';
import { TestClient } from './harness/ws-client.js';

describe('gateway crash mid-stream (kill -9)', () => {
  let databaseUrl: string;
  let port: number;
  let server: RoleProcess | null = null;
  const secret = randomBytes(32).toString('hex');
  const env = () => ({
    DATABASE_URL: databaseUrl,
    REALCHAT_JWT_SECRET: secret,
    REALCHAT_SENDS_PER_S: '10000',
    REALCHAT_SEND_BURST: '10000',
  });

  beforeAll(async () => {
    databaseUrl = await freshDatabase();
    port = await freePort();
    server = await spawnRole('standalone', { ...env(), PORT: String(port) });
  });
  afterAll(async () => {
    await server?.crash();
  });

  it('loses nothing acknowledged, duplicates nothing, keeps order', async () => {
    const auth = createAuthenticator({ secret });
    const alice = randomUUID();
    const bob = randomUUID();
    const [at, bt] = [await auth.issue(alice), await auth.issue(bob)];
    const http = `http://127.0.0.1:${port}`;
    const ws = `ws://127.0.0.1:${port}/v1/ws`;
    const created = await fetch(`${http}/v1/conversations`, {
      method: 'POST',
      headers: { authorization: `Bearer ${at}` },
      body: JSON.stringify({ member_ids: [bob] }),
    });
    const conv = ((await created.json()) as { conversation_id: string }).conversation_id;

    const N = 120;
    const history = new History();
    const bobFrames: TestClient[] = [];
    let b = await TestClient.connect(ws, bt);
    bobFrames.push(b);
    let a = await TestClient.connect(ws, at);

    /** Sends keys [from, N) in windows of 10 in flight; returns the index of the first unacked key when the socket dies. */
    const pump = async (client: TestClient, from: number, stopAfterAcks: number | null): Promise<number> => {
      let i = from;
      let acked = 0;
      while (i < N) {
        const window = Array.from({ length: Math.min(10, N - i) }, (_, k) => i + k);
        const since = client.frames.length;
        for (const k of window) {
          history.send(alice, conv, `k${k}`);
          client.send({ type: 'send', conversation_id: conv, idempotency_key: `k${k}`, payload: { k } });
        }
        try {
          await client.waitForCount(
            (f) => f.type === 'ack',
            window.length + client.frames.slice(0, since).filter((f) => f.type === 'ack').length,
            10_000,
          );
        } catch {
          break;
        }
        for (const f of client.frames.slice(since)) if (f.type === 'ack') history.ack(alice, f.idempotency_key, f as never);
        i += window.length;
        acked += window.length;
        if (stopAfterAcks !== null && acked >= stopAfterAcks) {
          // Crash with the next window in flight: some of it may commit without an ack.
          for (let k = i; k < Math.min(i + 10, N); k++)
            client.send({ type: 'send', conversation_id: conv, idempotency_key: `k${k}`, payload: { k } });
          await server!.crash();
          break;
        }
      }
      for (const f of client.frames) if (f.type === 'ack') history.ack(alice, f.idempotency_key, f as never);
      return i;
    };

    const resumeAt = await pump(a, 0, 40);
    expect(resumeAt).toBeGreaterThanOrEqual(40);
    await a.waitClosed();
    await b.waitClosed();

    server = await spawnRole('standalone', { ...env(), PORT: String(port) });
    const lastSeen = Math.max(0, ...b.messages(conv).map((m) => m.sequence_number));
    b = await TestClient.connect(ws, bt, { [conv]: lastSeen });
    bobFrames.push(b);
    a = await TestClient.connect(ws, at);
    const end = await pump(a, resumeAt, null);
    expect(end).toBe(N);
    await b.waitFor((f) => f.type === 'message' && f.message.sequence_number === N, 20_000);

    for (const c of bobFrames) for (const m of c.messages(conv)) history.receive(bob, m as StoredMessage);
    const sql = postgres(databaseUrl, { max: 1 });
    const stored = await sql<StoredMessage[]>`
      SELECT conversation_id, sequence::int AS sequence_number, id AS message_id, sender_id, idempotency_key, payload
      FROM messages WHERE conversation_id = ${conv} ORDER BY sequence`;
    await sql.end();
    const report = history.check([...stored], () => [bob]);
    expect(report).toEqual(CLEAN_REPORT);
    expect(stored).toHaveLength(N);
    expect(new Set(stored.map((m) => m.idempotency_key)).size).toBe(N);
    a.close();
    b.close();
  });
});
