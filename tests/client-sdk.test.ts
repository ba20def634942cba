/**
 * The client SDK against a real in-process server. Faults are injected through the SDK's own
 * extension point, the WebSocket constructor: a wrapper around the `ws` package that can drop or
 * duplicate frames, swallow everything (a dead link), refuse new connections or cut the socket.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { createConversation, startTestServer, type TestServer } from './harness/server.js';
import { freePort } from './harness/postgres.js';
import { createAuthenticator } from '../gateway/auth.js';
import {
  RealChatClient,
  RestClient,
  RealChatError,
  backoffDelay,
  type ClientOptions,
  type ConnectionState,
  type Envelope,
  type WebSocketConstructor,
  type WebSocketLike,
} from '../client/index.js';
import { until } from './harness/until.js';

type Frame = Record<string, any> & { type: string };

class Faults {
  /** Incoming frames for which this returns true are dropped. */
  dropIn: (f: Frame) => boolean = () => false;
  /** Incoming frames for which this returns true are delivered twice. */
  duplicateIn: (f: Frame) => boolean = () => false;
  /** Outgoing frames for which this returns true are dropped. */
  dropOut: (f: Frame) => boolean = () => false;
  /** Swallow every incoming frame (a dead connection). */
  blackhole = false;
  /** New connections fail (network down). */
  refuse = false;
  opened = 0;
  readonly sockets = new Set<WebSocket>();

  /** Cuts every socket abruptly, as a network failure would. */
  cut(): void {
    for (const s of this.sockets) s.terminate();
  }

  reset(): void {
    this.dropIn = () => false;
    this.duplicateIn = () => false;
    this.dropOut = () => false;
    this.blackhole = false;
    this.refuse = false;
  }
}

function faultyWebSocket(faults: Faults): WebSocketConstructor {
  return class FaultyWebSocket implements WebSocketLike {
    onopen: ((ev: any) => void) | null = null;
    onmessage: ((ev: { data: unknown }) => void) | null = null;
    onclose: ((ev: { code: number; reason: string }) => void) | null = null;
    onerror: ((ev: any) => void) | null = null;
    private readonly ws: WebSocket;

    constructor(url: string) {
      faults.opened++;
      this.ws = new WebSocket(faults.refuse ? 'ws://127.0.0.1:9/' : url);
      faults.sockets.add(this.ws);
      this.ws.on('open', () => this.onopen?.({}));
      this.ws.on('message', (data, isBinary) => {
        if (isBinary) return;
        const text = data.toString();
        const frame = JSON.parse(text) as Frame;
        if (faults.blackhole || faults.dropIn(frame)) return;
        this.onmessage?.({ data: text });
        if (faults.duplicateIn(frame)) this.onmessage?.({ data: text });
      });
      this.ws.on('close', (code, reason) => {
        faults.sockets.delete(this.ws);
        this.onclose?.({ code, reason: reason.toString() });
      });
      this.ws.on('error', (err) => this.onerror?.(err));
    }

    get readyState(): number {
      return this.ws.readyState;
    }

    send(data: string): void {
      if (faults.dropOut(JSON.parse(data))) return;
      this.ws.send(data);
    }

    close(code?: number, reason?: string): void {
      this.ws.close(code, reason);
    }
  };
}

interface Harnessed {
  client: RealChatClient;
  faults: Faults;
  messages: Envelope[];
  states: ConnectionState[];
  errors: RealChatError[];
  texts(conv: string): unknown[];
}

const clients: RealChatClient[] = [];

function makeClient(s: TestServer, token: string, opts: Partial<ClientOptions> = {}): Harnessed {
  const faults = new Faults();
  const client = new RealChatClient({
    url: s.wsUrl,
    token,
    WebSocket: faultyWebSocket(faults),
    reconnectBaseMs: 50,
    reconnectCapMs: 500,
    ...opts,
  });
  clients.push(client);
  const messages: Envelope[] = [];
  const states: ConnectionState[] = [];
  const errors: RealChatError[] = [];
  client.on('message', (m) => messages.push(m));
  client.on('state', (c) => states.push(c.state));
  client.on('error', (e) => errors.push(e));
  return {
    client,
    faults,
    messages,
    states,
    errors,
    texts: (conv) => messages.filter((m) => m.conversation_id === conv).map((m) => m.payload),
  };
}

