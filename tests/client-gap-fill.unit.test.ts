/** The SDK's gap fill (client/gap-fill.ts) with a fake sync, fake timers and fake or real streams. */
import { describe, expect, it } from 'vitest';
import { GapFill, type GapFillOptions } from '../client/gap-fill.js';
import { RealChatError } from '../client/errors.js';
import { ConversationStreams } from '../client/streams.js';
import type { Envelope, MessagesPage } from '../client/types.js';

const env = (conv: string, seq: number): Envelope => ({
  message_id: `${conv}-${seq}`,
  conversation_id: conv,
  sender_id: 'u',
  sequence_number: seq,
  payload: seq,
  created_at: new Date(0).toISOString(),
  idempotency_key: `k${seq}`,
});
const page = (conv: string, seqs: number[], has_more = false): MessagesPage => ({
  type: 'messages',
  conversation_id: conv,
  messages: seqs.map((n) => env(conv, n)),
  has_more,
});

/** Lets the promise callbacks of settled syncs run. */
const settle = async () => {
  for (let i = 0; i < 5; i++) await Promise.resolve();
};

interface PendingSync {
  conv: string;
  after: number;
  resolve(p: MessagesPage): void;
  reject(e: RealChatError): void;
}

/** A fake clock's timers: run by hand. */
class FakeTimers {
  readonly pending: Array<{ fn: () => void; ms: number; cancelled: boolean }> = [];
  schedule = (fn: () => void, ms: number) => {
    const t = { fn, ms, cancelled: false };
    this.pending.push(t);
    return () => {
      t.cancelled = true;
    };
  };
  get live() {
    return this.pending.filter((t) => !t.cancelled);
  }
  runAll(): void {
    const due = this.live;
    this.pending.length = 0;
    for (const t of due) t.fn();
  }
}

function harness(streams: GapFillOptions['streams'], random = () => 0.5) {
  const syncs: PendingSync[] = [];
  const errors: RealChatError[] = [];
  const timers = new FakeTimers();
  const link = { connected: true };
  const gap = new GapFill({
    streams,
    connected: () => link.connected,
    sync: (conv, after) => new Promise((resolve, reject) => syncs.push({ conv, after, resolve, reject })),
    onError: (e) => errors.push(e),
    random,
    schedule: timers.schedule,
  });
  return { gap, syncs, errors, timers, link };
}

/** Streams whose answers the test sets, recording every call. */
function fakeStreams() {
  const calls: string[] = [];
  const f = {
    calls,
    advances: true,
    gap: true,
    fillDone: (conv: string, ms: Envelope[]) => {
      calls.push(`fillDone ${conv} [${ms.map((m) => m.sequence_number)}]`);
      return f.advances;
    },
    fillAborted: (conv: string) => void calls.push(`fillAborted ${conv}`),
    hasGap: (_conv: string) => f.gap,
    requestFrom: (conv: string) => void calls.push(`requestFrom ${conv}`),
    refill: (conv: string) => void calls.push(`refill ${conv}`),
    resetFills: () => void calls.push('resetFills'),
  };
  return f;
}

