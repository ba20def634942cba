/**
 * RealChatClient against a fake socket (no server): a conversation's sends stay in order when the
 * server refuses some (`unavailable`, then `after_refused` for the ones behind), and message
 * listeners learn how each message arrived (`info.via`), the SDK's own gap fill included.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { RealChatClient, type Via } from '../client/index.js';
import { FakeServer } from './harness/fake-socket.js';

const clients: RealChatClient[] = [];
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});

async function connected(opts: { maxSendAttempts?: number } = {}) {
  const server = new FakeServer();
  const client = new RealChatClient({
    url: 'ws://fake/v1/ws',
    token: 't',
    WebSocket: server.WebSocket,
    random: () => 0,
    ...opts,
  });
  clients.push(client);
  await client.connect();
  // Keys of the send frames written so far.
  const sendKeys = () => server.sent('send').map((f) => f.idempotency_key);
  return { client, socket: server.last, sendKeys };
}

const tick = () => new Promise((r) => setTimeout(r, 5));
const env = (seq: number, conv = 'c') => ({
  message_id: `m${seq}`,
  conversation_id: conv,
  sender_id: 'u2',
  sequence_number: seq,
  payload: seq,
  created_at: new Date(0).toISOString(),
  idempotency_key: `k${seq}`,
});
const ack = (key: string, seq: number) => ({
  type: 'ack',
  idempotency_key: key,
  conversation_id: 'c',
  message_id: `m-${key}`,
  sequence_number: seq,
  created_at: new Date(0).toISOString(),
  duplicate: false,
});

describe('the SDK keeps its own order under refusals', () => {
  it('retries the refused send first, then the ones the server held behind it, without spending their attempts', async () => {
    const { client, socket, sendKeys } = await connected({ maxSendAttempts: 2 });
    const sends = ['a', 'b', 'c'].map((k) => client.send('c', k, { idempotencyKey: k }));
    expect(sendKeys()).toEqual(['a', 'b', 'c']);
    socket.receive({ type: 'error', code: 'unavailable', message: 'db down', ref: 'a' });
    for (const k of ['b', 'c']) socket.receive({ type: 'error', code: 'unavailable', message: 'after a', ref: k, reason: 'after_refused' });
    await tick();
    expect(sendKeys()).toEqual(['a', 'b', 'c', 'a', 'b', 'c']);
    // Held once more: with attempts counted, b and c would now fail (maxSendAttempts 2).
    for (const k of ['b', 'c']) socket.receive({ type: 'error', code: 'unavailable', message: 'after a', ref: k, reason: 'after_refused' });
    socket.receive(ack('a', 1));
    await tick();
    expect(sendKeys()).toEqual(['a', 'b', 'c', 'a', 'b', 'c', 'b', 'c']);
    socket.receive(ack('b', 2));
    socket.receive(ack('c', 3));
    expect((await Promise.all(sends)).map((a) => a.sequence_number)).toEqual([1, 2, 3]);
  });
});

describe('the SDK reports how each message arrived', () => {
  it("passes the frame's via, and says fill for what its own sync filled", async () => {
    const { client, socket } = await connected();
    const got: Array<[number, Via | undefined]> = [];
    client.on('message', (m, info) => got.push([m.sequence_number, info.via]));
    socket.receive({ type: 'message', message: env(1), via: 'resume' });
    socket.receive({ type: 'message', message: env(2), via: 'live' });
    socket.receive({ type: 'message', message: env(3), via: 'fill' });
    // An older server (no via) and a value this SDK does not know.
    socket.receive({ type: 'message', message: env(4) });
    socket.receive({ type: 'message', message: env(5), via: 'teleport' });
    // 6 never came: 7 is buffered and the SDK asks for what follows 5.
    socket.receive({ type: 'message', message: env(7), via: 'live' });
    await tick();
    const sync = socket.sent.find((f) => f.type === 'sync');
    expect(sync).toMatchObject({ conversation_id: 'c', after_sequence: 5 });
    socket.receive({ type: 'messages', conversation_id: 'c', messages: [env(6), env(7)], has_more: false });
    await tick();
    expect(got).toEqual([
      [1, 'resume'],
      [2, 'live'],
      [3, 'fill'],
      [4, undefined],
      [5, undefined],
      [6, 'fill'],
      // It had come live and waited for 6.
      [7, 'live'],
    ]);
  });
});
