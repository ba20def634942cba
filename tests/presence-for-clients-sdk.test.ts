/**
 * Presence for clients in the SDK (client/presence.ts) against a real server (pglite):
 * client.presence.subscribe() reports the status at once and on changes, subscribes again after a
 * reconnect (a change made while disconnected is seen), stops after its unsubscribe function, and
 * RestClient.getPresence() reads the same.
 */
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RealChatClient, RestClient, type Presence } from '../client/index.js';
import { createConversation, startTestServer, type TestServer } from './harness/server.js';
import { TestClient } from './harness/ws-client.js';
import { until } from './harness/until.js';

const GRACE_MS = 500;

describe('presence in the SDK (pglite)', () => {
  let s: TestServer;
  const sockets: WebSocket[] = [];
  /** The `ws` WebSocket, remembered so the test can cut a connection. */
  class Tracked extends WebSocket {
    constructor(url: string) {
      super(url);
      sockets.push(this);
    }
  }
  beforeAll(async () => {
    s = await startTestServer('pglite', { REALCHAT_PRESENCE_GRACE_MS: String(GRACE_MS) });
  });
  afterAll(async () => s?.close());

  it('subscribes, re-subscribes after a reconnect, unsubscribes', async () => {
    const alice = await s.token();
    const bob = await s.token();
    await createConversation(s, alice.token, [bob.userId]);
    const client = new RealChatClient({ url: s.wsUrl, token: alice.token, WebSocket: Tracked, reconnectBaseMs: 50, reconnectCapMs: 200 });
    const seen: Presence[] = [];
    try {
      await client.connect();
      const stop = client.presence.subscribe([bob.userId], (p) => seen.push(p));
      await until('first status', () => seen.length === 1);
      expect(seen[0]).toEqual({ type: 'presence', user_id: bob.userId, status: 'offline', last_seen_at: null });

      // Cut alice's connection; bob comes online while she is away.
      sockets.at(-1)!.terminate();
      await until('alice disconnected', () => client.connectionState !== 'connected');
      const b = await TestClient.connect(s.wsUrl, bob.token);
      await until('alice back', () => client.connectionState === 'connected', 10_000);
      await until('online after the reconnect', () => seen.at(-1)?.status === 'online', 10_000);
      expect(client.presence.get(bob.userId)?.status).toBe('online');

      b.close();
      await until('offline after the grace period', () => seen.at(-1)?.status === 'offline', 10_000);
      const rest = new RestClient({ baseUrl: s.http, token: alice.token });
      expect(await rest.getPresence(bob.userId)).toEqual({
        user_id: bob.userId,
        status: 'offline',
        last_seen_at: seen.at(-1)!.last_seen_at,
      });

      stop();
      const n = seen.length;
      const b2 = await TestClient.connect(s.wsUrl, bob.token);
      await new Promise((r) => setTimeout(r, 300));
      expect(seen).toHaveLength(n);
      expect(client.presence.size).toBe(0);
      b2.close();
    } finally {
      client.close();
    }
  });
});
