/**
 * kafkajs 2.2.4's produce retry loses a partition whose leader moved, mid-send, to a broker that
 * had already answered (tulios/kafkajs#1303, #1798): the real `sendMessages` of kafkajs, driven by
 * a cluster of ours, resolves without ever sending that partition's records; our producer's check
 * (common/kafka/producer.ts `unacknowledged`) is what turns that into a failed send.
 */
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { type Assigned, unacknowledged } from '../common/kafka/producer.js';

const require = createRequire(import.meta.url);
const createSendMessages = require('kafkajs/src/producer/sendMessages.js') as (
  o: object,
) => (req: object) => Promise<Array<{ topicName: string; partition: number; errorCode: number }>>;
const createRetry = require('kafkajs/src/retry/index.js') as (o: object) => unknown;
const { KafkaJSConnectionError } = require('kafkajs/src/errors') as { KafkaJSConnectionError: new (m: string, o: object) => Error };

const silent = { debug() {}, info() {}, warn() {}, error() {}, namespace: () => silent };
const TOPIC = 'realchat.events.v1';

/** Partition 0 led by broker 1, partition 1 by broker 2, which dies: partition 1 then moves to broker 1. */
function cluster() {
  let leaders: Record<number, number> = { 0: 1, 1: 2 };
  const written: Array<{ broker: number; partition: number; keys: string[] }> = [];
  const broker = (nodeId: number) => ({
    nodeId,
    produce: async ({
      topicData,
    }: {
      topicData: Array<{ topic: string; partitions: Array<{ partition: number; messages: Array<{ key: string }> }> }>;
    }) => {
      if (nodeId === 2) throw new KafkaJSConnectionError('Connection error: read ECONNRESET', { broker: '127.0.0.1:2' });
      for (const t of topicData)
        for (const p of t.partitions) written.push({ broker: nodeId, partition: p.partition, keys: p.messages.map((m) => m.key) });
      return {
        topics: topicData.map((t) => ({
          topicName: t.topic,
          partitions: t.partitions.map((p) => ({ partition: p.partition, errorCode: 0, baseOffset: '0' })),
        })),
      };
    },
  });
  const brokers: Record<number, ReturnType<typeof broker>> = { 1: broker(1), 2: broker(2) };
  return {
    written,
    cluster: {
      refreshMetadataIfNecessary: async () => {},
      refreshMetadata: async () => {
        leaders = { 0: 1, 1: 1 };
      },
      addMultipleTargetTopics: async () => {},
      isConnected: () => true,
      removeBroker: () => {},
      findTopicPartitionMetadata: () => [0, 1].map((partitionId) => ({ partitionId, leader: leaders[partitionId] })),
      findLeaderForPartitions: (_topic: string, partitions: string[]) => {
        const out: Record<number, number[]> = {};
        for (const p of partitions.map(Number)) (out[leaders[p]!] ??= []).push(p);
        return out;
      },
      findBroker: async ({ nodeId }: { nodeId: number | string }) => brokers[Number(nodeId)],
    },
  };
}

describe('kafkajs produce retry after a partition leader moved (our check)', () => {
  it('kafkajs resolves without writing the moved partition; unacknowledged() names it', async () => {
    const { cluster: c, written } = cluster();
    const assigned: Assigned = new Map();
    const send = createSendMessages({
      logger: silent,
      cluster: c,
      // key "p0" -> partition 0, "p1" -> partition 1, recorded like the producer's partitioner does
      partitioner: ({ topic, message }: { topic: string; message: { key: string } }) => {
        const p = message.key === 'p1' ? 1 : 0;
        assigned.set(topic, (assigned.get(topic) ?? new Set()).add(p));
        return p;
      },
      eosManager: {
        isTransactional: () => false,
        acquireBrokerLock: async () => {},
        releaseBrokerLock: async () => {},
        getSequence: () => 0,
        updateSequence: () => {},
        getProducerId: () => 1,
        getProducerEpoch: () => 0,
      },
      retrier: createRetry({ retries: 3, initialRetryTime: 1, maxRetryTime: 5 }),
    });
    const answer = await send({
      acks: -1,
      timeout: 1000,
      topicMessages: [
        {
          topic: TOPIC,
          messages: [
            { key: 'p0', value: 'a' },
            { key: 'p1', value: 'b' },
          ],
        },
      ],
    });
    // the bug: partition 1's record was never written anywhere, and the send resolved
    expect(written).toEqual([{ broker: 1, partition: 0, keys: ['p0'] }]);
    expect(unacknowledged(assigned, answer)).toEqual([`${TOPIC}/1`]);
  });

  it('an answer that covers every assigned partition without error passes; an error code does not', () => {
    const assigned: Assigned = new Map([[TOPIC, new Set([0, 1])]]);
    const ok = [0, 1].map((partition) => ({ topicName: TOPIC, partition, errorCode: 0 }));
    expect(unacknowledged(assigned, ok)).toEqual([]);
    expect(unacknowledged(assigned, [ok[0]!, { ...ok[1]!, errorCode: 6 }])).toEqual([`${TOPIC}/1`]);
  });
});
