/**
 * kafkajs 2.2.4 committed offsets after every batch, in series with the next fetch, whatever
 * autoCommitInterval said. Patched (common/kafka/kafkajs.ts, patchPostBatchCommit): after a batch
 * the commit follows the interval; a failed batch and a rebalance still commit at once. The real
 * kafkajs Runner, on a consumer group of ours that counts commits.
 */
import { createRequire } from 'node:module';
import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { kafkajsRunner, patchPostBatchCommit } from '../common/kafka/kafkajs.js';

const require = createRequire(import.meta.url);
const silent = { debug() {}, info() {}, warn() {}, error() {}, namespace: () => silent };
type RunnerClass = new (o: object) => { running: boolean; handleBatch(b: unknown): Promise<void>; heartbeat(): Promise<void> };

/** A consumer group whose offset manager commits as kafkajs' does, on a clock of ours. */
function group(intervalMs: number, clock: { now: number }) {
  const commits: string[] = [];
  let lastCommit = clock.now;
  let heartbeatError: Error | null = null;
  return {
    commits,
    failHeartbeat(e: Error | null) {
      heartbeatError = e;
    },
    g: {
      groupId: 'g',
      memberId: 'm',
      resolveOffset() {},
      hasSeekOffset: () => false,
      isPaused: () => false,
      async commitOffsets() {
        commits.push('full');
        lastCommit = clock.now;
      },
      async commitOffsetsIfNecessary() {
        if (clock.now >= lastCommit + intervalMs) {
          commits.push('interval');
          lastCommit = clock.now;
        }
      },
      async heartbeat() {
        if (heartbeatError) throw heartbeatError;
      },
    },
  };
}

function batch(offset: number) {
  return {
    topic: 't',
    partition: 0,
    highWatermark: String(offset + 1),
    messages: [{ offset: String(offset), key: null, value: Buffer.from('x'), headers: {} }],
    isEmptyDueToFiltering: () => false,
    isEmpty: () => false,
    offsetLag: () => '0',
    offsetLagLow: () => '0',
    firstOffset: () => String(offset),
    lastOffset: () => String(offset),
  };
}

function emptyBatch() {
  return { ...batch(0), messages: [], isEmpty: () => true };
}

function runner(Runner: RunnerClass, g: object, eachBatch: (p: { batch: unknown }) => Promise<void>) {
  const r = new Runner({
    logger: silent,
    consumerGroup: g,
    instrumentationEmitter: new EventEmitter(),
    eachBatchAutoResolve: false,
    eachBatch,
    heartbeatInterval: 1000,
    retry: { retries: 0 },
    onCrash() {},
    autoCommit: true,
    concurrency: 1,
  });
  r.running = true;
  return r;
}

/** A fresh copy of kafkajs' Runner, without the patch (the module's own is patched on import). */
function unpatchedRunner(): RunnerClass {
  const id = require.resolve('kafkajs/src/consumer/runner.js');
  const cached = require.cache[id];
  delete require.cache[id];
  const fresh = require('kafkajs/src/consumer/runner.js') as RunnerClass;
  require.cache[id] = cached;
  return fresh;
}

async function tenBatchesIn100ms(Runner: RunnerClass) {
  const clock = { now: 0 };
  const { g, commits } = group(500, clock);
  const r = runner(Runner, g, async () => {});
  for (let i = 0; i < 10; i++) {
    clock.now = i * 10;
    await r.handleBatch(batch(i));
  }
  clock.now = 600;
  await r.handleBatch(batch(10));
  return commits;
}

