/**
 * The mirror applier as a process (`npm run mirror`) on a real Kafka topic: region a's stream,
 * published as a's relay publishes it to the topic MirrorMaker 2 would mirror it to in region b
 * (`a.realchat.events.v1`), applied to region b's database. kill -9 of the applier in the middle
 * of the stream and a restart, and the second half published twice (a's relay crashed between
 * its publish and its delete): b's copy still ends equal to a's conversation, and b's own stream
 * carries each of a's events exactly once.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Sql } from '../common/db.js';
import type { EventRecord } from '../common/events.js';
import { createKafkaClient, createProducer, type KafkaProducer } from '../common/kafka/index.js';
import { createLogger } from '../common/log.js';
import type { ChatStore } from '../gateway/chat-store.js';
import { createKafkaEventBus } from '../relay/kafka-bus.js';
import { startKafka, type KafkaHandle } from './harness/kafka.js';
import { freePort } from './harness/postgres.js';
import { drainStream, regionDb } from './harness/regions.js';
import { spawnRole, type RoleProcess } from './harness/stack.js';
import { until } from './harness/until.js';

const TOPIC = 'a.realchat.events.v1';

describe('the mirror applier process (real Kafka, real PostgreSQL)', () => {
  let kafka: KafkaHandle;
  let aSql: Sql;
  let bSql: Sql;
  let bUrl: string;
  let a: ChatStore;
  let producer: KafkaProducer;
  let mirror: RoleProcess | null = null;
  const log = createLogger({ level: 'silent', nodeId: 'mirror-process-test', role: 'test' });

  beforeAll(async () => {
    kafka = await startKafka();
    await kafka.createTopic(TOPIC, 4);
    const [ra, rb] = await Promise.all([regionDb('a'), regionDb('b')]);
    [aSql, a, bSql, bUrl] = [ra.sql, ra.store, rb.sql, rb.url];
    producer = await createProducer(createKafkaClient({ brokers: kafka.brokers.split(','), clientId: 'region-a-relay', log }), {
      timeoutMs: 10_000,
      log,
    });
  }, 240_000);

  afterAll(async () => {
    await mirror?.crash().catch(() => {});
    await producer?.close().catch(() => {});
    await aSql?.end({ timeout: 1 });
    await bSql?.end({ timeout: 1 });
    await kafka?.stop().catch(() => {});
  }, 120_000);

  const startMirror = async (extra: Record<string, string> = {}) =>
    spawnRole('mirror', {
      ...extra,
      DATABASE_URL: bUrl,
      KAFKA_BROKERS: kafka.brokers,
      REALCHAT_REGION: 'b',
      REALCHAT_MIRROR_SOURCE: 'a',
      REALCHAT_TOPIC_PARTITIONS: '4',
      REALCHAT_NODE_ID: `mirror-${randomBytes(2).toString('hex')}`,
      METRICS_PORT: String(await freePort()),
    });

  /** a's relay: its outbox, in order, to the topic (`times` over: a relay that crashed before its delete); then emptied. */
  async function publishA(times = 1): Promise<EventRecord[]> {
    const records = await drainStream(aSql);
    for (let i = 0; i < times; i++) await createKafkaEventBus(producer, TOPIC).publish(records);
    return records;
  }

  const entries = async (sql: Sql, conv: string) =>
    (await sql`SELECT realchat_envelope(m) AS e FROM messages m WHERE conversation_id = ${conv} ORDER BY sequence`).map((r) => r.e);

  it('applies a stream to the copy; a kill -9 mid-stream and a doubled publish apply nothing twice', async () => {
    const [alice, bob] = [randomUUID(), randomUUID()];
    const conv = (await a.createConversation(alice, [bob], 'across', null)).conversation_id;
    for (let k = 0; k < 30; k++) await a.sendMessage(k % 2 ? bob : alice, conv, `m${k}`, { k }, 8, null);
    const firstHalf = await publishA();
    mirror = await startMirror();
    await until('the first half is in b', async () => (await entries(bSql, conv)).length === 30, 60_000, 100);
    // Killed with the second half in flight: whatever it applied and did not mark is read again.
    for (let k = 30; k < 60; k++) await a.sendMessage(k % 2 ? bob : alice, conv, `m${k}`, { k }, 8, null);
    const secondHalf = await publishA(2);
    await new Promise((r) => setTimeout(r, 30));
    await mirror.crash();
    const appliedAtKill = (await entries(bSql, conv)).length - 30;
    console.log(`mirror killed with ${appliedAtKill} of 30 entries of the second half applied, ${30 - appliedAtKill} in flight or unread`);
    mirror = await startMirror();
    await until('the second half is in b', async () => (await entries(bSql, conv)).length === 60, 60_000, 100);
    await new Promise((r) => setTimeout(r, 500));
    expect(await entries(bSql, conv)).toEqual(await entries(aSql, conv));
    const [copy] = await bSql`SELECT home_region, last_seq FROM conversations WHERE id = ${conv}`;
    expect(copy).toEqual({ home_region: 'a', last_seq: 60 });
    // b's stream (its outbox, not yet relayed here) holds each of a's events once, marked as a's.
    const local = await bSql<{ event_id: string; origin_region: string }[]>`SELECT event_id, origin_region FROM outbox ORDER BY id`;
    expect(local.map((r) => r.event_id)).toEqual([...firstHalf, ...secondHalf].map((r) => r.eventId));
    expect(new Set(local.map((r) => r.origin_region))).toEqual(new Set(['a']));
  });

  it("with REALCHAT_REGION_FAILOVER_AFTER_MS, it takes over the source region's conversations once the source stays unreachable that long", async () => {
    await mirror?.crash();
    const [alice] = [randomUUID()];
    const conv = (await a.createConversation(alice, [], 'lost', null)).conversation_id;
    await publishA();
    // Region a's gateway: nothing listens there.
    mirror = await startMirror({
      REALCHAT_REGION_PEERS: `a=http://127.0.0.1:${await freePort()}`,
      REALCHAT_REGION_SECRET: randomBytes(32).toString('hex'),
      REALCHAT_REGION_FAILOVER_AFTER_MS: '1500',
    });
    const t0 = Date.now();
    await until(
      'b took over',
      async () => (await bSql`SELECT 1 FROM conversations WHERE id = ${conv} AND home_region IS NULL`).length === 1,
      30_000,
      100,
    );
    const tookMs = Date.now() - t0;
    // The watch starts before the consumer has joined its group (the detection time itself is the unit test's).
    console.log(`automatic failover ${tookMs} ms after the mirror said it started (detection time 1500 ms, probes every second)`);
    expect(await bSql`SELECT from_region, home_epoch FROM region_failovers WHERE conversation_id = ${conv}`).toEqual([
      { from_region: 'a', home_epoch: 1 },
    ]);
    expect((await bSql`SELECT 1 FROM outbox WHERE type = 'conversation.rehomed' AND aggregateid = ${conv}`).length).toBe(1);
    expect(mirror.logs.join('')).toContain('regional failover done');
  });
});
