/**
 * Multi-region, the data layer (docs/multi-region.md): region a's real writes, carried as its
 * event stream, applied by region b's mirror applier to b's database make b's copy equal to a's
 * conversation, entry for entry; applying them again changes nothing; b cannot write the copy
 * (the home fence), and other sends of the same batch are not held up by it; a's applier skips
 * what b's stream carries of a's own. Real PostgreSQL, two databases standing for two regions.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../common/log.js';
import { createMirrorApplier } from '../delivery/mirror/applier.js';
import { toEventRecord } from '../delivery/event-record.js';
import type { OutRecord } from '../common/kafka/index.js';
import { createMetrics } from '../common/metrics.js';
import { createKafkaEventBus } from '../relay/kafka-bus.js';
import { createOutboxRelay } from '../relay/outbox-relay.js';
import { drainStream, regionDb, snapshot, type RegionDb } from './harness/regions.js';

describe('mirror applier: region a applied to region b (real PostgreSQL)', () => {
  let a: RegionDb;
  let b: RegionDb;
  const log = createLogger({ level: 'silent', nodeId: 'mirror-test', role: 'mirror' });
  const [alice, bob, carol] = [randomUUID(), randomUUID(), randomUUID()];
  let conv: string;

  beforeAll(async () => {
    [a, b] = await Promise.all([regionDb('a'), regionDb('b')]);
  });
  afterAll(async () => {
    await a?.sql.end({ timeout: 1 });
    await b?.sql.end({ timeout: 1 });
  });

  it('every kind of entry, applied once, makes the copy equal to the home; applied again, nothing changes', async () => {
    const created = await a.store.createConversation(alice, [bob], 'plans', null);
    conv = created.conversation_id;
    expect(created).toMatchObject({ home_region: 'a', home_epoch: 0 });
    const m1 = await a.store.sendMessage(alice, conv, 'k1', { text: 'hi' }, 13, null);
    await a.store.sendMessage(bob, conv, 'k2', { text: 'hello' }, 16, null);
    const m3 = await a.store.sendMessage(alice, conv, 'k3', { text: 'typo' }, 15, null);
    await a.store.editMessage(alice, conv, m3.envelope.message_id, 'e1', { text: 'fixed' }, 16, null);
    await a.store.deleteMessage(alice, conv, m1.envelope.message_id, 'd1', null);
    await a.store.addMembers(alice, conv, [carol], null, 'add-carol');
    await a.store.setRole(alice, conv, carol, 'admin', null, 'role-carol');
    await a.store.markRead(carol, conv, 4, null);
    await a.store.removeMember(alice, conv, bob, null, 'remove-bob');
    await a.store.sendMessage(carol, conv, 'k4', { n: 1 }, 7, null);
    const stream = await drainStream(a.sql);
    expect(stream.length).toBeGreaterThanOrEqual(10);

    const applier = createMirrorApplier({ sql: b.sql, sourceRegion: 'a', log, queryTimeoutMs: 10_000 });
    const first = await applier.apply(stream);
    expect(first).toMatchObject({ duplicate: 0, foreign: 0, unknownConversation: 0, homedHere: 0, gaps: 0, invalid: 0 });
    expect(first.applied).toBe(stream.length);
    expect(await snapshot(b.sql, conv)).toEqual(await snapshot(a.sql, conv));
    const [copy] = await b.sql`SELECT home_region, home_epoch FROM conversations WHERE id = ${conv}`;
    expect(copy).toEqual({ home_region: 'a', home_epoch: 0 });
    // b's clients get them from b's own stream, marked as a's.
    const local = await drainStream(b.sql);
    expect(local.map((r) => r.eventId)).toEqual(stream.map((r) => r.eventId));
    expect(new Set(local.map((r) => r.originRegion))).toEqual(new Set(['a']));

    // A redelivery (a consumer restart, a replay of a's outbox): nothing changes, nothing is delivered twice.
    const again = await applier.apply(stream);
    expect(again).toMatchObject({ applied: 0, duplicate: stream.length });
    expect(await snapshot(b.sql, conv)).toEqual(await snapshot(a.sql, conv));
    expect(await drainStream(b.sql)).toEqual([]);
    // Read through b's API: the home is a.
    const listed = await b.store.listConversations(carol, 10);
    expect(listed.conversations.find((c) => c.conversation_id === conv)).toMatchObject({ home_region: 'a', home_epoch: 0 });
  });

  it('the copy cannot be written in b (the home fence); the other sends of the same batch are written', async () => {
    const mine = (await b.store.createConversation(alice, [carol], null, null)).conversation_id;
    await drainStream(b.sql);
    const [toCopy, toMine] = await Promise.allSettled([
      b.store.sendMessage(alice, conv, 'b-k1', { text: 'from b' }, 17, null),
      b.store.sendMessage(alice, mine, 'b-k2', { text: 'local' }, 16, null),
    ]);
    expect(toCopy).toMatchObject({ status: 'rejected', reason: { code: 'unavailable', reason: 'home_elsewhere', retriable: true } });
    expect(toMine).toMatchObject({ status: 'fulfilled', value: { envelope: { sequence_number: 1 } } });
    await expect(b.store.setWhoCanAdd(alice, conv, 'admins')).rejects.toMatchObject({ reason: 'home_elsewhere' });
    await expect(b.store.addMembers(alice, conv, [randomUUID()], null, 'b-add')).rejects.toMatchObject({ reason: 'home_elsewhere' });
    // Nothing of the refused writes is in the copy or its stream.
    expect(await snapshot(b.sql, conv)).toEqual(await snapshot(a.sql, conv));
    const events = await drainStream(b.sql);
    expect(events.map((e) => JSON.parse(e.value).conversation_id)).toEqual([mine]);
  });

  it("b's relay publishes what it applied with a's name in the realchat-region header; a's applier skips those and applies b's own", async () => {
    const bConv = (await b.store.createConversation(carol, [alice], null, null)).conversation_id;
    await b.store.sendMessage(carol, bConv, 'c1', { text: 'from b' }, 18, null);
    // Something of a's, applied in b: in b's outbox next to b's own events.
    await a.store.sendMessage(alice, conv, 'k5', { text: 'late' }, 15, null);
    const aStream = await drainStream(a.sql);
    expect(aStream.length).toBeGreaterThan(0);
    await createMirrorApplier({ sql: b.sql, sourceRegion: 'a', log, queryTimeoutMs: 10_000 }).apply(aStream);
    // b's relay, to a Kafka producer that keeps what it was given; read back as a consumer reads it.
    const sent: OutRecord[] = [];
    const bus = createKafkaEventBus(
      { send: async (_t, rs) => void sent.push(...rs), sendMany: async () => {}, close: async () => {} },
      'b-events',
    );
    const relay = createOutboxRelay({
      sql: b.sql,
      bus,
      log,
      metrics: createMetrics({ nodeId: 'b-relay' }),
      batchSize: 100,
      pollMs: 50,
      lingerMs: 0,
      queryTimeoutMs: 10_000,
    });
    relay.start();
    await relay.idle();
    await relay.stop();
    const bStream = sent.map((r, i) =>
      toEventRecord({
        topic: 'b-events',
        partition: 0,
        offset: String(i),
        key: r.key,
        value: r.value,
        headers: r.headers as Record<string, string>,
      }),
    );
    const fromA = bStream.filter((r) => r.originRegion === 'a');
    expect(fromA.map((r) => r.eventId)).toEqual(aStream.map((r) => r.eventId));
    expect(bStream.length).toBeGreaterThan(fromA.length);
    const counts = await createMirrorApplier({ sql: a.sql, sourceRegion: 'b', log, queryTimeoutMs: 10_000 }).apply(bStream);
    expect(counts).toMatchObject({ foreign: fromA.length, applied: bStream.length - fromA.length, invalid: 0, duplicate: 0 });
    expect(await snapshot(a.sql, bConv)).toEqual(await snapshot(b.sql, bConv));
    expect(await snapshot(b.sql, conv)).toEqual(await snapshot(a.sql, conv));
  });

  it('remembered receipt ids are pruned hourly once older than a week, the recent ones kept', async () => {
    await b.sql`INSERT INTO mirror_applied_events (event_id, applied_at) VALUES (${randomUUID()}, now() - interval '8 days'), (${randomUUID()}, now() - interval '6 days')`;
    const before = (await b.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM mirror_applied_events`)[0]!.n;
    let clock = 0;
    const applier = createMirrorApplier({ sql: b.sql, sourceRegion: 'a', log, queryTimeoutMs: 10_000, now: () => clock });
    let round = 0;
    /** A message of alice's and carol's receipt of it: one more receipt id to remember. */
    const oneReceipt = async () => {
      const sent = await a.store.sendMessage(alice, conv, `prune-${++round}`, { round }, 11, null);
      await a.store.markRead(carol, conv, sent.envelope.sequence_number, null);
      const stream = await drainStream(a.sql);
      expect(stream.filter((r) => r.type === 'conversation.read')).toHaveLength(1);
      return stream;
    };
    clock = 3599_000;
    await applier.apply(await oneReceipt());
    // Not an hour yet: nothing pruned.
    expect((await b.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM mirror_applied_events`)[0]!.n).toBe(before + 1);
    clock = 3600_000;
    await applier.apply(await oneReceipt());
    // The 8-day-old one went, the 6-day-old one and both new ones stayed.
    expect((await b.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM mirror_applied_events`)[0]!.n).toBe(before + 1);
    expect((await b.sql`SELECT 1 FROM mirror_applied_events WHERE applied_at < now() - interval '7 days'`).length).toBe(0);
  });

  it('an entry of a conversation it has no copy of, or a malformed record, is counted and skipped, not retried forever', async () => {
    const applier = createMirrorApplier({ sql: b.sql, sourceRegion: 'a', log, queryTimeoutMs: 10_000 });
    const orphan = (await a.store.createConversation(alice, [], null, null)).conversation_id;
    await drainStream(a.sql); // its creation event is lost to b
    await a.store.sendMessage(alice, orphan, 'o1', { text: 'x' }, 12, null);
    const entries = await drainStream(a.sql);
    const counts = await applier.apply([
      ...entries,
      { key: orphan, value: '{not json', type: 'message.created', eventId: randomUUID(), traceId: null },
    ]);
    expect(counts).toMatchObject({ unknownConversation: 1, invalid: 1, applied: 0 });
  });
});
