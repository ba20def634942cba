/** Unit tests of the SDK's ordering and send-retry logic (no server). */
import { describe, expect, it } from 'vitest';
import { ConversationStreams } from '../client/streams.js';
import { SendQueue } from '../client/send-queue.js';
import { RealChatError } from '../client/errors.js';
import type { Envelope } from '../client/types.js';

const env = (conv: string, seq: number): Envelope => ({
  message_id: `${conv}-${seq}`,
  conversation_id: conv,
  sender_id: 'u',
  sequence_number: seq,
  payload: seq,
  created_at: new Date(0).toISOString(),
  idempotency_key: `k${seq}`,
});

function streams(maxBuffered = 100, maxConversations = 100) {
  const delivered: number[] = [];
  const fills: Array<[string, number]> = [];
  const s = new ConversationStreams({
    maxBufferedPerConversation: maxBuffered,
    maxConversations,
    deliver: (m) => delivered.push(m.sequence_number),
    requestFill: (c, after) => fills.push([c, after]),
  });
  return { s, delivered, fills };
}

describe('ConversationStreams', () => {
  it('delivers in order, buffers beyond a gap, asks once for the fill and drops duplicates', () => {
    const { s, delivered, fills } = streams();
    s.track('c', 0);
    s.accept(env('c', 1));
    s.accept(env('c', 4));
    s.accept(env('c', 5));
    s.accept(env('c', 1));
    expect(delivered).toEqual([1]);
    expect(fills).toEqual([['c', 1]]);
    expect(s.hasGap('c')).toBe(true);
    s.fillDone('c', [env('c', 3), env('c', 2), env('c', 4)]);
    expect(delivered).toEqual([1, 2, 3, 4, 5]);
    expect(s.hasGap('c')).toBe(false);
    expect(s.stats.duplicates).toBe(2);
    expect(s.positions(10)).toEqual({ c: 5 });
  });

  it('an untracked conversation starts at its first message; track() moves forward only', () => {
    const { s, delivered } = streams();
    s.accept(env('x', 7));
    s.accept(env('x', 8));
    expect(delivered).toEqual([7, 8]);
    expect(s.track('x', 3)).toBe(false);
    expect(s.track('x', 10)).toBe(true);
    s.accept(env('x', 9));
    expect(delivered).toEqual([7, 8]);
  });

  it('bounds the out-of-order buffer and the number of conversations (resume lists the most recent)', () => {
    const { s, delivered } = streams(2, 3);
    s.track('c', 0);
    for (const n of [3, 4, 5, 6]) s.accept(env('c', n));
    s.fillDone('c', [env('c', 1), env('c', 2)]);
    expect(delivered).toEqual([1, 2, 3, 4]); // 5 and 6 were not buffered: the next fill fetches them
    expect(s.hasGap('c')).toBe(false);
    for (const c of ['a', 'b', 'd', 'e']) s.accept(env(c, 1));
    expect(Object.keys(s.positions(10)).sort()).toEqual(['b', 'd', 'e']);
    expect(Object.keys(s.positions(2))).toEqual(['e', 'd']);
  });
});

