/**
 * RealChatClient against a fake WebSocket (no server): the injected clock is the one the client
 * reads, and the client applies the reconnect policy's decisions (client/reconnect-policy.ts).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { RealChatClient, type ClientOptions, type StateChange } from '../client/index.js';
import { until } from './harness/until.js';
import { FakeServer } from './harness/fake-socket.js';

const clients: RealChatClient[] = [];
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});

/** random() = 0: every backoff delay is 0 ms, so reconnects happen at once. */
function makeClient(opts: Partial<ClientOptions> = {}) {
  const server = new FakeServer();
  const clock = { ms: 1_000_000 };
  const client = new RealChatClient({
    url: 'ws://fake/v1/ws',
    token: 't',
    WebSocket: server.WebSocket,
    random: () => 0,
    now: () => clock.ms,
    ...opts,
  });
  clients.push(client);
  const states: StateChange[] = [];
  client.on('state', (c) => states.push(c));
  return { client, server, clock, states };
}

describe('the injected clock', () => {
  it('decides whether a connection was short-lived (the backoff is not reset)', async () => {
    const h = makeClient();
    await h.client.connect();
    h.clock.ms += 60_000; // lived a minute by the fake clock (a few ms by the real one)
    h.server.last.serverClose(4000, 'draining');
    expect(h.states.at(-1)).toMatchObject({ state: 'reconnecting', attempt: 1, reason: '4000 draining' });
    await until('welcomed again', () => h.client.connectionState === 'connected');

    h.clock.ms += 100; // short-lived by the fake clock
    h.server.last.serverClose(4000, 'draining');
    expect(h.states.at(-1)).toMatchObject({ state: 'reconnecting', attempt: 2 });
  });

  it('throttles typing', async () => {
    const h = makeClient({ typingThrottleMs: 1000 });
    await h.client.connect();
    const typing = () => h.server.last.sent.filter((f) => f.type === 'typing').length;
    h.client.typing('c1');
    h.client.typing('c1');
    expect(typing()).toBe(1);
    h.clock.ms += 999;
    h.client.typing('c1');
    expect(typing()).toBe(1);
    h.clock.ms += 1;
    h.client.typing('c1');
    expect(typing()).toBe(2);
  });
});

describe('the client applies the reconnect policy', () => {
  it('4500 with a token provider: one more attempt with a fresh token, then closed as unauthorized', async () => {
    let issued = 0;
    const h = makeClient({ token: () => `t${++issued}` });
    h.server.welcome = false;
    const connected = h.client.connect().catch((e: unknown) => e);
    await until('hello 1', () => h.server.sockets[0]?.sent.length === 1);
    h.server.last.serverClose(4500, 'unauthorized');
    expect(h.states.at(-1)).toMatchObject({ state: 'connecting', attempt: 1 });
    await until('hello 2', () => h.server.sockets[1]?.sent.length === 1);
    expect(h.server.sockets.map((s) => s.sent[0]?.token)).toEqual(['t1', 't2']);
    h.server.last.serverClose(4500, 'unauthorized');
    expect(h.client.connectionState).toBe('closed');
    expect(h.states.at(-1)).toMatchObject({ state: 'closed', reason: '4500 unauthorized', error: { code: 'unauthorized' } });
    expect(await connected).toMatchObject({ code: 'unauthorized' });
    await expect(h.client.send('c1', 'x')).rejects.toMatchObject({ code: 'closed' });
  });

  it("a 4501 stops for good and fails queued sends with the policy's error", async () => {
    const h = makeClient();
    await h.client.connect();
    h.server.welcome = false;
    h.server.last.serverClose(1006, 'gone');
    await until('hello 2', () => h.server.sockets[1]?.sent.length === 1);
    const queued = h.client.send('c1', 'x');
    h.server.last.serverClose(4501, 'protocol violation');
    await expect(queued).rejects.toMatchObject({
      code: 'invalid_frame',
      message: 'server closed the connection (4501 protocol violation); not reconnecting',
    });
    expect(h.states.at(-1)).toMatchObject({ state: 'closed', attempt: 2 }); // the drop right after welcome counted as attempt 1
  });

  it("a reconnect frame's retry_after_ms is used for the next attempt only", async () => {
    const h = makeClient();
    await h.client.connect();
    h.clock.ms += 60_000;
    h.server.last.receive({ type: 'reconnect', reason: 'draining', retry_after_ms: 30 });
    h.server.last.serverClose(4000, 'draining');
    expect(h.states.at(-1)).toMatchObject({ state: 'reconnecting', retryInMs: 30 });
    await until('welcomed again', () => h.client.connectionState === 'connected');
    h.clock.ms += 60_000;
    h.server.last.serverClose(4000, 'draining');
    expect(h.states.at(-1)).toMatchObject({ state: 'reconnecting', retryInMs: 0 });
  });

  it("network offline: 'offline' with the cap as the delay; online reconnects at once", async () => {
    const h = makeClient({ reconnectCapMs: 60_000 });
    await h.client.connect();
    h.client.setNetworkAvailable(false);
    expect(h.states.at(-1)).toMatchObject({ state: 'offline', retryInMs: 60_000 });
    h.client.setNetworkAvailable(true);
    expect(h.states.at(-1)).toMatchObject({ state: 'reconnecting', attempt: 0 });
    await until('welcomed again', () => h.client.connectionState === 'connected');
  });
});
