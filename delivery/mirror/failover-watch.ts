/**
 * Automatic regional failover (docs/multi-region.md), off unless REALCHAT_REGION_FAILOVER_AFTER_MS
 * is set: the mirror applier of a source region probes that region's gateways, and once they have
 * not answered for that long, fails the region's conversations over to this one; and again at
 * every probe while it stays down, since the mirror may still be applying the lost region's
 * backlog (a conversation whose creation arrives after the first takeover is taken over at the
 * next probe). A region
 * that is only cut off (a partition), not lost, keeps taking writes for its conversations too;
 * what both sides wrote is reconciled when the link heals (the re-append), at the price of order.
 * Choose the detection time accordingly: longer than the partitions you expect to ride out.
 */
import type { Logger } from '../../common/log.js';

export interface FailoverWatch {
  /** One probe; returns what it concluded. */
  tick(): Promise<'up' | 'down' | 'failed_over'>;
  start(intervalMs: number): void;
  stop(): void;
}

export function createFailoverWatch(deps: {
  source: string;
  /** True when the source region answered (any HTTP answer: it is reachable). */
  probe: () => Promise<boolean>;
  afterMs: number;
  failover: () => Promise<{ conversations: number }>;
  log: Logger;
  now?: () => number;
}): FailoverWatch {
  const now = deps.now ?? Date.now;
  let downSince: number | null = null;
  let tookOver = false;
  let timer: NodeJS.Timeout | null = null;
  let running: Promise<unknown> | null = null;

  async function tick(): Promise<'up' | 'down' | 'failed_over'> {
    const up = await deps.probe().catch(() => false);
    if (up) {
      if (downSince !== null) deps.log.info({ source_region: deps.source, down_ms: now() - downSince }, 'region answers again');
      downSince = null;
      tookOver = false;
      return 'up';
    }
    downSince ??= now();
    const downMs = now() - downSince;
    if (downMs < deps.afterMs) return 'down';
    if (!tookOver)
      deps.log.warn(
        { source_region: deps.source, down_ms: downMs },
        'region unreachable past the failover time: taking over its conversations',
      );
    const r = await deps.failover();
    if (!tookOver || r.conversations > 0)
      deps.log.warn({ source_region: deps.source, conversations: r.conversations }, 'regional failover done');
    tookOver = true;
    return 'failed_over';
  }

  return {
    tick,
    start(intervalMs) {
      timer = setInterval(() => {
        if (running) return;
        running = tick()
          .catch((err: unknown) => deps.log.error({ err, source_region: deps.source }, 'failover watch failed; next probe retries'))
          .finally(() => {
            running = null;
          });
      }, intervalMs);
      timer.unref();
    },
    stop() {
      if (timer) clearInterval(timer);
      timer = null;
    },
  };
}

/** Any HTTP answer from the region's gateway within the timeout means reachable (a 404 too). */
export function httpReachable(url: string, timeoutMs: number, doFetch: typeof fetch = fetch): () => Promise<boolean> {
  return async () => {
    try {
      const res = await doFetch(`${url}/healthz`, { signal: AbortSignal.timeout(timeoutMs), redirect: 'manual' });
      await res.body?.cancel();
      return true;
    } catch {
      return false;
    }
  };
}