describe('SendQueue', () => {
  function queue(maxAttempts = 3) {
    const sent: string[] = [];
    let connected = true;
    let n = 0;
    const q = new SendQueue({
      maxQueued: 2,
      maxInFlight: 1,
      maxAttempts,
      timeoutMs: 5000,
      retryBaseMs: 1,
      retryCapMs: 2,
      random: () => 0,
      transmit: (_c, key) => {
        if (!connected) return null;
        sent.push(key);
        return ++n;
      },
    });
    return { q, sent, setConnected: (v: boolean) => (connected = v) };
  }
  const ack = (key: string) => ({
    type: 'ack' as const,
    idempotency_key: key,
    conversation_id: 'c',
    message_id: 'm',
    sequence_number: 1,
    created_at: '',
    duplicate: false,
  });

  it('retries unavailable with the same key, keeps one in flight, refuses beyond the bound', async () => {
    const { q, sent } = queue();
    const p1 = q.enqueue('c', 1, 'k1');
    const p2 = q.enqueue('d', 2, 'k2');
    await expect(q.enqueue('c', 3, 'k3')).rejects.toMatchObject({ code: 'queue_full' });
    expect(sent).toEqual(['k1']);
    q.onError('k1', 'unavailable', 'db down');
    await new Promise((r) => setTimeout(r, 10));
    // Another conversation is not held behind the refused send.
    expect(sent).toEqual(['k1', 'k2']);
    q.onAck(ack('k2'));
    await expect(p2).resolves.toMatchObject({ idempotency_key: 'k2' });
    await new Promise((r) => setTimeout(r, 10));
    expect(sent).toEqual(['k1', 'k2', 'k1']);
    q.onAck(ack('k1'));
    await expect(p1).resolves.toMatchObject({ idempotency_key: 'k1' });
  });

  /** A queue with room for many sends in flight, and a refusal's retry delay under the test's control. */
  function pipelined(maxAttempts = 3, retryMs = 20) {
    const sent: string[] = [];
    let n = 0;
    const q = new SendQueue({
      maxQueued: 100,
      maxInFlight: 10,
      maxAttempts,
      timeoutMs: 5000,
      retryBaseMs: retryMs,
      retryCapMs: retryMs,
      random: () => 1,
      transmit: (_c, key) => {
        sent.push(key);
        return ++n;
      },
    });
    return { q, sent };
  }
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  it("holds a conversation's later sends behind a refused one and sends them in order after its retry", async () => {
    const { q, sent } = pipelined();
    const acks = ['a1', 'a2', 'a3'].map((k, i) => q.enqueue('a', i, k));
    expect(sent).toEqual(['a1', 'a2', 'a3']);
    // The server refused a1, then a2 and a3 for their place behind it.
    q.onError('a1', 'unavailable', 'db down');
    q.onError('a2', 'unavailable', 'after a1', 'after_refused');
    q.onError('a3', 'unavailable', 'after a1', 'after_refused');
    // Sends enqueued now wait too; another conversation goes out at once.
    const a4 = q.enqueue('a', 4, 'a4');
    const b1 = q.enqueue('b', 1, 'b1');
    expect(sent).toEqual(['a1', 'a2', 'a3', 'b1']);
    await sleep(40);
    expect(sent).toEqual(['a1', 'a2', 'a3', 'b1', 'a1', 'a2', 'a3', 'a4']);
    for (const k of ['a1', 'a2', 'a3', 'a4', 'b1']) q.onAck(ack(k));
    await Promise.all([...acks, a4, b1]);
  });

  it('an after_refused refusal costs no attempt while an earlier send is pending; without one it backs off like unavailable', async () => {
    const { q, sent } = pipelined(2);
    const p1 = q.enqueue('a', 1, 'a1');
    const p2 = q.enqueue('a', 2, 'a2');
    const r1 = expect(p1).rejects.toMatchObject({ code: 'unavailable', ref: 'a1' });
    const r2 = expect(p2).rejects.toMatchObject({ code: 'unavailable', ref: 'a2', reason: 'after_refused' });
    q.onError('a1', 'unavailable', 'db down');
    q.onError('a2', 'unavailable', 'after a1', 'after_refused');
    await sleep(40);
    expect(sent).toEqual(['a1', 'a2', 'a1', 'a2']);
    // a1's second refusal is its last attempt; nothing of ours is left before a2, so its next
    // after_refused (a fence we cannot lift: it expires on the server) backs off and counts.
    q.onError('a1', 'unavailable', 'db down');
    await r1;
    q.onError('a2', 'unavailable', 'after a1', 'after_refused');
    expect(sent).toEqual(['a1', 'a2', 'a1', 'a2']);
    await sleep(40);
    expect(sent).toEqual(['a1', 'a2', 'a1', 'a2', 'a2']);
    q.onError('a2', 'unavailable', 'after a1', 'after_refused');
    await r2;
  });

  it('an ack of a later send ends the backoff of sends refused unavailable before it, not of rate-limited ones', async () => {
    // a refusal's retry would come 10 s later
    const { q, sent } = pipelined(3, 10_000);
    const a1 = q.enqueue('a', 1, 'a1');
    const b1 = q.enqueue('b', 1, 'b1');
    const c1 = q.enqueue('c', 1, 'c1');
    // b1 was in flight before the refusals: its ack says nothing about the server since
    q.onError('a1', 'unavailable', 'db down');
    q.onError('c1', 'rate_limited', 'slow down');
    q.onAck(ack('b1'));
    expect(sent).toEqual(['a1', 'b1', 'c1']);
    // d1 is sent after the refusals and acknowledged: a1 goes again now; c1 keeps its delay
    const d1 = q.enqueue('d', 1, 'd1');
    q.onAck(ack('d1'));
    expect(sent).toEqual(['a1', 'b1', 'c1', 'd1', 'a1']);
    q.onAck(ack('a1'));
    await Promise.all([a1, b1, d1]);
    q.failAll(new RealChatError('closed', 'test over'));
    await expect(c1).rejects.toMatchObject({ code: 'closed' });
  });

  it('resends in-flight messages with the same key after a reconnect; gives up on refusals and after maxAttempts', async () => {
    const { q, sent, setConnected } = queue(2);
    const p1 = q.enqueue('c', 1, 'k1');
    setConnected(false);
    q.onDisconnect();
    q.pump();
    setConnected(true);
    q.pump();
    expect(sent).toEqual(['k1', 'k1']);
    q.onError('k1', 'rate_limited', 'slow down');
    await expect(p1).rejects.toMatchObject({ code: 'rate_limited', ref: 'k1' });
    const p2 = q.enqueue('c', 2, 'k2');
    q.onError('k2', 'forbidden', 'not a member');
    await expect(p2).rejects.toMatchObject({ code: 'forbidden', ref: 'k2' });
  });
});
