/**
 * The region forwarder's bounds (gateway/region-forwarder.ts): a home that does not answer holds
 * at most `maxInFlight` requests and `maxWaiting` waiting ones; beyond, writes are refused
 * `unavailable` at once instead of piling up; each request ends at the forward timeout.
 */
import { describe, expect, it } from 'vitest';
import { createRegionForwarder } from '../gateway/region-forwarder.js';

/** A forwarder to one home region `a`, behind `fetch`, with the given bounds. */
const forwarderTo = (
  fetch: typeof globalThis.fetch,
  forwardTimeoutMs: number,
  more: Partial<Parameters<typeof createRegionForwarder>[0]>,
) =>
  createRegionForwarder({
    peers: new Map([['a', 'http://a.invalid']]),
    secret: 'x'.repeat(32),
    forwardTimeoutMs,
    failoverAfterMs: 0,
    fetch,
    ...more,
  })!;

/** A fetch that never answers: each call ends when its signal aborts (the forward timeout); `started` counts the calls. */
function hangingFetch(): { fetch: typeof fetch; started: number } {
  const h = {
    started: 0,
    fetch: ((_url, init) =>
      new Promise((_, reject) => {
        h.started++;
        init?.signal?.addEventListener('abort', () => reject(init.signal!.reason));
      })) as typeof fetch,
  };
  return h;
}

describe('region forwarder', () => {
  it('bounds the writes in flight and waiting; the rest are refused at once, and each ends at its timeout', async () => {
    const hanging = hangingFetch();
    const f = forwarderTo(hanging.fetch, 300, { maxInFlight: 2, maxWaiting: 1 });
    const send = (k: number) =>
      f.send('a', 'u', 'c', `k${k}`, { k }, null).then(
        () => 'ok',
        (e: { code: string; reason?: string; message: string }) =>
          `${e.code}/${e.reason}/${e.message.includes('too many') ? 'full' : 'timeout'}`,
      );
    const results = Promise.all([1, 2, 3, 4, 5].map(send));
    await new Promise((r) => setTimeout(r, 50));
    expect(hanging.started).toBe(2);
    expect(await results).toEqual([
      'unavailable/home_unreachable/timeout',
      'unavailable/home_unreachable/timeout',
      'unavailable/home_unreachable/timeout',
      'unavailable/home_unreachable/full',
      'unavailable/home_unreachable/full',
    ]);
    // The waiting one ran after a slot freed.
    expect(hanging.started).toBe(3);
  });

  it('after three unanswered forwards, refuses at once; one probe a second goes through, and an answer closes it again', async () => {
    let calls = 0;
    let answering = false;
    const home: typeof fetch = (_url, init) =>
      new Promise((resolve, reject) => {
        calls++;
        if (answering) resolve(new Response(JSON.stringify({ message_id: 'm', sequence_number: 1 }), { status: 201 }));
        else init?.signal?.addEventListener('abort', () => reject(init.signal!.reason));
      });
    const f = forwarderTo(home, 100, { breaker: { failureThreshold: 3, windowMs: 10_000, openMs: 300, halfOpenProbes: 1 } });
    const send = async (k: number) => {
      const t0 = performance.now();
      const outcome = await f.send('a', 'u', 'c', `k${k}`, { k }, null).then(
        () => 'ok',
        (e: { code: string; reason?: string }) => `${e.code}/${e.reason}`,
      );
      return { outcome, ms: performance.now() - t0 };
    };
    for (let k = 0; k < 3; k++) expect((await send(k)).ms).toBeGreaterThanOrEqual(90);
    expect(calls).toBe(3);
    // Open: refused without a request, at once.
    const fast = await send(3);
    expect(fast.outcome).toBe('unavailable/home_unreachable');
    expect(fast.ms).toBeLessThan(50);
    expect(calls).toBe(3);
    // After openMs one probe goes through; the home answers now, so the breaker closes.
    await new Promise((r) => setTimeout(r, 320));
    answering = true;
    expect((await send(4)).outcome).toBe('ok');
    expect((await send(5)).outcome).toBe('ok');
    expect(calls).toBe(5);
  });

  it('typing is best effort: at most 64 in flight (the rest dropped, never queued), none while the breaker is open, and it never trips it', async () => {
    const hanging = hangingFetch();
    const f = forwarderTo(hanging.fetch, 200, {});
    for (let i = 0; i < 100; i++) f.typing('c', 'u');
    expect(hanging.started).toBe(64);
    await new Promise((r) => setTimeout(r, 400));
    // 64 unanswered typing frames: a send still goes through (the breaker is the sends')
    let sendsStarted = hanging.started;
    await f.send('a', 'u', 'c', 'k', {}, null).catch(() => {});
    expect(hanging.started).toBe(sendsStarted + 1);
    // three unanswered sends open it: typing is dropped without a request
    for (const k of ['k2', 'k3']) await f.send('a', 'u', 'c', k, {}, null).catch(() => {});
    sendsStarted = hanging.started;
    f.typing('c', 'u');
    expect(hanging.started).toBe(sendsStarted);
  });
});