describe('GapFill with fake streams', () => {
  it('not connected: the fill is aborted at once and no sync is sent (the resume covers it)', () => {
    const s = fakeStreams();
    const h = harness(s);
    h.link.connected = false;
    h.gap.request('c', 3);
    expect(h.syncs).toHaveLength(0);
    expect(s.calls).toEqual(['fillAborted c']);
  });

  it('a page that advanced with more to come asks for the next page at once', async () => {
    const s = fakeStreams();
    const h = harness(s);
    h.gap.request('c', 1);
    expect(h.syncs.map((x) => [x.conv, x.after])).toEqual([['c', 1]]);
    h.syncs[0]!.resolve(page('c', [2, 3], true));
    await settle();
    expect(s.calls).toEqual(['fillDone c [2,3]', 'requestFrom c']);
    expect(h.timers.pending).toHaveLength(0);
  });

  it('a page that advanced and is the last one ends the fill', async () => {
    const s = fakeStreams();
    const h = harness(s);
    h.gap.request('c', 1);
    h.syncs[0]!.resolve(page('c', [2]));
    await settle();
    expect(s.calls).toEqual(['fillDone c [2]']);
    expect(h.timers.pending).toHaveLength(0);
  });

  it('a page that did not advance while the gap remains is retried later, with backoff, through refill', async () => {
    const s = fakeStreams();
    s.advances = false;
    const h = harness(s);
    h.gap.request('c', 1);
    h.syncs[0]!.resolve(page('c', [], true));
    await settle();
    expect(s.calls).toEqual(['fillDone c []']);
    expect(h.timers.live.map((t) => t.ms)).toEqual([200]); // full jitter (0.5) of 200 * 2^1
    expect(h.gap.failuresOf('c')).toBe(1);
    h.timers.runAll();
    expect(s.calls.at(-1)).toBe('refill c');
    expect(h.gap.pendingRetries).toBe(0);
  });

  it('a page that did not advance and left no gap ends the fill', async () => {
    const s = fakeStreams();
    s.advances = false;
    s.gap = false;
    const h = harness(s);
    h.gap.request('c', 1);
    h.syncs[0]!.resolve(page('c', []));
    await settle();
    expect(h.timers.pending).toHaveLength(0);
    expect(h.gap.failuresOf('c')).toBe(0);
  });

  it('a failed sync aborts the fill and retries with a growing, capped delay; an advancing page starts the count over', async () => {
    const s = fakeStreams();
    const h = harness(s);
    const delays: number[] = [];
    for (let i = 0; i < 8; i++) {
      h.gap.request('c', 1);
      h.syncs.at(-1)!.reject(new RealChatError('timeout', 'no answer'));
      await settle();
      delays.push(h.timers.live[0]!.ms);
      h.timers.runAll();
    }
    expect(delays).toEqual([200, 400, 800, 1600, 3200, 5000, 5000, 5000]); // half of min(10 s, 200 * 2^n)
    expect(s.calls.filter((c) => c === 'fillAborted c')).toHaveLength(8);
    expect(h.gap.failuresOf('c')).toBe(8);

    h.gap.request('c', 1);
    h.syncs.at(-1)!.resolve(page('c', [2]));
    await settle();
    expect(h.gap.failuresOf('c')).toBe(0);
    h.gap.request('c', 2);
    h.syncs.at(-1)!.reject(new RealChatError('network', 'not connected'));
    await settle();
    expect(h.timers.live.map((t) => t.ms)).toEqual([200]);
  });

  it.each(['forbidden', 'not_found'])('%s is reported as an error and not retried', async (code) => {
    const s = fakeStreams();
    const h = harness(s);
    h.gap.request('c', 1);
    h.syncs[0]!.reject(new RealChatError(code, 'no', 'c'));
    await settle();
    expect(s.calls).toEqual(['fillAborted c']);
    expect(h.errors.map((e) => [e.code, e.ref])).toEqual([[code, 'c']]);
    expect(h.timers.pending).toHaveLength(0);
    expect(h.gap.failuresOf('c')).toBe(0);
  });

  it('one pending retry per conversation; a failure while one is pending is not counted', async () => {
    const s = fakeStreams();
    const h = harness(s);
    h.gap.request('c', 1);
    h.gap.request('c', 1);
    h.gap.request('d', 1);
    for (const x of h.syncs) x.reject(new RealChatError('unavailable', 'busy'));
    await settle();
    expect(h.timers.live).toHaveLength(2);
    expect(h.gap.failuresOf('c')).toBe(1);
    expect(h.gap.failuresOf('d')).toBe(1);
  });

  it('a failure seen after the connection dropped schedules no retry', async () => {
    const s = fakeStreams();
    const h = harness(s);
    h.gap.request('c', 1);
    h.link.connected = false;
    h.syncs[0]!.reject(new RealChatError('network', 'connection lost'));
    await settle();
    expect(s.calls).toEqual(['fillAborted c']);
    expect(h.timers.pending).toHaveLength(0);
    expect(h.gap.failuresOf('c')).toBe(0);
  });

  it('connectionLost resets the fills in flight and cancels pending retries; stop only cancels', async () => {
    const s = fakeStreams();
    const h = harness(s);
    h.gap.request('c', 1);
    h.syncs[0]!.reject(new RealChatError('timeout', 'slow'));
    await settle();
    expect(h.timers.live).toHaveLength(1);
    h.gap.connectionLost();
    expect(s.calls.at(-1)).toBe('resetFills');
    expect(h.timers.live).toHaveLength(0);
    expect(h.gap.pendingRetries).toBe(0);
    expect(h.gap.failuresOf('c')).toBe(1); // the backoff is kept across the reconnect

    h.gap.request('c', 1);
    h.syncs[1]!.reject(new RealChatError('timeout', 'slow'));
    await settle();
    expect(h.timers.live.map((t) => t.ms)).toEqual([400]);
    const before = s.calls.length;
    h.gap.stop();
    expect(h.timers.live).toHaveLength(0);
    expect(s.calls.length).toBe(before);
  });

  it('remembers failure counts for at most 1000 conversations, forgetting the least recently failed', async () => {
    const s = fakeStreams();
    const h = harness(s);
    const fail = async (conv: string) => {
      h.gap.request(conv, 0);
      h.syncs.at(-1)!.reject(new RealChatError('timeout', 'slow'));
      await settle();
      h.timers.runAll();
    };
    await fail('first');
    for (let i = 0; i < 999; i++) await fail(`c${i}`);
    await fail('first'); // now the most recently failed
    await fail('c999');
    expect(h.gap.failuresOf('first')).toBe(2);
    expect(h.gap.failuresOf('c0')).toBe(0);
    expect(h.gap.failuresOf('c1')).toBe(1);
    expect(h.gap.failuresOf('c999')).toBe(1);
  });
});

