/**
 * The distributed pipeline against a real Kafka broker and PostgreSQL, with every role a real
 * process: gateway (commits) -> outbox -> relay (TS) or Debezium -> events topic -> delivery worker
 * -> gateway delivery topic -> gateway -> clients. Failures are real (kill -9, broker killed), and
 * every stream is checked with the history checker.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import postgres from 'postgres';
import kafkajs from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAuthenticator } from '../gateway/auth.js';
import { consumerLag, createKafkaClient } from '../common/kafka/index.js';
import { createLogger } from '../common/log.js';
import { freePort, startPostgres, type PostgresServer } from './harness/postgres.js';
import { startKafka, startConnect, type KafkaHandle, type ConnectHandle } from './harness/kafka.js';
import { spawnRole, type RoleProcess } from './harness/stack.js';
import { CLEAN_REPORT, History, type StoredMessage } from './harness/history.js';
import { TestClient } from './harness/ws-client.js';
import { createConversationAt, storedMessages } from './harness/queries.js';
import { UNLIMITED_RATES } from './harness/env.js';

const EVENTS = 'realchat.events.v1';
const DELIVERIES = 'realchat.deliveries.v1';
const DLQ = 'realchat.events.dlq.v1';

type RelayKind = 'ts' | 'debezium';

describe.each<RelayKind>(['ts', 'debezium'])('Kafka pipeline (relay: %s)', (relayKind) => {
  let pg: PostgresServer;
  let kafka: KafkaHandle;
  let connect: ConnectHandle | null = null;
  let databaseUrl: string;
  let gatewayPort: number;
  let gateway: RoleProcess;
  let relay: RoleProcess | null = null;
  let delivery: RoleProcess;
  let deliveryMetricsPort: number;
  /** Processes a single test starts: crashed in afterAll too, so a failed or timed-out test leaks none. */
  const extras: RoleProcess[] = [];
  const secret = randomBytes(32).toString('hex');
  const auth = createAuthenticator({ secret });
  const env = () => ({
    DATABASE_URL: databaseUrl,
    KAFKA_BROKERS: kafka.brokers,
    REALCHAT_JWT_SECRET: secret,
    ...UNLIMITED_RATES,
    REALCHAT_TOPIC_PARTITIONS: '4',
    REALCHAT_RELAY_POLL_MS: '200',
    REALCHAT_KAFKA_TIMEOUT_MS: '3000',
    REALCHAT_OUTBOX_MODE: relayKind === 'debezium' ? 'wal' : 'table',
    LOG_LEVEL: 'info',
  });
  const startRelay = async () => {
    if (relayKind === 'ts')
      relay = await spawnRole('relay', {
        ...env(),
        REALCHAT_NODE_ID: `relay-${randomUUID().slice(0, 4)}`,
        METRICS_PORT: String(await freePort()),
      });
  };
  const startDelivery = async () => {
    deliveryMetricsPort = await freePort();
    delivery = await spawnRole('delivery', { ...env(), REALCHAT_NODE_ID: 'delivery-1', METRICS_PORT: String(deliveryMetricsPort) });
  };

  beforeAll(async () => {
    pg = await startPostgres({ walLevel: 'logical' });
    databaseUrl = pg.url;
    kafka = await startKafka();
    await kafka.createTopic(EVENTS, 4);
    gatewayPort = await freePort();
    // The gateway applies the migrations (the outbox table must exist before Debezium registers).
    gateway = await spawnRole('gateway', { ...env(), PORT: String(gatewayPort), REALCHAT_NODE_ID: 'gateway-1' });
    if (relayKind === 'debezium') {
      connect = await startConnect(kafka.brokers, { host: '127.0.0.1', port: pg.port, db: 'postgres' });
      await connect.registerOutbox(EVENTS);
    }
    await startRelay();
    await startDelivery();
  }, 240_000);

  afterAll(async () => {
    for (const p of [gateway, relay, delivery, ...extras]) await p?.crash().catch(() => {});
    await connect?.stop().catch(() => {});
    await kafka?.stop().catch(() => {});
    pg?.stop();
  }, 120_000);

  const ws = () => `ws://127.0.0.1:${gatewayPort}/v1/ws`;
  const conversation = async (owner: string, members: string[]) => createConversationAt(gatewayPort, await auth.issue(owner), members);
  const stored = (conv: string) => storedMessages(databaseUrl, conv);
  const outboxRows = async () => {
    const sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });
    try {
      return (await sql<{ n: number }[]>`SELECT count(*)::int AS n FROM outbox`)[0]!.n;
    } finally {
      await sql.end();
    }
  };
  /** Sends keys [from, to) in windows of 10, records the history, tolerates `unavailable` by retrying the same key. */
  async function stream(
    client: TestClient,
    h: History,
    sender: string,
    conv: string,
    from: number,
    to: number,
    between?: (i: number) => Promise<void>,
  ) {
    for (let i = from; i < to; i += 10) {
      const keys = Array.from({ length: Math.min(10, to - i) }, (_, k) => i + k);
      for (const k of keys) {
        for (let attempt = 0; ; attempt++) {
          h.send(sender, conv, `k${k}`);
          const a = await client.sendMessage(conv, `k${k}`, { k });
          if (a.type === 'ack') {
            h.ack(sender, `k${k}`, a as never);
            break;
          }
          if (a.code !== 'unavailable' || attempt > 100) throw new Error(`send failed: ${JSON.stringify(a)}`);
          await new Promise((r) => setTimeout(r, 200));
        }
      }
      await between?.(i + keys.length);
    }
  }
  const received = (h: History, reader: string, clients: TestClient[], conv: string) => {
    for (const c of clients) for (const m of c.messages(conv)) h.receive(reader, m as StoredMessage);
  };
  /** What a failed wait needs to be diagnosed from a CI log alone: each role's warnings and errors, the connector's state. */
  const diagnose = async (): Promise<string> => {
    const tail = (p: RoleProcess | null) =>
      p
        ? `${p.role}: ` +
          p.logs
            .join('')
            .split('\n')
            .filter((l) => /"level":"(warn|error|fatal)"/.test(l) && !/seed broker|ECONNREFUSED/.test(l))
            .slice(-12)
            .map((l) => l.slice(0, 400))
            .join('\n  ')
        : '';
    const status = connect
      ? await fetch(`${connect.url}/connectors/realchat-outbox/status`, { signal: AbortSignal.timeout(3000) }).then(
          (r) => r.text(),
          (e: Error) => e.message,
        )
      : '';
    return [tail(gateway), tail(delivery), tail(relay), status && `connector: ${status}`, connectTail(), await hops()]
      .filter(Boolean)
      .join('\n');
  };
  /** Connect's own warnings and errors (its log file): a task stuck after a broker restart says so there. */
  const connectTail = (): string => {
    if (!connect) return '';
    try {
      const lines = readFileSync(join(connect.dir, 'logs', 'connect.log'), 'utf8')
        .split('\n')
        .filter((l) => /\b(WARN|ERROR)\b/.test(l));
      return `connect log: ${lines
        .slice(-8)
        .map((l) => l.slice(0, 300))
        .join('\n  ')}`;
    } catch (err) {
      return `connect log: ${(err as Error).message}`;
    }
  };
  /** Which hop the stream stopped at: each topic's end offsets against its consumer group's committed offsets. */
  const hops = async (): Promise<string> => {
    const client = createKafkaClient({
      brokers: kafka.brokers.split(','),
      clientId: 'diagnose',
      log: createLogger({ level: 'silent', nodeId: 'diagnose', role: 'test' }),
    });
    const out: string[] = [];
    for (const [topic, group] of [
      [EVENTS, 'realchat-delivery'],
      [DELIVERIES, 'realchat-gateway-gateway-1'],
    ] as const) {
      const lags = await consumerLag(client, group, topic).catch((err: Error) => err.message);
      out.push(
        `${topic} end/committed by ${group}: ${typeof lags === 'string' ? lags : lags.map((l) => `p${l.partition} ${l.end}/${l.committed}`).join(', ')}`,
      );
    }
    return out.join('\n');
  };
  /** Waits until `client` has message `sequence` of `conv`; a timeout reports what it got and why. */
  const delivered = async (client: TestClient, conv: string, sequence: number, timeoutMs: number) => {
    try {
      await client.waitFor(
        (f) => f.type === 'message' && f.message.conversation_id === conv && f.message.sequence_number === sequence,
        timeoutMs,
      );
    } catch (err) {
      const got = client.messages(conv).map((m) => m.sequence_number);
      throw new Error(`${(err as Error).message}\nreceived sequences: [${got.join(',')}]\n${await diagnose()}`);
    }
  };

  it('carries messages end to end; consumer lag and outbox backlog are in /metrics', async () => {
    const [alice, bob] = [randomUUID(), randomUUID()];
    const conv = await conversation(alice, [bob]);
    const a = await TestClient.connect(ws(), await auth.issue(alice));
    const b = await TestClient.connect(ws(), await auth.issue(bob));
    const h = new History();
    await stream(a, h, alice, conv, 0, 20);
    await delivered(b, conv, 20, 30_000);
    received(h, bob, [b], conv);
    expect(h.check(await stored(conv), () => [bob])).toEqual(CLEAN_REPORT);
    const gw = await (await fetch(`http://127.0.0.1:${gatewayPort}/metrics`)).text();
    expect(gw).toMatch(/^realchat_outbox_backlog\{[^}]*\} \d+$/m);
    expect(gw).toMatch(/^realchat_outbox_oldest_age_seconds/m);
    let dm = '';
    for (let i = 0; i < 20 && !/^realchat_consumer_lag\{/m.test(dm); i++) {
      dm = await (await fetch(`http://127.0.0.1:${deliveryMetricsPort}/metrics`)).text();
      await new Promise((r) => setTimeout(r, 500));
    }
    expect(dm).toMatch(/^realchat_consumer_lag\{group="realchat-delivery",topic="realchat.events.v1",partition="\d+"[^}]*\} \d+$/m);
    // The lag CLI reads the same figures.
    const cli = JSON.parse(
      execFileSync(process.execPath, ['dist/delivery/lag-cli.js'], {
        env: { ...process.env, KAFKA_BROKERS: kafka.brokers, DATABASE_URL: databaseUrl, LOG_LEVEL: 'error' },
        timeout: 30_000,
      }).toString(),
    );
    expect(cli).toMatchObject({ group: 'realchat-delivery', topic: EVENTS });
    expect(cli.partitions).toHaveLength(4);
    expect(cli.outbox).toMatchObject({ backlog: expect.any(Number) });
    // Read receipts travel through the same pipeline.
    b.send({ type: 'read', conversation_id: conv, sequence_number: 20 });
    expect(await a.waitFor((f) => f.type === 'receipt', 30_000)).toMatchObject({ user_id: bob, read_sequence: 20 });
    a.close();
    b.close();
  });

  it('kill -9 of the delivery worker and the relay mid-stream loses and duplicates nothing', async () => {
    const [alice, bob] = [randomUUID(), randomUUID()];
    const conv = await conversation(alice, [bob]);
    const a = await TestClient.connect(ws(), await auth.issue(alice));
    const b = await TestClient.connect(ws(), await auth.issue(bob));
    const h = new History();
    await stream(a, h, alice, conv, 0, 120, async (done) => {
      if (done === 30) {
        if (relay) {
          await relay.crash();
          await startRelay();
        } else {
          await connect!.crash();
          await connect!.restart();
        }
      }
      if (done === 70) {
        await delivery.crash();
        await startDelivery();
      }
    });
    await delivered(b, conv, 120, 60_000);
    received(h, bob, [b], conv);
    expect(h.check(await stored(conv), () => [bob])).toEqual(CLEAN_REPORT);
    a.close();
    b.close();
  });

  it('duplicate records injected into the topics are absorbed; replay from an offset and from the outbox re-deliver without duplicates', async () => {
    const [alice, bob] = [randomUUID(), randomUUID()];
    const conv = await conversation(alice, [bob]);
    const a = await TestClient.connect(ws(), await auth.issue(alice));
    const b = await TestClient.connect(ws(), await auth.issue(bob));
    const h = new History();
    await stream(a, h, alice, conv, 0, 10);
    await delivered(b, conv, 10, 30_000);

    const k = new kafkajs.Kafka({ brokers: kafka.brokers.split(','), clientId: 'test', logLevel: kafkajs.logLevel.NOTHING });
    // Copy every event of this conversation back into the event topic and the delivery topic.
    const copies: Array<{ key: string; value: string; headers: Record<string, string> }> = [];
    const consumer = k.consumer({ groupId: `copy-${randomUUID()}` });
    await consumer.connect();
    await consumer.subscribe({ topic: EVENTS, fromBeginning: true });
    await new Promise<void>((resolve) => {
      void consumer.run({
        eachMessage: async ({ message }) => {
          if (message.key?.toString() !== conv) return;
          const headers: Record<string, string> = {};
          for (const [hk, hv] of Object.entries(message.headers ?? {})) if (hv) headers[hk] = hv.toString();
          copies.push({ key: conv, value: message.value!.toString(), headers });
          if (copies.filter((c) => c.value.includes('"message.created"')).length >= 10) resolve();
        },
      });
    });
    await consumer.disconnect();
    const producer = k.producer();
    await producer.connect();
    await producer.send({ topic: EVENTS, messages: copies });
    await producer.send({
      topic: DELIVERIES,
      messages: copies.map((c) => ({ key: c.key, value: `{"schema_version":1,"recipients":null,"event":${c.value}}`, headers: c.headers })),
    });

    // Replay from an offset: the delivery group starts over from the earliest offset.
    await delivery.terminate();
    const admin = k.admin();
    await admin.connect();
    await admin.resetOffsets({ groupId: 'realchat-delivery', topic: EVENTS, earliest: true });
    await admin.disconnect();
    await startDelivery();

    // Replay from the outbox: rewind this conversation from sequence 1.
    execFileSync(process.execPath, ['dist/relay/replay-cli.js', '--conversation', conv, '--from-sequence', '1'], {
      env: { ...process.env, DATABASE_URL: databaseUrl, REALCHAT_OUTBOX_MODE: env().REALCHAT_OUTBOX_MODE },
      timeout: 30_000,
    });

    await stream(a, h, alice, conv, 10, 12);
    await delivered(b, conv, 12, 60_000);
    // Give the replays time to arrive (they are older than the marker messages).
    await new Promise((r) => setTimeout(r, 3000));
    received(h, bob, [b], conv);
    expect(h.check(await stored(conv), () => [bob])).toEqual(CLEAN_REPORT);
    // A fresh client resuming from 0 sees each message once as well.
    const b2 = await TestClient.connect(ws(), await auth.issue(bob), { [conv]: 0 });
    await b2.waitFor((f) => f.type === 'synced', 20_000);
    expect(b2.messages(conv).map((m) => m.sequence_number)).toEqual(Array.from({ length: 12 }, (_, i) => i + 1));
    await producer.disconnect();
    a.close();
    b.close();
    b2.close();
  });

  it('Kafka stopped and restarted during a send stream: the history is complete and ordered', async () => {
    const [alice, bob] = [randomUUID(), randomUUID()];
    const conv = await conversation(alice, [bob]);
    const a = await TestClient.connect(ws(), await auth.issue(alice));
    const b = await TestClient.connect(ws(), await auth.issue(bob));
    const h = new History();
    await stream(a, h, alice, conv, 0, 60, async (done) => {
      if (done === 20) await kafka.kill();
      if (done === 40) await kafka.restart();
    });
    await delivered(b, conv, 60, 90_000);
    received(h, bob, [b], conv);
    expect(h.check(await stored(conv), () => [bob])).toEqual(CLEAN_REPORT);
    a.close();
    b.close();
  }, 180_000);

  if (relayKind === 'ts') {
    it('with two relays, one publishes; when it is killed the standby takes over within seconds, order intact', async () => {
      const standbyMetrics = await freePort();
      const standby = await spawnRole('relay', { ...env(), REALCHAT_NODE_ID: 'relay-standby', METRICS_PORT: String(standbyMetrics) });
      extras.push(standby);
      const leaderGauge = async (port: number) => {
        const m = /^realchat_relay_leader\{[^}]*\} (\d)/m.exec(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text());
        return m ? Number(m[1]) : -1;
      };
      expect(await leaderGauge(standbyMetrics)).toBe(0);
      const [alice, bob] = [randomUUID(), randomUUID()];
      const conv = await conversation(alice, [bob]);
      const a = await TestClient.connect(ws(), await auth.issue(alice));
      const b = await TestClient.connect(ws(), await auth.issue(bob));
      const h = new History();
      let killedAt = 0;
      await stream(a, h, alice, conv, 0, 60, async (done) => {
        if (done === 20) {
          await relay!.crash();
          killedAt = Date.now();
        }
      });
      let tookOverMs = -1;
      for (let i = 0; i < 100; i++) {
        if ((await leaderGauge(standbyMetrics)) === 1) {
          tookOverMs = Date.now() - killedAt;
          break;
        }
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(tookOverMs).toBeGreaterThanOrEqual(0);
      await delivered(b, conv, 60, 30_000);
      received(h, bob, [b], conv);
      expect(h.check(await stored(conv), () => [bob])).toEqual(CLEAN_REPORT);
      console.log(`relay failover: standby leading ${tookOverMs} ms after the kill (upper bound; includes the stream)`);
      relay = standby;
      a.close();
      b.close();
    });

    it('Kafka down: sends are accepted until the outbox backlog reaches its bound, then refused with unavailable; nothing accepted is lost', async () => {
      const port = await freePort();
      const bounded = await spawnRole('gateway', {
        ...env(),
        PORT: String(port),
        REALCHAT_NODE_ID: 'gateway-bounded',
        REALCHAT_OUTBOX_MAX_BACKLOG: '8',
      });
      extras.push(bounded);
      const [alice, bob] = [randomUUID(), randomUUID()];
      const conv = await conversation(alice, [bob]);
      const a = await TestClient.connect(`ws://127.0.0.1:${port}/v1/ws`, await auth.issue(alice));
      const h = new History();
      await kafka.kill();
      let restarted = false;
      try {
        // Rows the relay had not published yet when Kafka went down count toward the bound too.
        const leftover = await outboxRows();
        let accepted = 0;
        let refused: Record<string, unknown> | null = null;
        for (let k = 0; k < 40 && !refused; k++) {
          h.send(alice, conv, `b${k}`);
          const r = await a.sendMessage(conv, `b${k}`, { k });
          if (r.type === 'ack') {
            h.ack(alice, `b${k}`, r as never);
            accepted++;
          } else refused = r;
          // The gateway polls the backlog once a second.
          await new Promise((res) => setTimeout(res, 150));
        }
        expect(leftover + accepted).toBeGreaterThanOrEqual(8);
        expect(accepted).toBeGreaterThan(0);
        expect(refused).toMatchObject({ type: 'error', code: 'unavailable' });
        const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
        expect(metrics).toMatch(/^realchat_sends_refused_backlog_total\{[^}]*\} [1-9]/m);
        await kafka.restart();
        restarted = true;
        const b = await TestClient.connect(ws(), await auth.issue(bob), { [conv]: 0 });
        await b.waitFor((f) => f.type === 'synced', 30_000);
        // Accepted again once the relay drained the backlog.
        let ack: Record<string, unknown> | null = null;
        for (let i = 0; i < 100 && ack?.type !== 'ack'; i++) {
          ack = await a.sendMessage(conv, 'after', 1);
          if (ack.type !== 'ack') await new Promise((res) => setTimeout(res, 300));
        }
        expect(ack).toMatchObject({ type: 'ack' });
        await b.waitFor((f) => f.type === 'message' && f.message.idempotency_key === 'after', 30_000);
        received(h, bob, [b], conv);
        const all = await stored(conv);
        expect(all).toHaveLength(accepted + 1);
        expect(h.check(all.slice(0, accepted), () => [])).toEqual(CLEAN_REPORT);
        expect(b.messages(conv).map((m) => m.sequence_number)).toEqual(all.map((m) => m.sequence_number));
        await bounded.terminate();
        a.close();
        b.close();
      } finally {
        // A failed assertion must not leave the broker down for the tests after this one.
        if (!restarted) await kafka.restart();
      }
    }, 180_000);
  }

  if (relayKind === 'debezium') {
    it('Connect down: the replication slot retains WAL (lag grows, exposed in /metrics); when Connect returns, everything is published', async () => {
      const gauge = async () => {
        const m = /^realchat_replication_slot_lag_bytes\{[^}]*\} (-?[\d.e+]+)/m.exec(
          await (await fetch(`http://127.0.0.1:${gatewayPort}/metrics`)).text(),
        );
        return m ? Number(m[1]) : NaN;
      };
      const [alice, bob] = [randomUUID(), randomUUID()];
      const conv = await conversation(alice, [bob]);
      const a = await TestClient.connect(ws(), await auth.issue(alice));
      const b = await TestClient.connect(ws(), await auth.issue(bob));
      const h = new History();
      await connect!.crash();
      const before = await gauge();
      await stream(a, h, alice, conv, 0, 30);
      const sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });
      const [slot] = await sql<{ active: boolean; retained: number }[]>`
        SELECT active, pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::float8 AS retained
        FROM pg_replication_slots WHERE slot_name = 'realchat_outbox'`;
      await sql.end();
      expect(slot!.active).toBe(false);
      expect(slot!.retained).toBeGreaterThan(0);
      let during = before;
      for (let i = 0; i < 30 && !(during > before); i++) {
        await new Promise((r) => setTimeout(r, 200));
        during = await gauge();
      }
      expect(during).toBeGreaterThan(0);
      expect(b.messages(conv)).toHaveLength(0);
      await connect!.restart();
      await delivered(b, conv, 30, 60_000);
      received(h, bob, [b], conv);
      expect(h.check(await stored(conv), () => [bob])).toEqual(CLEAN_REPORT);
      a.close();
      b.close();
    }, 180_000);
  }

  it('an undecodable record goes to the dead-letter topic with its reason, and the stream goes on', async () => {
    const k = new kafkajs.Kafka({ brokers: kafka.brokers.split(','), clientId: 'test-dlq', logLevel: kafkajs.logLevel.NOTHING });
    const producer = k.producer();
    await producer.connect();
    const marker = randomUUID();
    await producer.send({
      topic: EVENTS,
      messages: [{ key: marker, value: `{"not":"an event","marker":"${marker}"}`, headers: { 'realchat-event-type': 'message.created' } }],
    });
    await producer.disconnect();
    const consumer = k.consumer({ groupId: `dlq-${randomUUID()}` });
    await consumer.connect();
    await consumer.subscribe({ topic: DLQ, fromBeginning: true });
    const reason = await new Promise<string>((resolve) => {
      void consumer.run({
        eachMessage: async ({ message }) => {
          if (message.key?.toString() === marker) resolve(message.headers!['realchat-dlq-reason']!.toString());
        },
      });
    });
    await consumer.disconnect();
    expect(reason).toMatch(/^undecodable: /);
    const dm = await (await fetch(`http://127.0.0.1:${deliveryMetricsPort}/metrics`)).text();
    expect(dm).toMatch(/^realchat_dead_lettered_total\{reason="undecodable"[^}]*\} [1-9]/m);
    // Still delivering.
    const [alice, bob] = [randomUUID(), randomUUID()];
    const conv = await conversation(alice, [bob]);
    const a = await TestClient.connect(ws(), await auth.issue(alice));
    const b = await TestClient.connect(ws(), await auth.issue(bob));
    await a.sendMessage(conv, 'after-dlq', 1);
    await b.waitFor((f) => f.type === 'message', 30_000);
    a.close();
    b.close();
  });
});
