/** The resilience toolkit in common/: retry, timeout, LRU map. */
import { describe, expect, it } from 'vitest';
import { retry } from '../common/retry.js';
import { TimeoutError, withTimeout } from '../common/timeout.js';
import { LruMap } from '../common/lru.js';

describe('retry', () => {
  it('retries up to the bound with jittered, capped backoff, then throws the last error', async () => {
    const delays: number[] = [];
    let calls = 0;
    const err = await retry(
      async () => {
        calls++;
        throw new Error(`fail ${calls}`);
      },
      { retries: 4, baseMs: 100, capMs: 250, random: () => 0.999, sleep: async (ms) => void delays.push(ms) },
    ).catch((e: Error) => e);
    expect(calls).toBe(5);
    expect((err as Error).message).toBe('fail 5');
    expect(delays).toEqual([99, 199, 249, 249]);
  });

  it('stops at once on an error the predicate does not retry, and returns the first success', async () => {
    let calls = 0;
    const fatal = new Error('fatal');
    await expect(
      retry(
        async () => {
          calls++;
          throw fatal;
        },
        { retries: 9, baseMs: 1, capMs: 1, isRetriable: (e) => e !== fatal, sleep: async () => {} },
      ),
    ).rejects.toBe(fatal);
    expect(calls).toBe(1);
    let n = 0;
    const seen: number[] = [];
    const v = await retry(
      async (attempt) => {
        seen.push(attempt);
        if (++n < 3) throw new Error('again');
        return 'done';
      },
      { retries: 5, baseMs: 0, capMs: 0, onRetry: () => {} },
    );
    expect([v, seen]).toEqual(['done', [0, 1, 2]]);
  });
});

describe('withTimeout', () => {
  it('rejects with TimeoutError after the deadline and passes results through', async () => {
    await expect(withTimeout(new Promise(() => {}), 20, 'never')).rejects.toBeInstanceOf(TimeoutError);
    await expect(withTimeout(Promise.resolve(7), 1000, 'now')).resolves.toBe(7);
  });
});

describe('LruMap', () => {
  it('forgets the least recently used entry past its bound; get refreshes, peek does not', () => {
    const m = new LruMap<string, number>(2);
    m.set('a', 1).set('b', 2);
    expect(m.get('a')).toBe(1);
    m.set('c', 3);
    expect([...m.keys()]).toEqual(['a', 'c']);
    expect(m.peek('a')).toBe(1);
    m.set('d', 4);
    expect([...m.keys()]).toEqual(['c', 'd']);
    expect(new LruMap<string, number>(0).set('x', 1).size).toBe(0);
  });
});
