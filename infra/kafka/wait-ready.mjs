// Bounded readiness probe for the local Kafka scripts (kafka.sh, connect.sh).
// usage: node wait-ready.mjs <bootstrap host:port[,..]> <expected_brokers> <timeout_s>
// Exits 0 once a kafkajs admin client connects, describeCluster reports at least
// <expected_brokers> brokers and listTopics answers; exits 1 on timeout.
import { createRequire } from 'node:module';
const require = createRequire(import.meta.url); // resolves <repo>/node_modules/kafkajs
const { Kafka, logLevel } = require('kafkajs');

const [bootstrap, expectedArg = '1', timeoutArg = '60'] = process.argv.slice(2);
if (!bootstrap) {
  console.error('usage: wait-ready.mjs <bootstrap> <expected_brokers> <timeout_s>');
  process.exit(2);
}
const expected = Number(expectedArg);
const deadline = Date.now() + Number(timeoutArg) * 1000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let last = 'no attempt';
while (Date.now() < deadline) {
  const kafka = new Kafka({
    clientId: 'realchat-wait-ready',
    brokers: bootstrap.split(','),
    logLevel: logLevel.NOTHING,
    connectionTimeout: 1000,
    requestTimeout: 3000,
    retry: { retries: 0 },
  });
  const admin = kafka.admin();
  try {
    await admin.connect();
    const c = await admin.describeCluster();
    await admin.listTopics();
    if (c.brokers.length >= expected && c.controller !== null && c.controller !== undefined && c.controller >= 0) {
      console.log(JSON.stringify({ ready: true, brokers: c.brokers.map((b) => b.nodeId).sort(), controller: c.controller }));
      await admin.disconnect().catch(() => {});
      process.exit(0);
    }
    last = `brokers=${c.brokers.length}/${expected} controller=${c.controller}`;
  } catch (e) {
    last = String(e?.message ? e.message : e);
  }
  await admin.disconnect().catch(() => {});
  await sleep(250);
}
console.error(`wait-ready: timeout after ${timeoutArg}s (${bootstrap}): ${last}`);
process.exit(1);
