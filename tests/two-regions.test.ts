/**
 * Two regions end to end (docs/multi-region.md), every role a real process: each region its own
 * PostgreSQL database, its own Kafka, relay, delivery worker, gateway and mirror applier; MirrorMaker
 * 2 mirrors each region's event topic into the other. A conversation homed in a, with one member
 * connected to each region: both send (b's sends are forwarded to a), both receive every message
 * live, in the home's order, and the history checker finds nothing lost, duplicated or reordered,
 * in either region's database.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import postgres from 'postgres';
import { consumerLag, createKafkaClient } from '../common/kafka/index.js';
import { createLogger } from '../common/log.js';
import { createAuthenticator } from '../gateway/auth.js';
import { UNLIMITED_RATES } from './harness/env.js';
import { CLEAN_REPORT, History } from './harness/history.js';
import { startKafka, startMirrorMaker, type KafkaHandle, type MirrorMakerHandle } from './harness/kafka.js';
import { freePort } from './harness/postgres.js';
import { createConversationAt, storedMessages } from './harness/queries.js';
import { freshDatabase } from './harness/server.js';
import { spawnRole, type RoleProcess } from './harness/stack.js';
import { TestClient, type Frame } from './harness/ws-client.js';

const SECRET = randomBytes(32).toString('hex');
const JWT_SECRET = randomBytes(32).toString('hex');

interface Region {
  name: string;
  databaseUrl: string;
  kafka: KafkaHandle;
  port: number;
  processes: RoleProcess[];
}

describe('two regions over MirrorMaker 2 (real processes)', () => {
  const regions: Record<'a' | 'b', Region> = {} as never;
  let mm2: MirrorMakerHandle;
  const auth = createAuthenticator({ secret: JWT_SECRET });

  beforeAll(async () => {
    const [ka, kb] = await Promise.all([startKafka(), startKafka()]);
    for (const [name, kafka] of [
      ['a', ka],
      ['b', kb],
    ] as const) {
      await kafka.createTopic('realchat.events.v1', 4);
      regions[name] = { name, databaseUrl: await freshDatabase(), kafka, port: await freePort(), processes: [] };
    }
    mm2 = await startMirrorMaker({ a: ka.brokers, b: kb.brokers });
    const env = (r: Region, peer: Region) => ({
      DATABASE_URL: r.databaseUrl,
      KAFKA_BROKERS: r.kafka.brokers,
      REALCHAT_JWT_SECRET: JWT_SECRET,
      REALCHAT_REGION: r.name,
      REALCHAT_REGION_PEERS: `${peer.name}=http://127.0.0.1:${peer.port}`,
      REALCHAT_REGION_SECRET: SECRET,
      REALCHAT_TOPIC_PARTITIONS: '4',
      REALCHAT_RELAY_POLL_MS: '200',
      ...UNLIMITED_RATES,
    });
    for (const [r, peer] of [
      [regions.a, regions.b],
      [regions.b, regions.a],
    ] as const) {
      // The gateway first: it applies the migrations.
      r.processes.push(await spawnRole('gateway', { ...env(r, peer), PORT: String(r.port), REALCHAT_NODE_ID: `gateway-${r.name}` }));
      r.processes.push(
        await spawnRole('relay', { ...env(r, peer), REALCHAT_NODE_ID: `relay-${r.name}`, METRICS_PORT: String(await freePort()) }),
      );
      r.processes.push(
        await spawnRole('delivery', { ...env(r, peer), REALCHAT_NODE_ID: `delivery-${r.name}`, METRICS_PORT: String(await freePort()) }),
      );
      r.processes.push(
        await spawnRole('mirror', {
          ...env(r, peer),
          REALCHAT_MIRROR_SOURCE: peer.name,
          REALCHAT_NODE_ID: `mirror-${r.name}`,
          METRICS_PORT: String(await freePort()),
        }),
      );
    }
  }, 300_000);

  afterAll(async () => {
    for (const r of Object.values(regions)) for (const p of r.processes) await p.crash().catch(() => {});
    await mm2?.stop().catch(() => {});
    for (const r of Object.values(regions)) await r.kafka?.stop().catch(() => {});
  }, 120_000);

  /** Where the stream stopped: each hop's end offsets against its consumer group's. */
  async function diagnose(conv: string): Promise<string> {
    const log = createLogger({ level: 'silent', nodeId: 'diagnose', role: 'test' });
    const hop = async (r: Region, group: string, topic: string) => {
      const client = createKafkaClient({ brokers: r.kafka.brokers.split(','), clientId: 'diagnose', log });
      const lag = await consumerLag(client, group, topic).catch((err: Error) => err.message);
      return `${r.name}:${topic}/${group} ${JSON.stringify(lag)}`;
    };
    const rows = async (r: Region) => {
      const sql = postgres(r.databaseUrl, { max: 1, onnotice: () => {} });
      try {
        const [c] = await sql`SELECT count(*)::int AS n FROM conversations WHERE id = ${conv}`;
        const [o] = await sql`SELECT count(*)::int AS n FROM outbox`;
        return `${r.name}: conversation ${c!.n}, outbox ${o!.n}`;
      } finally {
        await sql.end();
      }
    };
    return [
      await rows(regions.a),
      await rows(regions.b),
      await hop(regions.a, 'realchat-delivery', 'realchat.events.v1'),
      await hop(regions.b, 'realchat-mirror-a', 'a.realchat.events.v1'),
    ].join('; ');
  }

  it("members in two regions chat in a conversation homed in a: every message arrives live in both regions, in the home's order", async () => {
    const [alice, bob] = [randomUUID(), randomUUID()];
    const conv = await createConversationAt(regions.a.port, await auth.issue(alice), [bob]);
    const ws = (r: Region) => `ws://127.0.0.1:${r.port}/v1/ws`;
    const a = await TestClient.connect(ws(regions.a), await auth.issue(alice));
    // Bob's region learns the conversation through the mirror.
    const bobToken = await auth.issue(bob);
    const t0 = Date.now();
    for (;;) {
      const r = await fetch(`http://127.0.0.1:${regions.b.port}/v1/conversations`, {
        headers: { authorization: `Bearer ${bobToken}` },
        signal: AbortSignal.timeout(5000),
      });
      const listed = (await r.json()) as { conversations?: Array<{ conversation_id: string; home_region: string }> };
      const copy = listed.conversations?.find((c) => c.conversation_id === conv);
      if (copy) {
        expect(copy.home_region).toBe('a');
        break;
      }
      if (Date.now() - t0 > 60_000) throw new Error(`the conversation never reached region b: ${await diagnose(conv)}`);
      await new Promise((res) => setTimeout(res, 100));
    }
    console.log(`conversation mirrored to b in ${Date.now() - t0} ms`);
    const b = await TestClient.connect(ws(regions.b), bobToken);
    const h = new History();
    try {
      for (let k = 0; k < 20; k++) {
        for (const [who, client, key] of [
          [alice, a, `a${k}`],
          [bob, b, `b${k}`],
        ] as const) {
          h.send(who, conv, key);
          const ack = await client.sendMessage(conv, key, { k, who });
          expect(ack, JSON.stringify(ack)).toMatchObject({ type: 'ack' });
          h.ack(who, key, ack as never);
        }
      }
      const byClient = new Map<string, Frame[]>();
      for (const [who, client] of [
        [alice, a],
        [bob, b],
      ] as const) {
        const frames = await client.waitForCount((f) => f.type === 'message' && f.message.conversation_id === conv, 40, 60_000);
        byClient.set(who, frames);
        for (const f of frames) h.receive(who, f.message, { via: f.via });
      }
      // Both regions deliver them live, in the home's order.
      for (const frames of byClient.values()) {
        expect(frames.map((f) => f.message.sequence_number)).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
        expect(frames.filter((f) => f.via !== 'live').map((f) => [f.message.sequence_number, f.via])).toEqual([]);
      }
      const home = await storedMessages(regions.a.databaseUrl, conv);
      expect(h.check(home, () => [alice, bob])).toEqual(CLEAN_REPORT);
      // The copy in b is the home's history, entry for entry.
      const copy = await storedMessages(regions.b.databaseUrl, conv);
      expect(copy).toEqual(home);
    } finally {
      a.close();
      b.close();
    }
  }, 180_000);
});
