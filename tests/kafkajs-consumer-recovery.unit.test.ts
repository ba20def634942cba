/**
 * Our fixes of how a kafkajs consumer recovers from a dead broker (common/kafka/kafkajs.ts,
 * tulios/kafkajs#1439): a fetch from a broker that refuses connections refreshes the metadata
 * instead of failing every fetcher of the consumer, and offset commits and heartbeats find the
 * group's new coordinator instead of retrying the dead one until the consumer crash-restarts; a
 * member's leave, refused while the new coordinator loads the group, is asked again. The real
 * kafkajs classes, on a cluster object of ours.
 */
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { LEAVE_RETRY, UNREACHABLE_LEADER_BACKOFF_MS, kafkajsConsumerGroup, kafkajsOffsetManager } from '../common/kafka/kafkajs.js';

const { KafkaJSConnectionError, KafkaJSConnectionClosedError, KafkaJSProtocolError, KafkaJSBrokerNotFound } = createRequire(
  import.meta.url,
)('kafkajs/src/errors') as {
  KafkaJSConnectionError: new (m: string, o: object) => Error;
  KafkaJSConnectionClosedError: new (m: string, o: object) => Error;
  KafkaJSProtocolError: new (e: object) => Error;
  KafkaJSBrokerNotFound: new (m: string) => Error;
};
const silent = { debug() {}, info() {}, warn() {}, error() {}, namespace: () => silent };

function group(refresh: () => Promise<void>, removed: string[] = []) {
  const g = Object.create(kafkajsConsumerGroup().prototype) as {
    recoverFromFetch(e: unknown): Promise<void>;
  };
  const cluster = { refreshMetadata: refresh, removeBroker: (b: { host: string; port: number }) => removed.push(`${b.host}:${b.port}`) };
  return Object.assign(g, { cluster, logger: silent, groupId: 'g', memberId: 'm' });
}

describe('kafkajs consumer fetch recovery (patched)', () => {
  it('a leader that refuses connections: waits, refreshes the metadata and lets the fetcher go on', async () => {
    let refreshes = 0;
    const g = group(async () => {
      refreshes++;
    });
    const t0 = Date.now();
    await expect(
      g.recoverFromFetch(new KafkaJSConnectionError('Connection error: connect ECONNREFUSED 127.0.0.1:9', { broker: '127.0.0.1:9' })),
    ).resolves.toBeUndefined();
    expect(refreshes).toBe(1);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(UNREACHABLE_LEADER_BACKOFF_MS - 5);
  });

  it('a leader whose connection is accepted and closed (a proxy in front of a dead broker): drops it, waits, refreshes the metadata', async () => {
    let refreshes = 0;
    const removed: string[] = [];
    const g = group(async () => {
      refreshes++;
    }, removed);
    const t0 = Date.now();
    await expect(
      g.recoverFromFetch(new KafkaJSConnectionClosedError('Closed connection', { host: '127.0.0.1', port: 9 })),
    ).resolves.toBeUndefined();
    expect(removed).toEqual(['127.0.0.1:9']);
    expect(refreshes).toBe(1);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(UNREACHABLE_LEADER_BACKOFF_MS - 5);
  });

  it('no broker reachable for the refresh: the error goes up to the consumer (kafkajs restarts it)', async () => {
    const g = group(async () => {
      throw new KafkaJSConnectionError('no broker', {});
    });
    await expect(g.recoverFromFetch(new KafkaJSConnectionError('refused', {}))).rejects.toThrow('no broker');
  });

  it('other errors keep kafkajs own handling (an unknown protocol error is rethrown)', async () => {
    let refreshes = 0;
    const g = group(async () => {
      refreshes++;
    });
    const err = new KafkaJSProtocolError({ type: 'CORRUPT_MESSAGE', code: 2, retriable: true, message: 'corrupt' });
    await expect(g.recoverFromFetch(err)).rejects.toBe(err);
    expect(refreshes).toBe(0);
  });
});

/** A coordinator of ours: records the heartbeats and commits it was sent. */
function coordinator(nodeId: number, fail?: Error) {
  const calls: string[] = [];
  return {
    nodeId,
    calls,
    isConnected: () => !fail,
    heartbeat: async () => {
      calls.push('heartbeat');
      if (fail) throw fail;
    },
  };
}

/** A member of the real kafkajs ConsumerGroup class, on a cluster whose group coordinator is `found`. */
function memberOf(found: unknown) {
  const ConsumerGroup = kafkajsConsumerGroup() as unknown as new (
    o: object,
  ) => {
    heartbeat(o: { interval: number }): Promise<void>;
    leave(): Promise<void>;
    coordinator: unknown;
    memberId: string | null;
    generationId: number | null;
  };
  return new ConsumerGroup({
    cluster: { refreshMetadata: async () => {}, findGroupCoordinator: async () => found },
    groupId: 'g',
    topics: [],
    logger: silent,
    instrumentationEmitter: { emit() {} },
  });
}

