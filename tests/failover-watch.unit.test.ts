/**
 * The automatic failover's detector (delivery/mirror/failover-watch.ts): it takes over only after
 * the source region stayed unreachable for the whole detection time, counts from the first failed
 * probe, forgets a blip, and takes over again at each probe while the region stays down (the
 * mirror may still bring conversations of its), never once it answers.
 */
import { describe, expect, it } from 'vitest';
import { createLogger } from '../common/log.js';
import { createFailoverWatch, httpReachable } from '../delivery/mirror/failover-watch.js';

describe('failover watch', () => {
  const log = createLogger({ level: 'silent', nodeId: 'watch-test', role: 'mirror' });

  it('fails over after the region stayed down for the detection time, and at each probe while it stays down; a blip resets the count', async () => {
    let clock = 0;
    let up = true;
    let failovers = 0;
    const watch = createFailoverWatch({
      source: 'a',
      probe: async () => up,
      afterMs: 10_000,
      failover: async () => {
        failovers++;
        return { conversations: 3 };
      },
      log,
      now: () => clock,
    });
    expect(await watch.tick()).toBe('up');
    up = false;
    expect(await watch.tick()).toBe('down');
    clock = 9_000;
    expect(await watch.tick()).toBe('down');
    // Back for one probe: the count starts again.
    up = true;
    expect(await watch.tick()).toBe('up');
    up = false;
    clock = 12_000;
    expect(await watch.tick()).toBe('down');
    clock = 21_999;
    expect(await watch.tick()).toBe('down');
    expect(failovers).toBe(0);
    clock = 22_000;
    expect(await watch.tick()).toBe('failed_over');
    expect(failovers).toBe(1);
    clock = 23_000;
    expect(await watch.tick()).toBe('failed_over');
    expect(failovers).toBe(2);
    up = true;
    expect(await watch.tick()).toBe('up');
    expect(failovers).toBe(2);
  });

  it('a probe that throws counts as down; any HTTP answer counts as up', async () => {
    let clock = 0;
    const watch = createFailoverWatch({
      source: 'a',
      probe: async () => {
        throw new Error('boom');
      },
      afterMs: 5,
      failover: async () => ({ conversations: 0 }),
      log,
      now: () => clock,
    });
    expect(await watch.tick()).toBe('down');
    clock = 5;
    expect(await watch.tick()).toBe('failed_over');
    const answering = httpReachable('http://x', 100, async () => new Response('no', { status: 404 }));
    expect(await answering()).toBe(true);
    const refusing = httpReachable('http://x', 100, async () => {
      throw new TypeError('fetch failed');
    });
    expect(await refusing()).toBe(false);
  });
});
