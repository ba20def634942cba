/**
 * delivery/hand-over.ts: partition batches handed over in the same turn of the event loop share one
 * routing call and one send; retries and the groups of a call that failed for good go alone.
 */
import { describe, expect, it } from 'vitest';
import { createHandOver } from '../delivery/hand-over.js';
import type { Outgoing, RouteGroup } from '../delivery/recipient-routing.js';

const group = (key: string): RouteGroup => ({ batch: [], key });
const out = (groups: readonly RouteGroup[]): Outgoing =>
  new Map([['node-topic', groups.map((g) => ({ key: g.key, value: g.key, headers: {} }))]]);

function recorder(fail?: (keys: string[]) => Error | null) {
  const calls: string[][] = [];
  const sent: string[][] = [];
  const deps = {
    route: async (groups: readonly RouteGroup[]) => {
      calls.push(groups.map((g) => g.key));
      return out(groups);
    },
    send: async (o: Outgoing) => {
      const keys = [...o.values()].flat().map((r) => r.key!);
      const err = fail?.(keys);
      if (err) throw err;
      sent.push(keys);
    },
    isPermanent: (err: unknown) => (err as Error).message === 'too large',
  };
  return { calls, sent, deps };
}

describe('hand-over of partition batches', () => {
  it('batches handed over together share one routing call and one send, each key its own record', async () => {
    const { calls, sent, deps } = recorder();
    const h = createHandOver({ ...deps, maxGroups: 12 });
    await Promise.all(['p0', 'p1', 'p2'].map((k) => h.handOver(group(k))));
    expect(calls).toEqual([['p0', 'p1', 'p2']]);
    expect(sent).toEqual([['p0', 'p1', 'p2']]);
    // a later one is a call of its own
    await h.handOver(group('p0'));
    expect(calls).toEqual([['p0', 'p1', 'p2'], ['p0']]);
  });

  it('takes at most maxGroups per call; the rest go in the next', async () => {
    const { calls, deps } = recorder();
    const h = createHandOver({ ...deps, maxGroups: 2 });
    await Promise.all(['a', 'b', 'c', 'd', 'e'].map((k) => h.handOver(group(k))));
    expect(calls).toEqual([['a', 'b'], ['c', 'd'], ['e']]);
  });

  it('a passing failure fails every batch of the call (each retries with backoff); a retry goes alone', async () => {
    let down = true;
    const { calls, deps } = recorder(() => (down ? new Error('broker away') : null));
    const h = createHandOver({ ...deps, maxGroups: 12 });
    const results = await Promise.allSettled(['a', 'b'].map((k) => h.handOver(group(k))));
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected']);
    expect(calls).toEqual([['a', 'b']]);
    down = false;
    await h.handOver(group('a'), true);
    expect(calls).toEqual([['a', 'b'], ['a']]);
  });

  it('a call that failed for good is redone group by group: only the culprit fails', async () => {
    const { calls, sent, deps } = recorder((keys) => (keys.includes('poison') ? new Error('too large') : null));
    const h = createHandOver({ ...deps, maxGroups: 12 });
    const results = await Promise.allSettled(['a', 'poison', 'b'].map((k) => h.handOver(group(k))));
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(calls).toEqual([['a', 'poison', 'b'], ['a'], ['poison'], ['b']]);
    expect(sent).toEqual([['a'], ['b']]);
  });
});
