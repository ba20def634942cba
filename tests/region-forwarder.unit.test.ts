/**
 * The region forwarder's bounds (gateway/region-forwarder.ts): a home that does not answer holds
 * at most `maxInFlight` requests and `maxWaiting` waiting ones; beyond, writes are refused
 * `unavailable` at once instead of piling up; each request ends at the forward timeout.
 */
import { describe, expect, it } from 'vitest';
import { createRegionForwarder } from '../gateway/region-forwarder.js';

describe('region forwarder', () => {
  it('bounds the writes in flight and waiting; the rest are refused at once, and each ends at its timeout', async () => {
    let started = 0;
    const hanging: typeof fetch = (_url, init) =>
      new Promise((_, reject) => {
        started++;
        init?.signal?.addEventListener('abort', () => reject(init.signal!.reason));
      });
    const f = createRegionForwarder({
      peers: new Map([['a', 'http://a.invalid']]),
      secret: 'x'.repeat(32),
      forwardTimeoutMs: 300,
      failoverAfterMs: 0,
      fetch: hanging,
      maxInFlight: 2,
      maxWaiting: 1,
    })!;
    const send = (k: number) =>
      f.send('a', 'u', 'c', `k${k}`, { k }, null).then(
        () => 'ok',
        (e: { code: string; reason?: string; message: string }) =>
          `${e.code}/${e.reason}/${e.message.includes('too many') ? 'full' : 'timeout'}`,
      );
    const results = Promise.all([1, 2, 3, 4, 5].map(send));
    await new Promise((r) => setTimeout(r, 50));
    expect(started).toBe(2);
    expect(await results).toEqual([
      'unavailable/home_unreachable/timeout',
      'unavailable/home_unreachable/timeout',
      'unavailable/home_unreachable/timeout',
      'unavailable/home_unreachable/full',
      'unavailable/home_unreachable/full',
    ]);
    // The waiting one ran after a slot freed.
    expect(started).toBe(3);
  });
});