describe('kafkajs group coordinator lost (patched)', () => {
  it('an offset commit whose coordinator is gone from the metadata finds the group coordinator again', async () => {
    const dead = coordinator(1, new KafkaJSConnectionError('refused', {}));
    const alive = coordinator(2);
    let refreshes = 0;
    const OffsetManager = kafkajsOffsetManager() as unknown as { prototype: object };
    const m = Object.assign(Object.create(OffsetManager.prototype) as { getCoordinator(): Promise<unknown>; coordinator: unknown }, {
      groupId: 'g',
      coordinator: dead,
      cluster: {
        refreshMetadata: async () => {
          refreshes++;
        },
        findBroker: async ({ nodeId }: { nodeId: number }) => {
          throw new KafkaJSBrokerNotFound(`Broker ${nodeId} not found in the cached metadata`);
        },
        findGroupCoordinator: async ({ groupId }: { groupId: string }) => {
          expect(groupId).toBe('g');
          return alive;
        },
      },
    });
    await expect(m.getCoordinator()).resolves.toBe(alive);
    expect(m.coordinator).toBe(alive);
    expect(refreshes).toBe(1);
  });

  it('an offset commit whose coordinator answers an error of another kind keeps that error', async () => {
    const OffsetManager = kafkajsOffsetManager() as unknown as { prototype: object };
    const err = new KafkaJSProtocolError({ type: 'UNKNOWN', code: -1, retriable: false, message: 'x' });
    const m = Object.assign(Object.create(OffsetManager.prototype) as { getCoordinator(): Promise<unknown> }, {
      groupId: 'g',
      coordinator: coordinator(1, new Error('down')),
      cluster: {
        findBroker: async () => {
          throw err;
        },
        findGroupCoordinator: async () => coordinator(2),
        refreshMetadata: async () => {},
      },
    });
    await expect(m.getCoordinator()).rejects.toBe(err);
  });

  for (const [what, err] of [
    ['refused', () => new KafkaJSConnectionError('refused', {})],
    ['closed by a proxy in front of it', () => new KafkaJSConnectionClosedError('Closed connection', { host: '127.0.0.1', port: 9 })],
  ] as const) {
    it(`a heartbeat the coordinator cannot take (${what}) is sent again to the group coordinator found anew`, async () => {
      const dead = coordinator(1, err());
      const alive = coordinator(2);
      const g = memberOf(alive);
      Object.assign(g, { coordinator: dead, memberId: 'member-1', generationId: 7 });
      await expect(g.heartbeat({ interval: 0 })).resolves.toBeUndefined();
      expect(dead.calls).toEqual(['heartbeat']);
      expect(alive.calls).toEqual(['heartbeat']);
      expect(g.coordinator).toBe(alive);
    });
  }

  /** A group member whose coordinator answers its leave with `answers`, in turn (undefined: accepted). */
  function leaving(answers: Array<Error | undefined>) {
    const calls: string[] = [];
    const loading = {
      calls,
      leaveGroup: async () => {
        calls.push('leaveGroup');
        const a = answers.shift();
        if (a) throw a;
      },
    };
    const g = memberOf(loading);
    Object.assign(g, { coordinator: loading, memberId: 'member-1' });
    return { g, calls };
  }
  const protocolError = (type: string) => new KafkaJSProtocolError({ type, code: 14, retriable: true, message: type });

  it('a leave refused while the new coordinator loads the group is asked again until it is accepted', async () => {
    const { g, calls } = leaving([protocolError('GROUP_LOAD_IN_PROGRESS'), protocolError('NOT_COORDINATOR_FOR_GROUP'), undefined]);
    await expect(g.leave()).resolves.toBeUndefined();
    expect(calls).toEqual(['leaveGroup', 'leaveGroup', 'leaveGroup']);
    expect(g.memberId).toBeNull();
  });

  it('a leave refused for another reason, or refused past the attempts, keeps the error', async () => {
    const other = leaving([protocolError('UNKNOWN_MEMBER_ID')]);
    await expect(other.g.leave()).rejects.toThrow('UNKNOWN_MEMBER_ID');
    expect(other.calls).toEqual(['leaveGroup']);
    const loading = leaving(Array.from({ length: LEAVE_RETRY.attempts + 1 }, () => protocolError('GROUP_LOAD_IN_PROGRESS')));
    await expect(loading.g.leave()).rejects.toThrow('GROUP_LOAD_IN_PROGRESS');
    expect(loading.calls).toHaveLength(LEAVE_RETRY.attempts);
  });
});
