// Creates a topic with a fixed partition count if it is missing (kafkajs admin: ~10x faster than
// a JVM TopicCommand, which matters when `stack.sh up` runs again on a live stack).
// usage: node infra/stack/ensure-topic.mjs <bootstrap> <topic> <partitions> [rf=1] [timeout_s=30]
// Prints one JSON line; exits 1 on timeout, or when the existing topic has another partition count.
import { createRequire } from 'node:module';
const require = createRequire(import.meta.url);
const { Kafka, logLevel } = require('kafkajs');

const [bootstrap, topic, partsArg, rfArg = '1', timeoutArg = '30'] = process.argv.slice(2);
if (!bootstrap || !topic || !partsArg) {
  console.error('usage: ensure-topic.mjs <bootstrap> <topic> <partitions> [rf] [timeout_s]');
  process.exit(2);
}
const partitions = Number(partsArg);
const deadline = Date.now() + Number(timeoutArg) * 1000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let last = 'no attempt';
while (Date.now() < deadline) {
  const kafka = new Kafka({
    clientId: 'realchat-stack',
    brokers: bootstrap.split(','),
    logLevel: logLevel.NOTHING,
    connectionTimeout: 2000,
    requestTimeout: 10000,
    retry: { retries: 2 },
  });
  const admin = kafka.admin();
  try {
    await admin.connect();
    let created = false;
    if (!(await admin.listTopics()).includes(topic)) {
      created = await admin.createTopics({
        topics: [{ topic, numPartitions: partitions, replicationFactor: Number(rfArg) }],
        waitForLeaders: true,
      });
    }
    const meta = await admin.fetchTopicMetadata({ topics: [topic] });
    const have = meta.topics[0].partitions.length;
    await admin.disconnect().catch(() => {});
    console.log(JSON.stringify({ topic, partitions: have, created }));
    if (have !== partitions) {
      console.error(`ensure-topic: ${topic} exists with ${have} partitions, expected ${partitions}`);
      process.exit(1);
    }
    process.exit(0);
  } catch (e) {
    last = String(e?.message ? e.message : e);
  }
  await admin.disconnect().catch(() => {});
  await sleep(300);
}
console.error(`ensure-topic: timeout after ${timeoutArg}s (${bootstrap}): ${last}`);
process.exit(1);