describe('kafkajs post-batch commits (patched)', () => {
  it('after a batch, commits follow autoCommitInterval', async () => {
    expect(await tenBatchesIn100ms(kafkajsRunner() as unknown as RunnerClass)).toEqual(['interval']);
  });

  it('unpatched, kafkajs commits after every batch (what the patch changes)', async () => {
    const Unpatched = unpatchedRunner();
    expect(await tenBatchesIn100ms(Unpatched)).toEqual(Array(11).fill('full'));
    patchPostBatchCommit(Unpatched as unknown as { prototype: never } as never);
    expect(await tenBatchesIn100ms(Unpatched)).toEqual(['interval']);
  });

  it('an idle member commits what is left once the interval has passed (its lag goes to 0)', async () => {
    const clock = { now: 0 };
    const { g, commits } = group(500, clock);
    // kafkajs answers a fetch with one batch per partition, empty ones included.
    const fetches: unknown[][] = [[batch(0), emptyBatch()], [emptyBatch(), emptyBatch()], [emptyBatch()]];
    Object.assign(g, { fetch: async () => fetches.shift() ?? [] });
    const r = runner(kafkajsRunner() as unknown as RunnerClass, g, async () => {}) as unknown as {
      fetch(n: number): Promise<unknown[]>;
      handleBatch(b: unknown): Promise<void>;
    };
    clock.now = 100;
    for (const b of await r.fetch(1)) await r.handleBatch(b);
    expect(commits).toEqual([]);
    clock.now = 300;
    await r.fetch(1);
    expect(commits).toEqual([]);
    clock.now = 600;
    await r.fetch(1);
    expect(commits).toEqual(['interval']);
  });

  it('a member that stops commits what it handled, then leaves its group', async () => {
    const clock = { now: 0 };
    const { g, commits } = group(500, clock);
    const steps: string[] = [];
    Object.assign(g, {
      async leave() {
        steps.push(`leave after ${commits.length} commit(s)`);
      },
    });
    const r = runner(kafkajsRunner() as unknown as RunnerClass, g, async () => {}) as unknown as {
      handleBatch(b: unknown): Promise<void>;
      stop(): Promise<void>;
    };
    clock.now = 100;
    await r.handleBatch(batch(0));
    expect(commits).toEqual([]);
    await r.stop();
    expect(commits).toEqual(['full']);
    expect(steps).toEqual(['leave after 1 commit(s)']);
  });

  it('a batch that fails and a rebalance seen by the heartbeat still commit at once', async () => {
    const Runner = kafkajsRunner() as unknown as RunnerClass;
    const clock = { now: 0 };
    const failing = group(500, clock);
    const r = runner(Runner, failing.g, async () => {
      throw new Error('handler failed');
    });
    await expect(r.handleBatch(batch(0))).rejects.toThrow('handler failed');
    expect(failing.commits).toEqual(['full']);

    const rebalancing = group(500, clock);
    const r2 = runner(Runner, rebalancing.g, async () => {});
    await r2.handleBatch(batch(0));
    expect(rebalancing.commits).toEqual([]);
    const rebalance = Object.assign(new Error('The group is rebalancing'), { type: 'REBALANCE_IN_PROGRESS' });
    rebalancing.failHeartbeat(rebalance);
    await expect(r2.heartbeat()).rejects.toThrow('rebalancing');
    expect(rebalancing.commits).toEqual(['full']);
  });
});

describe('REALCHAT_KAFKA_COMMIT_INTERVAL_MS', () => {
  it('defaults to 500 ms; 0 commits after every batch; bounded', async () => {
    const { loadConfig } = await import('../common/config.js');
    expect(loadConfig({}).kafka.commitIntervalMs).toBe(500);
    expect(loadConfig({ REALCHAT_KAFKA_COMMIT_INTERVAL_MS: '0' }).kafka.commitIntervalMs).toBe(0);
    for (const bad of ['-1', '60001', 'soon'])
      expect(() => loadConfig({ REALCHAT_KAFKA_COMMIT_INTERVAL_MS: bad })).toThrow(/REALCHAT_KAFKA_COMMIT_INTERVAL_MS/);
  });

  it('at 0 the patched runner commits after every batch, as kafkajs alone did', async () => {
    const clock = { now: 0 };
    const { g, commits } = group(0, clock);
    const r = runner(kafkajsRunner() as unknown as RunnerClass, g, async () => {});
    for (let i = 0; i < 3; i++) await r.handleBatch(batch(i));
    expect(commits).toEqual(['interval', 'interval', 'interval']);
  });
});
