import { describe, expect, it } from 'vitest';
import { Semaphore } from '../common/semaphore.js';

describe('semaphore', () => {
  it('runs at most maxActive, queues at most maxQueued, refuses the rest, and hands slots over in order', async () => {
    const s = new Semaphore(2, 1);
    const r1 = await s.tryAcquire()!;
    const r2 = await s.tryAcquire()!;
    const third = s.tryAcquire();
    expect(third).not.toBeNull();
    expect(s.tryAcquire()).toBeNull();
    let granted = false;
    void third!.then(() => (granted = true));
    await Promise.resolve();
    expect(granted).toBe(false);
    r1();
    r1(); // double release is ignored
    await new Promise((r) => setImmediate(r));
    expect(granted).toBe(true);
    expect(s.tryAcquire()).not.toBeNull(); // queue has room again
    r2();
  });
});
