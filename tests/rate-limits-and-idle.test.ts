import { connect } from 'node:net';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createConversation, http, startTestServer, type TestServer } from './harness/server.js';
import { TestClient } from './harness/ws-client.js';

describe('rate limits and idle connections', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer('pglite', {
      REALCHAT_SENDS_PER_S: '1',
      REALCHAT_SEND_BURST: '3',
      REALCHAT_FRAMES_PER_S: '5',
      REALCHAT_FRAME_BURST: '20',
      REALCHAT_IDLE_TIMEOUT_S: '8',
    });
  });
  afterAll(async () => s?.close());

  it('sends beyond the per-user rate are refused with rate_limited (WS) and 429 + Retry-After (REST), and store nothing', async () => {
    const alice = await s.token();
    const conv = await createConversation(s, alice.token, []);
    const a = await TestClient.connect(s.wsUrl, alice.token);
    const answers = [];
    for (let i = 0; i < 4; i++) answers.push(await a.sendMessage(conv, `r${i}`, i));
    expect(answers.slice(0, 3).map((f) => f.type)).toEqual(['ack', 'ack', 'ack']);
    expect(answers[3]).toMatchObject({ type: 'error', code: 'rate_limited', ref: 'r3' });
    const rest = await http(s, 'POST', `/v1/conversations/${conv}/messages`, {
      token: alice.token,
      body: { idempotency_key: 'rest', payload: 1 },
    });
    expect(rest.status).toBe(429);
    expect(rest.body.error.code).toBe('rate_limited');
    expect(rest.headers.get('retry-after')).toBe('1');
    const rows = await s.query<{ n: number }>(`SELECT count(*)::int AS n FROM messages WHERE conversation_id = $1`, [conv]);
    expect(rows[0]!.n).toBe(3);
    a.close();
  });

  it('frames beyond the per-connection rate are refused, and the connection stays usable', async () => {
    const alice = await s.token();
    const a = await TestClient.connect(s.wsUrl, alice.token);
    for (let i = 0; i < 30; i++) a.send({ type: 'ping' });
    const limited = await a.waitFor((f) => f.type === 'error' && f.code === 'rate_limited');
    expect(limited.message).toMatch(/frames/);
    expect(a.closeCode).toBeNull();
    await new Promise((r) => setTimeout(r, 1200));
    const since = a.frames.length;
    a.send({ type: 'ping' });
    await a.waitFor((f) => f.type === 'pong', 5000, since);
    a.close();
  });

  it('a peer that stops answering (no pongs, no frames) is closed by the idle timeout', async () => {
    const alice = await s.token();
    // Control: an equally idle client that answers the server's pings (the ws library does) stays open.
    const control = await TestClient.connect(s.wsUrl, alice.token);
    // A minimal raw WebSocket client: handshake, one masked hello frame, then silence (it never
    // answers the server's pings), reading everything so only the server can end the connection.
    const sock = connect({ host: '127.0.0.1', port: s.app.port });
    await new Promise<void>((resolve) => sock.once('connect', () => resolve()));
    sock.write(
      `GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    );
    let received = '';
    sock.on('data', (d) => (received += d.toString('latin1')));
    await new Promise((r) => setTimeout(r, 200));
    expect(received).toMatch(/^HTTP\/1.1 101/);
    const payload = Buffer.from(JSON.stringify({ type: 'hello', token: alice.token }));
    const mask = randomBytes(4);
    const masked = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]!));
    const header =
      payload.length < 126
        ? Buffer.from([0x81, 0x80 | payload.length])
        : Buffer.from([0x81, 0x80 | 126, payload.length >> 8, payload.length & 255]);
    sock.write(Buffer.concat([header, mask, masked]));
    const t0 = Date.now();
    await new Promise<void>((resolve) => sock.once('close', () => resolve()));
    const elapsed = Date.now() - t0;
    expect(received).toContain('"welcome"');
    // uWS checks timeouts on a 4 s tick: the close comes between idleTimeout - 4 s and idleTimeout.
    expect(elapsed).toBeGreaterThanOrEqual(4_000);
    expect(elapsed).toBeLessThan(30_000);
    await new Promise((r) => setTimeout(r, 6000));
    expect(control.closeCode).toBeNull();
    control.close();
  }, 40_000);
});