describe('GapFill with real ConversationStreams', () => {
  function wired() {
    const delivered: number[] = [];
    let gap: GapFill;
    const streams = new ConversationStreams({
      maxBufferedPerConversation: 100,
      maxConversations: 100,
      deliver: (m) => delivered.push(m.sequence_number),
      requestFill: (conv, after) => gap.request(conv, after),
    });
    const h = harness(streams);
    gap = h.gap;
    return { ...h, streams, delivered };
  }

  it('a gap is filled page by page and delivered in order', async () => {
    const w = wired();
    w.streams.track('c', 0);
    w.streams.accept(env('c', 1));
    w.streams.accept(env('c', 5));
    expect(w.syncs.map((x) => x.after)).toEqual([1]);
    w.syncs[0]!.resolve(page('c', [2, 3], true));
    await settle();
    // The streams ask for the rest as soon as 2 is delivered (5 still waits); has_more adds no second request.
    expect(w.syncs.map((x) => x.after)).toEqual([1, 2]);
    w.syncs[1]!.resolve(page('c', [3, 4, 5]));
    await settle();
    expect(w.delivered).toEqual([1, 2, 3, 4, 5]);
    expect(w.streams.hasGap('c')).toBe(false);
    expect(w.timers.pending).toHaveLength(0);
  });

  it('a fill lost with the connection does not block the next one, and is not retried', async () => {
    const w = wired();
    w.streams.track('c', 0);
    w.streams.accept(env('c', 3));
    expect(w.syncs.map((x) => x.after)).toEqual([0]);
    // The connection drops with the fill in flight; its rejection arrives after (as in the client).
    w.link.connected = false;
    w.gap.connectionLost();
    w.syncs[0]!.reject(new RealChatError('network', 'connection lost'));
    await settle();
    expect(w.timers.pending).toHaveLength(0);
    // Reconnected: the next message beyond the gap starts a new fill at once.
    w.link.connected = true;
    w.streams.accept(env('c', 4));
    expect(w.syncs.map((x) => x.after)).toEqual([0, 0]);
    w.syncs[1]!.resolve(page('c', [1, 2]));
    await settle();
    expect(w.delivered).toEqual([1, 2, 3, 4]);
  });

  it('without connectionLost a fill lost in flight would block every later one', () => {
    const w = wired();
    w.streams.track('c', 0);
    w.streams.accept(env('c', 3));
    w.streams.accept(env('c', 4));
    expect(w.syncs).toHaveLength(1);
  });

  it('a page that does not close the gap is retried after a delay, not at once', async () => {
    const w = wired();
    w.streams.track('c', 0);
    w.streams.accept(env('c', 3));
    w.syncs[0]!.resolve(page('c', []));
    await settle();
    expect(w.syncs).toHaveLength(1);
    expect(w.timers.live).toHaveLength(1);
    w.timers.runAll();
    expect(w.syncs.map((x) => x.after)).toEqual([0, 0]);
  });
});
