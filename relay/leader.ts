/**
 * The Kafka relay's leadership loop: a standby tries to take the lease over every `renewMs`; the
 * leader renews it at the same pace and runs the outbox relay under it. Leadership ends (and
 * publication with it) as soon as a renewal fails or is refused, as soon as the lease's local
 * deadline passes (the relay checks it before every publish, even if this loop is stuck), or when a
 * fenced delete tells the relay another one took over.
 */
import type { Logger } from '../common/log.js';
import type { Metrics } from '../common/metrics.js';
import { Sleeper } from '../common/backoff.js';
import type { OutboxRelay, PublishFence } from './outbox-relay.js';

/** What the loop needs of relay/lease.ts (tests wrap it to simulate a paused leader). */
export interface Lease {
  readonly held: boolean;
  readonly token: number | null;
  tryAcquire(): Promise<boolean>;
  renew(): Promise<boolean>;
  stepDown(): void;
  release(): Promise<void>;
}

export type LeaderState = 'standby' | 'leader';

export interface LeaderRelay {
  readonly state: LeaderState;
  /** The running relay while leading (wake it on NOTIFY; readiness reads its last error). */
  readonly relay: OutboxRelay | null;
  start(): void;
  /** Stops publishing and hands the lease over (clean stop). */
  stop(): Promise<void>;
}

export function createLeaderRelay(deps: {
  lease: Lease;
  renewMs: number;
  log: Logger;
  metrics: Metrics;
  /** Builds the relay for one leadership, publishing under `fence`. */
  createRelay(fence: PublishFence): OutboxRelay;
}): LeaderRelay {
  const { lease, log, metrics } = deps;
  const sleeper = new Sleeper();
  let running = false;
  let loop: Promise<void> | null = null;
  let relay: OutboxRelay | null = null;
  /** A relay being stopped may still wait on a publish: the next leadership starts after it ended. */
  let stopping: Promise<void> = Promise.resolve();

  function stepDown(reason: string, err?: unknown): void {
    lease.stepDown();
    if (!relay) return;
    log.warn({ reason, err }, 'outbox lease lost: stopping publication');
    metrics.relayLeader.set(0);
    const r = relay;
    relay = null;
    stopping = stopping.then(() => r.stop());
  }

  const fence: PublishFence = {
    token: () => lease.token,
    fenced: (token) => {
      if (lease.token === token || lease.token === null) stepDown('a delete was refused: another relay holds the lease');
    },
  };

  async function round(): Promise<void> {
    if (relay && (!lease.held || !relay.running)) stepDown('the lease ran out by the local clock');
    if (relay) {
      try {
        if (!(await lease.renew())) stepDown('renewal refused: another relay holds the lease');
      } catch (err) {
        stepDown('renewal failed', err);
      }
      return;
    }
    if (!(await lease.tryAcquire())) return;
    await stopping;
    if (!running || !lease.held) return;
    log.info({ token: lease.token }, 'outbox lease acquired: publishing');
    metrics.relayLeader.set(1);
    relay = deps.createRelay(fence);
    relay.start();
  }

  return {
    get state() {
      return relay ? 'leader' : 'standby';
    },
    get relay() {
      return relay;
    },
    start() {
      if (running) return;
      running = true;
      loop = (async () => {
        while (running) {
          try {
            await round();
          } catch (err) {
            log.warn({ err }, 'outbox lease check failed');
          }
          await sleeper.sleep(deps.renewMs);
        }
      })();
    },
    async stop() {
      running = false;
      sleeper.wake();
      await loop;
      const r = relay;
      relay = null;
      await r?.stop();
      await stopping;
      await lease.release();
      metrics.relayLeader.set(0);
    },
  };
}
