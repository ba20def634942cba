/**
 * delivery/any-rows.ts: the "anything to do?" check of the webhook intake and the notifier looks
 * at most once per ttl, shares a look in flight, and sees a change once the ttl has passed.
 */
import { describe, expect, it } from 'vitest';
import { anyRows } from '../delivery/any-rows.js';

describe('anyRows', () => {
  it('looks once per ttl, shares a look in flight, and sees a change after the ttl', async () => {
    let t = 0;
    let rows = false;
    let looks = 0;
    const check = anyRows(
      async () => {
        looks++;
        return rows;
      },
      1000,
      () => t,
    );
    expect(await Promise.all([check.check(), check.check()])).toEqual([false, false]);
    expect(looks).toBe(1);
    rows = true;
    t = 999;
    expect(await check.check()).toBe(false);
    expect(looks).toBe(1);
    t = 1000;
    expect(await check.check()).toBe(true);
    expect(looks).toBe(2);
  });

  it('a failed look is not cached', async () => {
    let fail = true;
    const check = anyRows(
      async () => {
        if (fail) throw new Error('database down');
        return true;
      },
      1000,
      () => 0,
    );
    await expect(check.check()).rejects.toThrow('database down');
    fail = false;
    expect(await check.check()).toBe(true);
  });
});