const seqs = (ms: Envelope[], conv: string) => ms.filter((m) => m.conversation_id === conv).map((m) => m.sequence_number);
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe('client SDK against a real server (pglite)', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer('pglite', {
      REALCHAT_SENDS_PER_S: '10000',
      REALCHAT_SEND_BURST: '10000',
      REALCHAT_HEARTBEAT_INTERVAL_MS: '1000',
    });
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    await s?.close();
  });

  it('connects, sends with an ack, delivers in order, and carries read receipts and typing', async () => {
    const alice = await s.token();
    const bob = await s.token();
    const conv = await createConversation(s, alice.token, [bob.userId]);
    const a = makeClient(s, alice.token);
    const b = makeClient(s, bob.token);
    const welcome = await a.client.connect();
    expect(welcome.user_id).toBe(alice.userId);
    await b.client.connect();
    expect(a.states).toEqual(['connecting', 'connected']);

    const acks = await Promise.all(range(1, 5).map((i) => a.client.send(conv, { text: `m${i}` })));
    expect(acks.map((x) => x.sequence_number).sort((x, y) => x - y)).toEqual(range(1, 5));
    for (const ack of acks) expect(ack.idempotency_key).toMatch(/^[0-9a-f-]{36}$/);
    await until('bob has 5 messages', () => b.messages.length === 5);
    expect(seqs(b.messages, conv)).toEqual(range(1, 5));
    await until('alice sees her own messages', () => a.messages.length === 5);

    const receipts: unknown[] = [];
    a.client.on('receipt', (r) => receipts.push(r));
    b.client.markRead(conv, 5);
    await until('alice gets the receipt', () => receipts.length > 0);
    expect(receipts[0]).toMatchObject({ type: 'receipt', conversation_id: conv, user_id: bob.userId, read_sequence: 5 });

    const typing: unknown[] = [];
    b.client.on('typing', (t) => typing.push(t));
    a.client.typing(conv);
    a.client.typing(conv); // throttled
    await until('bob sees alice typing', () => typing.length > 0);
    await new Promise((r) => setTimeout(r, 200));
    expect(typing).toEqual([{ type: 'typing', conversation_id: conv, user_id: alice.userId }]);

    // Refused actions are reported: a non-member's send rejects with the server's code and the key as ref.
    const eve = await s.token();
    const e = makeClient(s, eve.token);
    await e.client.connect();
    const refused = await e.client.send(conv, 'hi', { idempotencyKey: 'eve-1' }).catch((err) => err);
    expect(refused).toBeInstanceOf(RealChatError);
    expect(refused).toMatchObject({ code: 'forbidden', ref: 'eve-1' });
    e.client.markRead(conv, 1);
    await until('eve gets an error for the refused read', () => e.errors.length > 0);
    expect(e.errors[0]).toMatchObject({ code: 'forbidden', ref: conv });
  });

  it('reconnects after the connection is cut and resumes exactly the missed messages', async () => {
    const alice = await s.token();
    const bob = await s.token();
    const conv = await createConversation(s, alice.token, [bob.userId]);
    const a = makeClient(s, alice.token);
    const b = makeClient(s, bob.token);
    await a.client.connect();
    await b.client.connect();
    for (let i = 1; i <= 3; i++) await a.client.send(conv, i);
    await until('bob has 3', () => b.messages.length === 3);

    const synced: unknown[] = [];
    b.client.on('synced', (x) => synced.push(x));
    b.faults.refuse = true;
    b.faults.cut();
    await until('bob is offline', () => b.client.connectionState === 'offline', 10_000);
    expect(b.states).toContain('reconnecting');
    for (let i = 4; i <= 10; i++) await a.client.send(conv, i);

    b.faults.refuse = false;
    await until('bob reconnected', () => b.client.connectionState === 'connected', 10_000);
    await until('bob has 10', () => b.messages.length >= 10);
    await new Promise((r) => setTimeout(r, 200));
    expect(seqs(b.messages, conv)).toEqual(range(1, 10));
    expect(b.texts(conv)).toEqual(range(1, 10));
    expect(synced).toEqual([{ type: 'synced', conversation_id: conv, last_sequence: 10 }]);
    expect(b.client.stats.duplicates).toBe(0);
  });

  it('detects a sequence gap and fills it with sync; drops duplicates', async () => {
    const alice = await s.token();
    const bob = await s.token();
    const conv = await createConversation(s, alice.token, [bob.userId]);
    const a = makeClient(s, alice.token);
    const b = makeClient(s, bob.token);
    await a.client.connect();
    await b.client.connect();
    const syncs: Frame[] = [];
    b.faults.dropOut = (f) => {
      if (f.type === 'sync') syncs.push(f);
      return false;
    };
    // Lose 2 and 3 on the live path; deliver 4 and 6 twice.
    b.faults.dropIn = (f) => f.type === 'message' && [2, 3].includes(f.message.sequence_number);
    b.faults.duplicateIn = (f) => f.type === 'message' && [4, 6].includes(f.message.sequence_number);
    for (let i = 1; i <= 6; i++) await a.client.send(conv, `t${i}`);
    await until('bob has 6', () => b.messages.length >= 6);
    await new Promise((r) => setTimeout(r, 300));
    expect(seqs(b.messages, conv)).toEqual(range(1, 6));
    expect(b.texts(conv)).toEqual(range(1, 6).map((i) => `t${i}`));
    expect(syncs.length).toBeGreaterThanOrEqual(1);
    expect(syncs[0]).toMatchObject({ conversation_id: conv, after_sequence: 1 });
    expect(b.client.stats.gapsDetected).toBeGreaterThanOrEqual(1);
    expect(b.client.stats.duplicates).toBeGreaterThanOrEqual(2);

    // track() from an older position fills from there for a conversation seen for the first time.
    const carol = makeClient(s, bob.token);
    await carol.client.connect();
    carol.client.track(conv, 2);
    await until('carol filled 3..6', () => carol.messages.length === 4);
    expect(seqs(carol.messages, conv)).toEqual([3, 4, 5, 6]);
  });

  it('retries a send whose ack was lost with the same key after reconnect: one stored message', async () => {
    const alice = await s.token();
    const bob = await s.token();
    const conv = await createConversation(s, alice.token, [bob.userId]);
    const a = makeClient(s, alice.token);
    await a.client.connect();
    const sent: Frame[] = [];
    a.faults.dropOut = (f) => {
      if (f.type === 'send') sent.push(f);
      return false;
    };
    let lostAcks = 0;
    a.faults.dropIn = (f) => {
      if (f.type === 'ack' && lostAcks === 0) {
        lostAcks++;
        setTimeout(() => a.faults.cut(), 50); // the connection dies before the ack arrives
        return true;
      }
      return false;
    };
    const ack = await a.client.send(conv, { text: 'only once' });
    expect(lostAcks).toBe(1);
    expect(ack.duplicate).toBe(true);
    expect(sent.map((f) => f.idempotency_key)).toEqual([ack.idempotency_key, ack.idempotency_key]);
    const rows = await s.query<{ n: number }>('SELECT count(*)::int AS n FROM messages WHERE conversation_id = $1', [conv]);
    expect(rows[0]!.n).toBe(1);
    await until('alice received it', () => a.messages.length === 1);
    await new Promise((r) => setTimeout(r, 200));
    expect(seqs(a.messages, conv)).toEqual([1]);
  });

  it('keeps sends queued while disconnected and bounds the queue', async () => {
    const alice = await s.token();
    const conv = await createConversation(s, alice.token, []);
    const a = makeClient(s, alice.token, { maxQueuedSends: 3 });
    a.faults.refuse = true;
    void a.client.connect().catch(() => {});
    const p = [a.client.send(conv, 1), a.client.send(conv, 2), a.client.send(conv, 3)];
    await expect(a.client.send(conv, 4)).rejects.toMatchObject({ code: 'queue_full' });
    await expect(a.client.send(conv, 'x'.repeat(70_000))).rejects.toMatchObject({ code: 'payload_too_large' });
    a.faults.refuse = false;
    const acks = await Promise.all(p);
    expect(acks.map((x) => x.sequence_number)).toEqual([1, 2, 3]);
  });

  it('declares a silent connection dead (no pong) and reconnects', async () => {
    const alice = await s.token();
    const a = makeClient(s, alice.token, { pongTimeoutMs: 500 });
    await a.client.connect();
    const opened = a.faults.opened;
    a.faults.blackhole = true;
    await until('reconnecting', () => a.client.connectionState !== 'connected', 8000);
    a.faults.blackhole = false;
    await until('connected again', () => a.client.connectionState === 'connected', 8000);
    expect(a.faults.opened).toBeGreaterThan(opened);
  });

  it('stops for good on 4500 unauthorized', async () => {
    const a = makeClient(s, 'not-a-jwt');
    const err = await a.client.connect().catch((e) => e);
    expect(err).toMatchObject({ code: 'unauthorized' });
    expect(a.client.connectionState).toBe('closed');
    const opened = a.faults.opened;
    await new Promise((r) => setTimeout(r, 300));
    expect(a.faults.opened).toBe(opened);
    await expect(a.client.send('00000000-0000-4000-8000-000000000000', 1)).rejects.toMatchObject({ code: 'closed' });
  });

  it('works with the plain `ws` package as the WebSocket implementation', async () => {
    const alice = await s.token();
    const conv = await createConversation(s, alice.token, []);
    const client = new RealChatClient({ url: s.wsUrl, token: async () => alice.token, WebSocket });
    clients.push(client);
    const got: Envelope[] = [];
    client.on('message', (m) => got.push(m));
    await client.connect();
    const ack = await client.send(conv, { text: 'plain' });
    await until('own message delivered', () => got.length === 1);
    expect(got[0]).toMatchObject({ conversation_id: conv, sequence_number: ack.sequence_number, payload: { text: 'plain' } });
    client.close();
    expect(client.connectionState).toBe('closed');
  });

  it('REST helpers: dev token, create, add members, list conversations and messages, errors', async () => {
    const anon = new RestClient({ baseUrl: s.http });
    const alice = await anon.devToken({ name: 'alice' });
    const bob = await anon.devToken({ name: 'bob' });
    const carol = await anon.devToken({ name: 'carol' });
    const rest = new RestClient({ baseUrl: s.http, token: alice.token });
    const conv = await rest.createConversation([bob.user_id], 'team');
    expect(conv).toMatchObject({ title: 'team', last_sequence: 0 });
    // The home region: this server's own is accepted, one it does not know is refused.
    expect(await rest.createConversation([], 'here', { homeRegion: 'default' })).toMatchObject({ home_region: 'default' });
    await expect(rest.createConversation([], 'there', { homeRegion: 'elsewhere' })).rejects.toMatchObject({ code: 'invalid_request' });
    expect((await rest.addMembers(conv.conversation_id, [carol.user_id])).added_user_ids).toEqual([carol.user_id]);
    await rest.sendMessage(conv.conversation_id, 'hello', 'k1');
    // v1.1: adding carol is a timeline entry (1); the message is 2. Own messages are not unread
    // (sending moves the sender's read position); carol has one unread.
    const list = await rest.listConversations();
    expect(list.conversations.find((c) => c.conversation_id === conv.conversation_id)).toMatchObject({
      last_sequence: 2,
      unread: 0,
      role: 'owner',
    });
    const carolList = await new RestClient({ baseUrl: s.http, token: carol.token }).listConversations();
    expect(carolList.conversations.find((c) => c.conversation_id === conv.conversation_id)).toMatchObject({ unread: 1, role: 'member' });
    const page = await rest.listMessages(conv.conversation_id, 0, 10);
    expect(page.messages.map((m) => [m.kind ?? 'message', m.payload])).toEqual([
      ['members_added', { user_ids: [carol.user_id], by: alice.user_id }],
      ['message', 'hello'],
    ]);
    const stranger = new RestClient({ baseUrl: s.http, token: (await anon.devToken()).token });
    await expect(stranger.listMessages(conv.conversation_id)).rejects.toMatchObject({ code: 'forbidden', status: 403 });
  });
});

