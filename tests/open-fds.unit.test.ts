/** process_open_fds counted without listing /proc/self/fd on the event loop (common/metrics.ts). */
import { openSync, closeSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { countOpenFds, createMetrics } from '../common/metrics.js';

async function scrapeOpenFds(m: ReturnType<typeof createMetrics>): Promise<number> {
  const line = (await m.registry.metrics()).split('\n').find((l) => l.startsWith('process_open_fds'));
  if (!line) throw new Error('process_open_fds is not exported');
  return Number(line.split(' ').at(-1));
}

describe('process_open_fds (Linux)', () => {
  it('follows descriptors opened and closed, and is exported once', async () => {
    const m = createMetrics({ nodeId: 'n' });
    const before = await scrapeOpenFds(m);
    const fds = Array.from({ length: 64 }, () => openSync('/dev/null', 'r'));
    try {
      // Other descriptors of the test process may come and go meanwhile: a little slack.
      expect(Math.abs((await scrapeOpenFds(m)) - before - 64)).toBeLessThanOrEqual(2);
    } finally {
      for (const fd of fds) closeSync(fd);
    }
    expect(Math.abs((await scrapeOpenFds(m)) - before)).toBeLessThanOrEqual(2);
    expect((await m.registry.metrics()).match(/^process_open_fds[{ ]/gm)).toHaveLength(1);
  });

  it('lists the directory (less its own descriptor) where the kernel reports no size', async () => {
    const listed: string[] = [];
    const n = await countOpenFds({
      stat: async () => ({ size: 0 }),
      readdir: async (path) => {
        listed.push(path);
        return ['0', '1', '2', '3', '4'];
      },
    });
    expect(n).toBe(4);
    expect(listed).toEqual(['/proc/self/fd']);
    expect(await countOpenFds({ stat: async () => ({ size: 7 }), readdir: async () => [] })).toBe(7);
  });
});
