// End-to-end check of the Debezium outbox path: INSERT into public.outbox -> Kafka record.
// usage: node verify-outbox.mjs <bootstrap> <postgres-url> [topic=realchat.events.v1] [timeout_s=60]
// Inserts a few rows, consumes the topic with kafkajs and checks for each row:
//   key == aggregateid (plain string), headers realchat-event-type / trace_id / realchat-event-id,
//   value == the payload JSON; reports whether the value bytes equal payload::text (Postgres
//   jsonb rendering) and/or JSON.stringify(payload) (what a TS relay would write).
// Exits 0 when every row arrived once with the right key/headers and a value that parses to
// the same JSON; 1 otherwise. Prints one JSON line per record plus a summary.
import { createRequire } from 'node:module';
import { randomUUID } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
const require = createRequire(import.meta.url);
const { Kafka, logLevel } = require('kafkajs');
const postgres = require('postgres');

const [bootstrap, pgUrl, topic = 'realchat.events.v1', timeoutArg = '60'] = process.argv.slice(2);
if (!bootstrap || !pgUrl) {
  console.error('usage: verify-outbox.mjs <bootstrap> <postgres-url> [topic] [timeout_s]');
  process.exit(2);
}
const deadline = Date.now() + Number(timeoutArg) * 1000;
const kafka = new Kafka({ clientId: 'verify-outbox', brokers: bootstrap.split(','), logLevel: logLevel.NOTHING });
const sql = postgres(pgUrl, { max: 1, onnotice: () => {} });

const admin = kafka.admin();
await admin.connect();
const start = await admin.fetchTopicOffsets(topic); // only look at records produced after this point
await admin.disconnect();

const conv = `conv-${randomUUID()}`;
const rows = [
  {
    aggregateid: conv,
    type: 'message.created',
    trace_id: randomUUID().replace(/-/g, ''),
    payload: { conversation_id: conv, sequence: 1, body: 'héllo "quoted" \u2603', n: 42, f: 1.5, flag: true, none: null, tags: [] },
  },
  {
    aggregateid: conv,
    type: 'message.created',
    trace_id: null,
    payload: { zeta: 1, alpha: { nested: [1, 2, 3] }, conversation_id: conv, sequence: 2 },
  },
  { aggregateid: `conv-${randomUUID()}`, type: 'conversation.updated', trace_id: 't-3', payload: { sequence: 1 } },
];
const inserted = [];
const t0 = Date.now();
await sql.begin(async (tx) => {
  for (const r of rows) {
    const [row] = await tx`insert into public.outbox (event_id, aggregatetype, aggregateid, type, payload, trace_id)
      values (${randomUUID()}, 'conversation', ${r.aggregateid}, ${r.type}, ${tx.json(r.payload)}, ${r.trace_id})
      returning id, event_id, aggregateid, type, trace_id, payload, payload::text as payload_text`;
    inserted.push(row);
  }
});
const byEvent = new Map(inserted.map((r) => [r.event_id, r]));
const seen = new Map();
const problems = [];

const consumer = kafka.consumer({ groupId: `verify-outbox-${randomUUID()}` });
await consumer.connect();
await consumer.subscribe({ topic, fromBeginning: true });
const done = new Promise((resolve) => {
  consumer.run({
    eachMessage: async ({ partition, message }) => {
      const startOff = Number(start.find((p) => p.partition === partition)?.offset ?? 0);
      if (Number(message.offset) < startOff) return;
      const h = Object.fromEntries(
        Object.entries(message.headers ?? {}).map(([k, v]) => [k, v === null || v === undefined ? null : v.toString()]),
      );
      const ev = h['realchat-event-id'];
      const row = byEvent.get(ev);
      if (!row) return;
      const value = message.value.toString('utf8');
      const key = message.key ? message.key.toString('utf8') : null;
      const rec = {
        partition,
        offset: message.offset,
        key,
        headers: h,
        value,
        value_equals_payload_text: value === row.payload_text,
        value_equals_json_stringify: value === JSON.stringify(row.payload),
        latency_ms: Date.now() - t0,
      };
      console.log(JSON.stringify(rec));
      if (seen.has(ev)) problems.push(`duplicate record for event ${ev}`);
      seen.set(ev, rec);
      if (key !== row.aggregateid) problems.push(`key ${key} != aggregateid ${row.aggregateid}`);
      if (h['realchat-event-type'] !== row.type) problems.push(`event type header ${h['realchat-event-type']} != ${row.type}`);
      if ((h.trace_id ?? null) !== (row.trace_id ?? null)) problems.push(`trace_id header ${h.trace_id} != ${row.trace_id}`);
      let parsed;
      try {
        parsed = JSON.parse(value);
      } catch {
        problems.push(`value is not JSON: ${value}`);
      }
      if (parsed !== undefined && !isDeepStrictEqual(parsed, row.payload))
        problems.push(`value ${value} != payload ${JSON.stringify(row.payload)}`);
      if (seen.size === inserted.length) resolve();
    },
  });
});
const timeout = new Promise((resolve) => setTimeout(resolve, Math.max(0, deadline - Date.now())));
await Promise.race([done, timeout]);
await new Promise((r) => setTimeout(r, 1000)); // give duplicates a chance to show up
await consumer.disconnect();
await sql.end();
if (seen.size !== inserted.length) problems.push(`received ${seen.size}/${inserted.length} records before timeout`);
const order = [...seen.values()].filter((r) => r.key === conv).map((r) => Number(r.offset));
if (order.length === 2 && !(order[0] < order[1])) problems.push('per-conversation order broken');
console.log(JSON.stringify({ ok: problems.length === 0, received: seen.size, expected: inserted.length, problems }));
process.exit(problems.length === 0 ? 0 : 1);
