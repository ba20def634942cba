/**
 * Chaos finding 20 (docs/chaos.md): a kafkajs client connecting through a seed whose broker is dead
 * behind a proxy (the connection is accepted, then closed) retried that same seed until the broker
 * returned, instead of trying the next one. The real kafkajs BrokerPool, patched
 * (common/kafka/kafkajs.ts), on seeds of ours.
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

/** A pool of the given BrokerPool class whose seeds come in turn: 'dead' (accepts, then closes) or 'alive'. */
function pool(BrokerPool: { prototype: object }, seeds: Array<'dead' | 'alive'>) {
  const tried: string[] = [];
  let next = 0;
  const p = Object.create(BrokerPool.prototype) as { connect(): Promise<void> };
  Object.assign(p, {
    brokers: {},
    seedBroker: null,
    logger: silent,
    rootLogger: silent,
    retrier: createRetry({ retries: 3, initialRetryTime: 10, maxRetryTime: 20 }),
    connectionPoolBuilder: { build: async () => seeds[next++ % seeds.length] },
    createBroker: ({ connectionPool }: { connectionPool: 'dead' | 'alive' }) => ({
      versions: {},
      isConnected: () => false,
      disconnect: async () => {},
      connect: async () => {
        tried.push(connectionPool);
        if (connectionPool === 'dead') throw new KafkaJSConnectionClosedError('Closed connection', { host: '127.0.0.1', port: 9 });
      },
    }),
  });
  return { p, tried };
}

describe('kafkajs seed brokers (patched)', () => {
  it('a seed that accepts and closes is passed over for the next one', async () => {
    const { p, tried } = pool(kafkajsBrokerPool(), ['dead', 'alive']);
    await expect(p.connect()).resolves.toBeUndefined();
    expect(tried).toEqual(['dead', 'alive']);
  });

  it('unpatched, kafkajs retries the dead seed until it gives up (what the patch changes)', async () => {
    // A fresh copy of the class, without the patch (the module's own is patched on import).
    const id = require.resolve('kafkajs/src/cluster/brokerPool.js');
    const cached = require.cache[id];
    delete require.cache[id];
    const Unpatched = require('kafkajs/src/cluster/brokerPool.js') as { prototype: object };
    require.cache[id] = cached;
    const { p, tried } = pool(Unpatched, ['dead', 'alive']);
    await expect(p.connect()).rejects.toThrow();
    expect(new Set(tried)).toEqual(new Set(['dead']));
    // And the patch on that copy makes it rotate.
    patchSeedBrokerRotation(Unpatched as never);
    const again = pool(Unpatched, ['dead', 'alive']);
    await expect(again.p.connect()).resolves.toBeUndefined();
  });
});
