/** The relay's leadership loop (relay/leader.ts) with a fake lease and relay: when it publishes, and every way it stops. */
import { describe, expect, it } from 'vitest';
import { createLeaderRelay, type Lease } from '../relay/leader.js';
import type { OutboxRelay, PublishFence } from '../relay/outbox-relay.js';
import { createLogger } from '../common/log.js';
import { createMetrics } from '../common/metrics.js';

function fakeLease() {
  const state = {
    acquirable: true,
    renewal: 'ok' as 'ok' | 'refused' | 'error',
    token: null as number | null,
    localDeadlinePassed: false,
    tokens: 0,
  };
  const lease: Lease = {
    get held() {
      return state.token !== null && !state.localDeadlinePassed;
    },
    get token() {
      return this.held ? state.token : null;
    },
    async tryAcquire() {
      if (!state.acquirable) return false;
      state.token = ++state.tokens;
      state.localDeadlinePassed = false;
      return true;
    },
    async renew() {
      if (state.token === null) return false;
      if (state.renewal === 'error') {
        state.token = null;
        throw new Error('connection lost');
      }
      if (state.renewal === 'refused') {
        state.token = null;
        return false;
      }
      return true;
    },
    stepDown() {
      state.token = null;
    },
    async release() {
      state.token = null;
    },
  };
  return { lease, state };
}

function fakeRelays() {
  const made: Array<{ fence: PublishFence; started: boolean; stopped: boolean }> = [];
  const createRelay = (fence: PublishFence): OutboxRelay => {
    const r = { fence, started: false, stopped: false };
    made.push(r);
    return {
      start: () => void (r.started = true),
      wake: () => {},
      stop: async () => void (r.stopped = true),
      idle: async () => {},
      lastError: null,
      get running() {
        return !r.stopped;
      },
    };
  };
  return { made, createRelay };
}

const until = async (cond: () => boolean) => {
  for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 5));
  expect(cond()).toBe(true);
};

function setup() {
  const { lease, state } = fakeLease();
  const { made, createRelay } = fakeRelays();
  const leader = createLeaderRelay({
    lease,
    renewMs: 5,
    log: createLogger({ level: 'silent', nodeId: 'relay-test', role: 'relay' }),
    metrics: createMetrics({ nodeId: 'relay-test' }),
    createRelay,
  });
  return { leader, state, made };
}

describe('relay leadership loop', () => {
  it('a standby publishes only once it holds the lease, under the lease token', async () => {
    const { leader, state, made } = setup();
    state.acquirable = false;
    leader.start();
    await new Promise((r) => setTimeout(r, 30));
    expect(leader.state).toBe('standby');
    expect(made).toHaveLength(0);
    state.acquirable = true;
    await until(() => leader.state === 'leader');
    expect(made).toHaveLength(1);
    expect(made[0]!.started).toBe(true);
    expect(made[0]!.fence.token()).toBe(1);
    await leader.stop();
    expect(made[0]!.stopped).toBe(true);
  });

  it.each(['refused', 'error'] as const)('a renewal %s ends the leadership and the publishing at once', async (renewal) => {
    const { leader, state, made } = setup();
    leader.start();
    await until(() => leader.state === 'leader');
    state.acquirable = false;
    state.renewal = renewal;
    await until(() => leader.state === 'standby');
    await until(() => made[0]!.stopped);
    expect(made[0]!.fence.token()).toBe(null);
    await leader.stop();
  });

  it('the local deadline passing ends it even without a renewal answer; it leads again under a new token', async () => {
    const { leader, state, made } = setup();
    leader.start();
    await until(() => leader.state === 'leader');
    state.localDeadlinePassed = true;
    // The relay sees no token before its next publish.
    expect(made[0]!.fence.token()).toBe(null);
    await until(() => made[0]!.stopped);
    await until(() => leader.state === 'leader' && made.length === 2);
    expect(made[1]!.fence.token()).toBe(2);
    await leader.stop();
  });

  it('a delete refused under the current token (fenced) ends the leadership', async () => {
    const { leader, state, made } = setup();
    leader.start();
    await until(() => leader.state === 'leader');
    state.acquirable = false;
    made[0]!.fence.fenced(1);
    expect(leader.state).toBe('standby');
    await until(() => made[0]!.stopped);
    await leader.stop();
  });
});