describe('client SDK: server drain (close 4000 + reconnect.retry_after_ms) and restart', () => {
  it('honours retry_after_ms, reconnects to the restarted server and keeps the send promise alive', async () => {
    const secret = 'x'.repeat(48);
    const port = await freePort();
    const env = { REALCHAT_JWT_SECRET: secret, PORT: String(port) };
    let s1: TestServer | null = await startTestServer('pglite', env);
    const userId = crypto.randomUUID();
    const token = await createAuthenticator({ secret }).issue(userId, {});
    const a = makeClient(s1, token);
    let retryAfter = -1;
    a.faults.dropIn = (f) => {
      if (f.type === 'reconnect') retryAfter = f.retry_after_ms;
      return false;
    };
    const closes: Array<{ state: ConnectionState; retryInMs?: number; reason?: string }> = [];
    a.client.on('state', (c) => closes.push(c));
    await a.client.connect();
    await s1.close();
    s1 = null;
    await until('reconnecting after drain', () => closes.some((c) => c.reason?.startsWith('4000')));
    const drop = closes.find((c) => c.reason?.startsWith('4000'))!;
    expect(retryAfter).toBeGreaterThanOrEqual(0);
    expect(drop.retryInMs).toBeGreaterThanOrEqual(retryAfter);
    // A send while the server is down waits in the queue and succeeds after the restart.
    const s2 = await startTestServer('pglite', env);
    try {
      const conv = await createConversation(s2, token, []);
      const pending = a.client.send(conv, 'after restart');
      await until('connected to the new server', () => a.client.connectionState === 'connected', 20_000);
      expect((await pending).sequence_number).toBe(1);
    } finally {
      a.client.close();
      await s2.close();
    }
  });
});

describe('backoff', () => {
  it('is exponential with full jitter and capped', () => {
    const o = { baseMs: 100, capMs: 5000 };
    expect(backoffDelay(0, { ...o, random: () => 0.999 })).toBe(99);
    expect(backoffDelay(3, { ...o, random: () => 0.5 })).toBe(400);
    expect(backoffDelay(20, { ...o, random: () => 0.999 })).toBe(4995);
    expect(backoffDelay(5, { ...o, random: () => 0 })).toBe(0);
  });
});
