/**
 * The horizontal layer, every role a real process: 3 gateway nodes, 2 delivery workers, 2 relays,
 * Kafka, PostgreSQL, and Redis behind Sentinel (primary, replica, 3 sentinels). Clients are spread
 * over the nodes; failures are real (kill -9 of a node, SIGTERM drain, Redis primary killed) and
 * each stream is checked end to end with the history checker.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAuthenticator } from '../gateway/auth.js';
import { freePort, startPostgres, type PostgresServer } from './harness/postgres.js';
import { startKafka, type KafkaHandle } from './harness/kafka.js';
import { spawnRole, type RoleProcess } from './harness/stack.js';
import { redisNowMs, startSentinelCluster, type SentinelCluster } from './harness/redis.js';
import { CLEAN_REPORT, History, type StoredMessage } from './harness/history.js';
import { ResilientClient } from './harness/resilient-client.js';
import { TestClient } from './harness/ws-client.js';
import { createConversationAt, storedMessages } from './harness/queries.js';
import { UNLIMITED_RATES } from './harness/env.js';

describe('horizontal gateway layer (3 nodes, 2 delivery workers, 2 relays, Redis Sentinel)', () => {
  let pg: PostgresServer;
  let kafka: KafkaHandle;
  let redis: SentinelCluster;
  const secret = randomBytes(32).toString('hex');
  const auth = createAuthenticator({ secret });
  const gateways = new Map<number, { proc: RoleProcess; port: number }>();
  const workers: RoleProcess[] = [];
  let env: Record<string, string>;

  const startGateway = async (i: number) => {
    const port = gateways.get(i)?.port ?? (await freePort());
    const proc = await spawnRole('gateway', { ...env, PORT: String(port), REALCHAT_NODE_ID: `gateway-${i}` });
    gateways.set(i, { proc, port });
  };
  const urls = () =>
    [...gateways.entries()]
      .filter(([, g]) => g.proc.child.exitCode === null && g.proc.child.signalCode === null)
      .map(([, g]) => `ws://127.0.0.1:${g.port}/v1/ws`);

  beforeAll(async () => {
    pg = await startPostgres();
    kafka = await startKafka();
    redis = await startSentinelCluster();
    env = {
      DATABASE_URL: pg.url,
      KAFKA_BROKERS: kafka.brokers,
      REDIS_SENTINELS: redis.sentinels.map((s) => `127.0.0.1:${s.port}`).join(','),
      REDIS_SENTINEL_NAME: redis.name,
      REALCHAT_JWT_SECRET: secret,
      ...UNLIMITED_RATES,
      REALCHAT_TOPIC_PARTITIONS: '4',
      REALCHAT_NODE_TOPIC_PARTITIONS: '2',
      REALCHAT_KAFKA_TIMEOUT_MS: '3000',
      REALCHAT_DRAIN_TIMEOUT_MS: '3000',
      REALCHAT_LARGE_ROOM_MEMBERS: '50',
      LOG_LEVEL: 'info',
    };
    await startGateway(0); // applies the migrations first
    await Promise.all([startGateway(1), startGateway(2)]);
    for (let i = 0; i < 2; i++) {
      workers.push(await spawnRole('relay', { ...env, REALCHAT_NODE_ID: `relay-${i}`, METRICS_PORT: '0' }));
      workers.push(await spawnRole('delivery', { ...env, REALCHAT_NODE_ID: `delivery-${i}`, METRICS_PORT: '0' }));
    }
  }, 300_000);

  afterAll(async () => {
    for (const g of gateways.values()) await g.proc.crash().catch(() => {});
    for (const w of workers) await w.crash().catch(() => {});
    await redis?.stop();
    await kafka?.stop().catch(() => {});
    pg?.stop();
  }, 120_000);

  const conversation = async (owner: string, members: string[]) =>
    createConversationAt([...gateways.values()][0]!.port, await auth.issue(owner), members);
  const stored = (conv: string) => storedMessages(pg.url, conv);

  /**
   * Six users spread over the nodes; two of them send `perSender` messages each; `fault` runs once
   * half of the messages are acknowledged. Returns the history report.
   */
  async function scenario(perSender: number, fault: () => Promise<void>) {
    const users = Array.from({ length: 6 }, () => randomUUID());
    const conv = await conversation(users[0]!, users.slice(1));
    const clients = await Promise.all(
      users.map(async (u, i) => {
        const c = new ResilientClient(urls, await auth.issue(u), i % 3, [conv]);
        await c.connect();
        return c;
      }),
    );
    const h = new History();
    const senders = [0, 1];
    let acked = 0;
    let faulted: Promise<void> | null = null;
    await Promise.all(
      senders.map(async (s) => {
        for (let k = 0; k < perSender; k++) {
          const key = `u${s}-${k}`;
          h.send(users[s]!, conv, key);
          const a = await clients[s]!.send(conv, key, { s, k });
          h.ack(users[s]!, key, a as never);
          if (++acked === perSender && !faulted) faulted = fault();
        }
      }),
    );
    await faulted;
    const total = senders.length * perSender;
    await Promise.all(clients.map((c) => c.waitForSequence(conv, total, 90_000)));
    clients.forEach((c, i) => {
      for (const m of c.messages(conv)) h.receive(users[i]!, m as StoredMessage);
    });
    const report = h.check(await stored(conv), () => users);
    for (const c of clients) c.stop();
    return { report, clients };
  }

  it('clients on different nodes exchange messages and typing', async () => {
    const [a, b] = [randomUUID(), randomUUID()];
    const conv = await conversation(a, [b]);
    const u = urls();
    const ca = await TestClient.connect(u[0]!, await auth.issue(a));
    const cb = await TestClient.connect(u[1]!, await auth.issue(b));
    expect(ca.frames[0]!.node_id).not.toBe(cb.frames[0]!.node_id);
    await ca.sendMessage(conv, 'x1', 'hello from node 0');
    expect((await cb.waitFor((f) => f.type === 'message', 20_000)).message.payload).toBe('hello from node 0');
    cb.send({ type: 'typing', conversation_id: conv });
    expect(await ca.waitFor((f) => f.type === 'typing', 20_000)).toMatchObject({ user_id: b });
    ca.close();
    cb.close();
  });

  it('a large room across nodes: every subscriber on every node gets every message, in order, by room interest', async () => {
    const online = Array.from({ length: 6 }, () => randomUUID());
    const offline = Array.from({ length: 100 }, () => randomUUID());
    const conv = await conversation(online[0]!, [...online.slice(1), ...offline]);
    const u = urls();
    const clients = await Promise.all(online.map(async (user, i) => TestClient.connect(u[i % u.length]!, await auth.issue(user))));
    expect(new Set(clients.map((c) => c.frames[0]!.node_id)).size).toBe(u.length);
    for (let i = 0; i < 12; i++) await clients[i % clients.length]!.sendMessage(conv, `room-${i}`, i);
    for (const c of clients) {
      const got = await c.waitForCount((f) => f.type === 'message' && f.message.conversation_id === conv, 12, 30_000);
      expect(got.map((f) => f.message.sequence_number)).toEqual(Array.from({ length: 12 }, (_, i) => i + 1));
    }
    for (const c of clients) c.close();
  });

  it('a node paused past its presence TTL misses what was routed meanwhile: once back it catches its clients up, even in a conversation that went quiet', async () => {
    // Chaos finding 16: a node whose heartbeat expired looks dead to every delivery worker, which
    // routes its users' messages to no node; nothing fails, so nothing is broadcast either. Before
    // the fix a connected member got such a message only if a later one revealed the gap.
    const [a, b] = [randomUUID(), randomUUID()];
    const conv = await conversation(a, [b]);
    const ca = await TestClient.connect(`ws://127.0.0.1:${gateways.get(0)!.port}/v1/ws`, await auth.issue(a));
    const cb = await TestClient.connect(`ws://127.0.0.1:${gateways.get(2)!.port}/v1/ws`, await auth.issue(b));
    expect(cb.frames[0]!.node_id).toBe('gateway-2');
    await ca.sendMessage(conv, 'lapse-1', 1);
    expect(await cb.waitFor((f) => f.type === 'message' && f.message.sequence_number === 1, 20_000)).toMatchObject({ via: 'live' });

    const r = new Redis({ port: redis.primary.port, host: '127.0.0.1', lazyConnect: false, maxRetriesPerRequest: 1 });
    r.on('error', () => {});
    const node = gateways.get(2)!.proc.child;
    node.kill('SIGSTOP');
    try {
      // Until Redis's clock is past the paused node's heartbeat expiry: from now on it looks dead.
      const deadline = Date.now() + 20_000;
      for (;;) {
        const [now, score] = await Promise.all([redisNowMs(r), r.zscore('rc:nodes', 'gateway-2')]);
        if (score === null || Number(score) <= now) break;
        if (Date.now() > deadline) throw new Error('gateway-2 still live in the registry 20 s after it was paused');
        await new Promise((res) => setTimeout(res, 200));
      }
      await ca.sendMessage(conv, 'lapse-2', 2);
      // Time for the delivery workers to route it (to no node): the fault has to have bitten.
      await new Promise((res) => setTimeout(res, 2000));
    } finally {
      node.kill('SIGCONT');
      r.disconnect();
    }
    // Nothing more is sent to this conversation: only the node's catch-up can bring it.
    const got = await cb.waitFor((f) => f.type === 'message' && f.message.sequence_number === 2, 20_000);
    expect(got.via).toBe('resume');
    await ca.sendMessage(conv, 'lapse-3', 3);
    expect(await cb.waitFor((f) => f.type === 'message' && f.message.sequence_number === 3, 20_000)).toMatchObject({ via: 'live' });
    expect(cb.messages(conv).map((m) => m.sequence_number)).toEqual([1, 2, 3]);
    ca.close();
    cb.close();
  }, 90_000);

  it('kill -9 of a gateway node mid-stream: its clients move to another node; nothing lost, duplicated or reordered', async () => {
    const victim = 1 + Math.floor(Math.random() * 2);
    const { report, clients } = await scenario(40, async () => {
      await gateways.get(victim)!.proc.crash();
    });
    expect(report).toEqual(CLEAN_REPORT);
    expect(clients.some((c) => c.reconnects > 0)).toBe(true);
    await startGateway(victim);
  }, 180_000);

  it('a drained node (SIGTERM) loses nothing: clients get reconnect and resume elsewhere', async () => {
    const { report, clients } = await scenario(40, async () => {
      const code = await gateways.get(2)!.proc.terminate();
      expect(code).toBe(0);
    });
    expect(report).toEqual(CLEAN_REPORT);
    expect(clients.some((c) => c.reconnects > 0)).toBe(true);
    await startGateway(2);
  }, 180_000);

  it('Redis primary killed: Sentinel fails over, delivery degrades to broadcast and recovers; history intact', async () => {
    const { report } = await scenario(40, async () => {
      await redis.primary.kill();
    });
    expect(report).toEqual(CLEAN_REPORT);
    // Sentinel promotes the replica...
    const sentinel = new Redis({ port: redis.sentinels[0]!.port, host: '127.0.0.1', lazyConnect: false });
    const deadline = Date.now() + 30_000;
    let master: string[] | null = null;
    while (Date.now() < deadline) {
      master = (await sentinel.call('SENTINEL', 'get-master-addr-by-name', redis.name)) as string[];
      if (master?.[1] === String(redis.replica.port)) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    sentinel.disconnect();
    expect(master?.[1]).toBe(String(redis.replica.port));
    // ...and every node heartbeats into the new primary again (and re-synced its users).
    const promoted = new Redis({ port: redis.replica.port, host: '127.0.0.1' });
    let live: string[] = [];
    for (let i = 0; i < 100 && live.length < 3; i++) {
      live = await promoted.zrangebyscore('rc:nodes', Date.now(), '+inf');
      if (live.length < 3) await new Promise((r) => setTimeout(r, 200));
    }
    promoted.disconnect();
    expect(live.sort()).toEqual(['gateway-0', 'gateway-1', 'gateway-2']);
    const { report: after } = await scenario(10, async () => {});
    expect(after).toEqual(CLEAN_REPORT);
  }, 240_000);
});
