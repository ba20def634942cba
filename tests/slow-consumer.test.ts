import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createConversation, startTestServer, type TestServer } from './harness/server.js';
import { TestClient } from './harness/ws-client.js';
import { UNLIMITED_RATES } from './harness/env.js';

describe('slow consumers are disconnected, never buffered without bound', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer('postgres', {
      REALCHAT_MAX_CONNECTION_BUFFER_BYTES: String(256 * 1024),
      ...UNLIMITED_RATES,
    });
  });
  afterAll(async () => s?.close());

  it('a reader that stops reading is closed with 4002 and catches up on reconnect', async () => {
    const alice = await s.token();
    const bob = await s.token();
    const conv = await createConversation(s, alice.token, [bob.userId]);
    const slow = await TestClient.connect(s.wsUrl, bob.token);
    // Stop reading from the socket: the server's send buffer for it fills up.
    (slow.ws as any)._socket.pause();
    const a = await TestClient.connect(s.wsUrl, alice.token);
    const payload = { text: 'p'.repeat(60 * 1024) };
    const N = 400;
    for (let w = 0; w < N / 50; w++) {
      for (let i = w * 50; i < w * 50 + 50; i++) a.send({ type: 'send', conversation_id: conv, idempotency_key: `s${i}`, payload });
      await a.waitForCount((f) => f.type === 'ack', w * 50 + 50, 30_000);
    }
    await a.waitForCount((f) => f.type === 'message', N, 30_000);
    (slow.ws as any)._socket.resume();
    expect(await slow.waitClosed(15_000)).toBe(4002);
    const got = slow.messages(conv).map((m) => m.sequence_number);
    expect(got.length).toBeLessThan(N);
    expect(got).toEqual(got.map((_, i) => i + 1));
    const last = got.length ? got[got.length - 1]! : 0;
    const again = await TestClient.connect(s.wsUrl, bob.token, { [conv]: last });
    await again.waitFor((f) => f.type === 'synced', 20_000);
    expect([...got, ...again.messages(conv).map((m) => m.sequence_number)]).toEqual(Array.from({ length: N }, (_, i) => i + 1));
    a.close();
    again.close();
  });
});
