import { describe, expect, it } from 'vitest';
import type { Envelope } from '../common/protocol.js';
import { shareConcurrentReads } from '../gateway/shared-reads.js';

/** A fake history whose reads stay pending until released, counting the reads it was asked for. */
function fakeHistory() {
  const calls: string[] = [];
  const pending: Array<{ resolve: (v: Envelope[]) => void; reject: (e: unknown) => void }> = [];
  return {
    calls,
    pending,
    messagesAfter(c: string, after: number, limit: number): Promise<Envelope[]> {
      calls.push(`${c}/${after}/${limit}`);
      return new Promise((resolve, reject) => pending.push({ resolve, reject }));
    },
  };
}

describe('catch-up reads shared between connections', () => {
  it('identical reads in flight are one store read, answered to every caller', async () => {
    const h = fakeHistory();
    const shared = shareConcurrentReads(h);
    const reads = Array.from({ length: 1000 }, () => shared.messagesAfter('c', 7, 3));
    const other = shared.messagesAfter('c', 8, 3);
    expect(h.calls).toEqual(['c/7/3', 'c/8/3']);
    const rows = [{ sequence_number: 8 }] as unknown as Envelope[];
    h.pending[0]!.resolve(rows);
    h.pending[1]!.resolve([]);
    for (const r of await Promise.all(reads)) expect(r).toBe(rows);
    expect(await other).toEqual([]);
    expect(shared.stats.shared).toBe(999);
    expect(shared.inFlight).toBe(0);
  });

  it('a finished read is never served again; a failed read fails its callers and is forgotten', async () => {
    const h = fakeHistory();
    const shared = shareConcurrentReads(h);
    const a = shared.messagesAfter('c', 1, 5);
    h.pending[0]!.resolve([]);
    await a;
    const b = shared.messagesAfter('c', 1, 5);
    const c = shared.messagesAfter('c', 1, 5);
    expect(h.calls).toHaveLength(2);
    h.pending[1]!.reject(new Error('down'));
    await expect(b).rejects.toThrow('down');
    await expect(c).rejects.toThrow('down');
    expect(shared.inFlight).toBe(0);
    void shared.messagesAfter('c', 1, 5);
    expect(h.calls).toHaveLength(3);
  });

  it('holds at most maxInFlight distinct reads; beyond, reads go to the store unshared', () => {
    const h = fakeHistory();
    const shared = shareConcurrentReads(h, 2);
    void shared.messagesAfter('a', 0, 1);
    void shared.messagesAfter('b', 0, 1);
    void shared.messagesAfter('c', 0, 1);
    void shared.messagesAfter('c', 0, 1);
    expect(shared.inFlight).toBe(2);
    expect(h.calls).toEqual(['a/0/1', 'b/0/1', 'c/0/1', 'c/0/1']);
  });
});
