import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BACKENDS, createConversation, startTestServer, type TestServer } from './harness/server.js';
import { TestClient } from './harness/ws-client.js';

describe.each(BACKENDS)('resume after disconnect (%s)', (backend) => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer(backend, {
      REALCHAT_SENDS_PER_S: '10000',
      REALCHAT_SEND_BURST: '10000',
      REALCHAT_FRAMES_PER_S: '10000',
      REALCHAT_FRAME_BURST: '10000',
    });
  });
  afterAll(async () => s?.close());

  it('a resumed connection gets exactly the missed messages, in order, then synced, then live ones', async () => {
    const alice = await s.token();
    const bob = await s.token();
    const conv = await createConversation(s, alice.token, [bob.userId]);
    const a = await TestClient.connect(s.wsUrl, alice.token);
    const b = await TestClient.connect(s.wsUrl, bob.token);
    for (let i = 1; i <= 3; i++) await a.sendMessage(conv, `m${i}`, i);
    await b.waitForCount((f) => f.type === 'message', 3);
    b.close();
    for (let i = 4; i <= 10; i++) await a.sendMessage(conv, `m${i}`, i);

    const b2 = await TestClient.connect(s.wsUrl, bob.token, { [conv]: 3 });
    const synced = await b2.waitFor((f) => f.type === 'synced');
    expect(synced).toEqual({ type: 'synced', conversation_id: conv, last_sequence: 10 });
    const types = b2.frames.map((f) => f.type);
    expect(types.slice(0, 1)).toEqual(['welcome']);
    expect(types.indexOf('synced')).toBe(8);
    expect(b2.messages(conv).map((m) => m.sequence_number)).toEqual([4, 5, 6, 7, 8, 9, 10]);

    await a.sendMessage(conv, 'm11', 11);
    await b2.waitFor((f) => f.type === 'message' && f.message.sequence_number === 11);
    expect(b2.messages(conv).map((m) => m.sequence_number)).toEqual([4, 5, 6, 7, 8, 9, 10, 11]);
    a.close();
    b2.close();
  });

  it('messages committed while resuming are delivered once, in order, without a gap', async () => {
    const alice = await s.token();
    const bob = await s.token();
    const conv = await createConversation(s, alice.token, [bob.userId]);
    const a = await TestClient.connect(s.wsUrl, alice.token);
    // Windows of 50 requests in flight (the server refuses more than 64 per connection).
    const pump = (async () => {
      for (let w = 0; w < 12; w++) {
        for (let i = w * 50 + 1; i <= w * 50 + 50; i++)
          a.send({ type: 'send', conversation_id: conv, idempotency_key: `p${i}`, payload: i });
        await a.waitForCount((f) => f.type === 'ack', w * 50 + 50, 30_000);
      }
    })();
    // Resume from 0 while the sender is still writing: catch-up and live path overlap.
    await a.waitForCount((f) => f.type === 'ack', 100, 30_000);
    const b = await TestClient.connect(s.wsUrl, bob.token, { [conv]: 0 });
    await pump;
    expect(a.frames.filter((f) => f.type === 'error')).toEqual([]);
    await b.waitForCount((f) => f.type === 'message', 600, 60_000);
    await new Promise((r) => setTimeout(r, 200));
    expect(b.messages(conv).map((m) => m.sequence_number)).toEqual(Array.from({ length: 600 }, (_, i) => i + 1));
    expect(b.frames.filter((f) => f.type === 'synced')).toHaveLength(1);
    a.close();
    b.close();
  });

  it('resume positions beyond the last sequence are clamped; non-member conversations are refused individually', async () => {
    const alice = await s.token();
    const eve = await s.token();
    const conv = await createConversation(s, alice.token, []);
    const a = await TestClient.connect(s.wsUrl, alice.token);
    await a.sendMessage(conv, 'x', 'x');
    const a2 = await TestClient.connect(s.wsUrl, alice.token, { [conv]: 99 });
    expect(await a2.waitFor((f) => f.type === 'synced')).toMatchObject({ last_sequence: 1 });
    const e = await TestClient.connect(s.wsUrl, eve.token, { [conv]: 0, '00000000-0000-4000-8000-000000000000': 0 });
    const errs = await e.waitForCount((f) => f.type === 'error', 2);
    expect(errs.map((f) => [f.code, f.ref]).sort()).toEqual(
      [
        ['forbidden', conv],
        ['not_found', '00000000-0000-4000-8000-000000000000'],
      ].sort(),
    );
    expect(e.messages()).toHaveLength(0);
    for (const c of [a, a2, e]) c.close();
  });

  it('sync pages through history with has_more', async () => {
    const alice = await s.token();
    const conv = await createConversation(s, alice.token, []);
    const a = await TestClient.connect(s.wsUrl, alice.token);
    for (let i = 1; i <= 5; i++) await a.sendMessage(conv, `h${i}`, i);
    a.send({ type: 'sync', conversation_id: conv, after_sequence: 1, limit: 3 });
    const page = await a.waitFor((f) => f.type === 'messages');
    expect(page.has_more).toBe(true);
    expect(page.messages.map((m: any) => m.sequence_number)).toEqual([2, 3, 4]);
    a.close();
  });
});
