/**
 * gateway/batched-reads.ts: reads that arrive while a query is in flight share the next query;
 * none is answered from a query that started before it was asked; batches, queries in flight and
 * the queue are bounded; a failed query fails exactly its own readers.
 */
import { describe, expect, it } from 'vitest';
import { batchReads } from '../gateway/batched-reads.js';

/** A fetchMany whose queries the test finishes by hand. */
function manualFetch() {
  const calls: Array<{ keys: string[]; finish(values?: Map<string, number>): void; fail(err: Error): void }> = [];
  const fetchMany = (keys: string[]) =>
    new Promise<Map<string, number>>((resolve, reject) => {
      calls.push({
        keys,
        finish: (values) => resolve(values ?? new Map(keys.map((k) => [k, k.length]))),
        fail: reject,
      });
    });
  return { calls, fetchMany };
}
const overflow = () => new Error('overflow');
const tick = () => new Promise((r) => setImmediate(r));

describe('batched reads', () => {
  it('starts at once when idle; reads arriving meanwhile share the next query', async () => {
    const { calls, fetchMany } = manualFetch();
    const b = batchReads(fetchMany, () => -1, { maxBatch: 100, maxInFlight: 1, maxWaiting: 100, onOverflow: overflow });
    const first = b.read('a');
    expect(calls.map((c) => c.keys)).toEqual([['a']]);
    const later = ['bb', 'ccc', 'bb', 'dddd'].map((k) => b.read(k));
    // Not joined to the query already in flight: it started before they were asked.
    expect(calls).toHaveLength(1);
    calls[0]!.finish();
    expect(await first).toBe(1);
    await tick();
    expect(calls.map((c) => c.keys)).toEqual([['a'], ['bb', 'ccc', 'dddd']]);
    calls[1]!.finish(new Map([['bb', 2]]));
    // A key the query did not return gets the missing value; one key asked twice, answered twice.
    expect(await Promise.all(later)).toEqual([2, -1, 2, -1]);
    expect(b.stats).toEqual({ batches: 2, reads: 5 });
  });

  it('bounds keys per query and queries in flight', async () => {
    const { calls, fetchMany } = manualFetch();
    const b = batchReads(fetchMany, () => 0, { maxBatch: 2, maxInFlight: 2, maxWaiting: 100, onOverflow: overflow });
    const reads = ['a', 'b', 'c', 'd', 'e', 'f', 'g'].map((k) => b.read(k));
    expect(calls.map((c) => c.keys)).toEqual([['a'], ['b']]);
    calls[0]!.finish();
    await tick();
    expect(calls.map((c) => c.keys)).toEqual([['a'], ['b'], ['c', 'd']]);
    calls[1]!.finish();
    await tick();
    calls[2]!.finish();
    await tick();
    expect(calls.map((c) => c.keys)).toEqual([['a'], ['b'], ['c', 'd'], ['e', 'f'], ['g']]);
    calls[3]!.finish();
    calls[4]!.finish();
    expect(await Promise.all(reads)).toEqual([1, 1, 1, 1, 1, 1, 1]);
  });

  it('refuses reads past maxWaiting; a failed query rejects its own readers only', async () => {
    const { calls, fetchMany } = manualFetch();
    const b = batchReads(fetchMany, () => 0, { maxBatch: 10, maxInFlight: 1, maxWaiting: 2, onOverflow: overflow });
    const inFlight = b.read('a');
    const queued = [b.read('b'), b.read('c')];
    await expect(b.read('d')).rejects.toThrow('overflow');
    calls[0]!.fail(new Error('database down'));
    await expect(inFlight).rejects.toThrow('database down');
    await tick();
    calls[1]!.finish();
    expect(await Promise.all(queued)).toEqual([1, 1]);
  });

  it('readMany: keys asked together start as one query when idle, and count against maxWaiting together', async () => {
    const { calls, fetchMany } = manualFetch();
    const b = batchReads(fetchMany, () => 0, { maxBatch: 10, maxInFlight: 1, maxWaiting: 3, onOverflow: overflow });
    const idle = b.readMany(['a', 'bb', 'a']);
    expect(calls.map((c) => c.keys)).toEqual([['a', 'bb']]);
    const queued = b.readMany(['c', 'ddd', 'c']);
    // Three readers wait for the query in flight: one more key is past maxWaiting.
    await expect(b.readMany(['e'])).rejects.toThrow('overflow');
    calls[0]!.finish();
    expect(await idle).toEqual([1, 2, 1]);
    await tick();
    expect(calls.map((c) => c.keys)).toEqual([
      ['a', 'bb'],
      ['c', 'ddd'],
    ]);
    calls[1]!.finish();
    expect(await queued).toEqual([1, 3, 1]);
    expect(await b.readMany([])).toEqual([]);
  });
});
