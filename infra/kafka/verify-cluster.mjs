// Failure check for the 3-broker cluster (run by hand, see README).
// usage: node verify-cluster.mjs <bootstrap> <topic> <produce_n> <expect_total> [timeout_s=60]
// Produces <produce_n> records with acks=all (idempotent), then reads the topic from the start
// with a fresh consumer group until <expect_total> records were seen; prints leader/ISR per
// partition. Exit 0 on success.
import { createRequire } from 'node:module';
import { randomUUID } from 'node:crypto';
const require = createRequire(import.meta.url);
const { Kafka, logLevel } = require('kafkajs');
const [bootstrap, topic, nArg, expArg, tArg = '60'] = process.argv.slice(2);
const kafka = new Kafka({
  clientId: 'verify-cluster',
  brokers: bootstrap.split(','),
  logLevel: logLevel.NOTHING,
  connectionTimeout: 1000,
  retry: { retries: 8, initialRetryTime: 200 },
});
const timer = setTimeout(() => {
  console.error(JSON.stringify({ ok: false, error: 'timeout', seen }));
  process.exit(1);
}, Number(tArg) * 1000);
let seen = 0;
let retries = 0;
const t0 = Date.now();
const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
await producer.connect();
for (let i = 0; i < Number(nArg); i++) {
  // retry like the relay does: a dead leader is retriable until the controller moves leadership
  for (;;) {
    try {
      await producer.send({ topic, acks: -1, messages: [{ key: `conv-${i % 7}`, value: JSON.stringify({ i, run: t0 }) }] });
      break;
    } catch (_e) {
      retries++;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}
await producer.disconnect();
const produceMs = Date.now() - t0;
const admin = kafka.admin();
await admin.connect();
const md = await admin.fetchTopicMetadata({ topics: [topic] });
await admin.disconnect();
const consumer = kafka.consumer({ groupId: `verify-cluster-${randomUUID()}` });
await consumer.connect();
await consumer.subscribe({ topic, fromBeginning: true });
await new Promise((resolve) =>
  consumer.run({
    eachMessage: async () => {
      if (++seen >= Number(expArg)) resolve();
    },
  }),
);
await consumer.disconnect();
clearTimeout(timer);
console.log(
  JSON.stringify({
    ok: true,
    produced: Number(nArg),
    produce_ms: produceMs,
    send_retries: retries,
    seen,
    partitions: md.topics[0].partitions.map((p) => ({ p: p.partitionId, leader: p.leader, isr: p.isr })),
  }),
);
process.exit(0);
