/**
 * Chaos finding 20 (docs/chaos.md): a kafkajs client connecting through a seed whose broker is dead
 * behind a proxy (the connection is accepted, then closed) retried that same seed until the broker
 * returned, instead of trying the next one; and a seed that had connected before (its API versions
 * known, so connecting sends nothing) failed only on the metadata request, and a restarted consumer
 * asked it again on every restart. The real kafkajs BrokerPool, patched (common/kafka/kafkajs.ts),
 * on seeds of ours.
 */
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { kafkajsBrokerPool, patchSeedBrokerRotation } from '../common/kafka/kafkajs.js';

const require = createRequire(import.meta.url);
const { KafkaJSConnectionClosedError } = require('kafkajs/src/errors') as {
  KafkaJSConnectionClosedError: new (m: string, o: object) => Error;
};
const createRetry = require('kafkajs/src/retry') as (o: object) => unknown;
const silent = { debug() {}, info() {}, warn() {}, error() {}, namespace: () => silent };

/**
 * A pool of the given BrokerPool class whose seeds come in turn: 'dead' (accepts, then closes) or
 * 'alive'. `known`: the seeds have their API versions from an earlier connection, so connecting
 * sends nothing and succeeds, and the first request is what meets the closed connection.
 */
function pool(BrokerPool: { prototype: object }, seeds: Array<'dead' | 'alive'>, known = false) {
  const tried: string[] = [];
  const asked: string[] = [];
  let next = 0;
  const closed = () => new KafkaJSConnectionClosedError('Closed connection', { host: '127.0.0.1', port: 9 });
  const p = Object.create(BrokerPool.prototype) as { connect(): Promise<void>; refreshMetadata(topics: string[]): Promise<void> };
  Object.assign(p, {
    brokers: {},
    seedBroker: null,
    metadataMaxAge: 300_000,
    logger: silent,
    rootLogger: silent,
    retrier: createRetry({ retries: 3, initialRetryTime: 10, maxRetryTime: 20 }),
    connectionPoolBuilder: { build: async () => seeds[next++ % seeds.length] },
    createBroker: ({ connectionPool }: { connectionPool: 'dead' | 'alive' }) => {
      let connected = false;
      return {
        versions: {},
        connectionPool: { host: '127.0.0.1', port: connectionPool === 'dead' ? 9 : 10 },
        isConnected: () => connected,
        disconnect: async () => void (connected = false),
        connect: async () => {
          tried.push(connectionPool);
          if (connectionPool === 'dead' && !known) throw closed();
          connected = true;
        },
        metadata: async () => {
          asked.push(connectionPool);
          if (connectionPool === 'dead') {
            connected = false;
            throw closed();
          }
          return { brokers: [], topicMetadata: [] };
        },
      };
    },
  });
  return { p, tried, asked };
}

describe('kafkajs seed brokers (patched)', () => {
  it('a seed that accepts and closes is passed over for the next one', async () => {
    const { p, tried } = pool(kafkajsBrokerPool(), ['dead', 'alive']);
    await expect(p.connect()).resolves.toBeUndefined();
    expect(tried).toEqual(['dead', 'alive']);
  });

  it('a seed that connects (its versions known) and then closes on the metadata request is replaced before the next attempt', async () => {
    const { p, asked } = pool(kafkajsBrokerPool(), ['dead', 'alive'], true);
    await p.connect();
    // What a consumer's restart does first: the seed fails it once...
    await expect(p.refreshMetadata([])).rejects.toThrow(/Closed connection/);
    // ...and the restart after it asks the next seed.
    await p.connect();
    await expect(p.refreshMetadata([])).resolves.toBeUndefined();
    expect(asked).toEqual(['dead', 'alive']);
  });

  /** A fresh copy of the class, without the patch (the module's own is patched on import). */
  const unpatched = () => {
    const id = require.resolve('kafkajs/src/cluster/brokerPool.js');
    const cached = require.cache[id];
    delete require.cache[id];
    const Unpatched = require('kafkajs/src/cluster/brokerPool.js') as { prototype: object };
    require.cache[id] = cached;
    return Unpatched;
  };

  it('unpatched, kafkajs asks the same dead seed on every restart (what the patch changes)', async () => {
    const Unpatched = unpatched();
    const { p, asked } = pool(Unpatched, ['dead', 'alive'], true);
    for (let i = 0; i < 3; i++) {
      await p.connect();
      await expect(p.refreshMetadata([])).rejects.toThrow(/Closed connection/);
    }
    expect(asked).toEqual(['dead', 'dead', 'dead']);
    patchSeedBrokerRotation(Unpatched as never);
    const again = pool(Unpatched, ['dead', 'alive'], true);
    await again.p.connect();
    await expect(again.p.refreshMetadata([])).rejects.toThrow();
    await again.p.connect();
    await expect(again.p.refreshMetadata([])).resolves.toBeUndefined();
  });

  it('unpatched, kafkajs retries the dead seed until it gives up (what the patch changes)', async () => {
    const Unpatched = unpatched();
    const { p, tried } = pool(Unpatched, ['dead', 'alive']);
    await expect(p.connect()).rejects.toThrow();
    expect(new Set(tried)).toEqual(new Set(['dead']));
    // And the patch on that copy makes it rotate.
    patchSeedBrokerRotation(Unpatched as never);
    const again = pool(Unpatched, ['dead', 'alive']);
    await expect(again.p.connect()).resolves.toBeUndefined();
  });
});
