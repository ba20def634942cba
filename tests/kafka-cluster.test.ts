/**
 * The distributed pipeline on a 3-broker Kafka cluster (replication factor 3, min.insync.replicas 2,
 * unclean leader election off): a broker killed with kill -9 mid-stream and restarted loses nothing,
 * because every produce waits for acks=all.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import kafkajs from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAuthenticator } from '../gateway/auth.js';
import { freePort, startPostgres, type PostgresServer } from './harness/postgres.js';
import { startKafkaCluster, type KafkaClusterHandle } from './harness/kafka.js';
import { spawnRole, type RoleProcess } from './harness/stack.js';
import { CLEAN_REPORT, History, type StoredMessage } from './harness/history.js';
import { TestClient, type Frame } from './harness/ws-client.js';
import { createConversationAt, storedMessages } from './harness/queries.js';

describe('Kafka cluster: a broker dies mid-stream', () => {
  let pg: PostgresServer;
  let kafka: KafkaClusterHandle;
  const procs: RoleProcess[] = [];
  let port: number;
  const secret = randomBytes(32).toString('hex');
  const auth = createAuthenticator({ secret });

  beforeAll(async () => {
    pg = await startPostgres();
    kafka = await startKafkaCluster();
    for (const t of ['realchat.events.v1', 'realchat.deliveries.v1', 'realchat.events.dlq.v1']) await kafka.createTopic(t, 3);
    port = await freePort();
    const env = {
      DATABASE_URL: pg.url,
      KAFKA_BROKERS: kafka.brokers,
      REALCHAT_JWT_SECRET: secret,
      REALCHAT_SENDS_PER_S: '100000',
      REALCHAT_SEND_BURST: '100000',
      REALCHAT_TOPIC_PARTITIONS: '3',
      REALCHAT_KAFKA_TIMEOUT_MS: '5000',
    };
    procs.push(await spawnRole('gateway', { ...env, PORT: String(port), REALCHAT_NODE_ID: 'gateway-1' }));
    procs.push(await spawnRole('relay', { ...env, REALCHAT_NODE_ID: 'relay-1' }));
    procs.push(await spawnRole('delivery', { ...env, REALCHAT_NODE_ID: 'delivery-1' }));
  }, 300_000);

  afterAll(async () => {
    for (const p of procs) await p.crash().catch(() => {});
    await kafka?.stop();
    pg?.stop();
  }, 120_000);

  it('loses, duplicates and reorders nothing; the topic stays replicated 3 ways', async () => {
    const [alice, bob] = [randomUUID(), randomUUID()];
    const conv = await createConversationAt(port, await auth.issue(alice), [bob]);
    const a = await TestClient.connect(`ws://127.0.0.1:${port}/v1/ws`, await auth.issue(alice));
    const b = await TestClient.connect(`ws://127.0.0.1:${port}/v1/ws`, await auth.issue(bob));
    const h = new History();
    const N = 90;
    for (let k = 0; k < N; k++) {
      if (k === 30) await kafka.killBroker(2);
      if (k === 60) await kafka.restartBroker(2);
      h.send(alice, conv, `k${k}`);
      let ack: Frame | undefined;
      for (let attempt = 0; attempt < 100; attempt++) {
        ack = await a.sendMessage(conv, `k${k}`, { k });
        if (ack.type === 'ack') break;
        await new Promise((r) => setTimeout(r, 200));
      }
      expect(ack!.type).toBe('ack');
      h.ack(alice, `k${k}`, ack as never);
    }
    await b.waitFor((f) => f.type === 'message' && f.message.sequence_number === N, 60_000);
    for (const m of b.messages(conv)) h.receive(bob, m as StoredMessage);
    expect(h.check(await storedMessages(pg.url, conv), () => [bob])).toEqual(CLEAN_REPORT);

    const admin = new kafkajs.Kafka({ brokers: kafka.brokers.split(','), clientId: 'check', logLevel: kafkajs.logLevel.NOTHING }).admin();
    await admin.connect();
    const meta = await admin.fetchTopicMetadata({ topics: ['realchat.events.v1'] });
    await admin.disconnect();
    for (const p of meta.topics[0]!.partitions) expect(p.replicas).toHaveLength(3);
    a.close();
    b.close();
  }, 240_000);
});
