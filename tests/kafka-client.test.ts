/**
 * common/kafka.ts (our only kafkajs wrapper) against a real broker: the failure modes kafkajs does
 * not recover from by itself, which would leave a role running but no longer moving messages.
 */
import { randomUUID } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import kafkajs from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKafkaClient, createLagProbe, createProducer, runConsumer, type InRecord } from '../common/kafka/index.js';
import { capturedLogger } from './harness/captured-log.js';
import { startKafka, type KafkaHandle } from './harness/kafka.js';
import { TcpProxy } from './chaos/proxy.js';

/** SIGSTOP takes effect per thread: wait (bounded) until every thread of `pid` is stopped. */
async function allThreadsStopped(pid: number): Promise<void> {
  const state = (tid: string) => {
    try {
      // /proc/<pid>/task/<tid>/stat: "tid (comm) S ...", comm may contain spaces.
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    } catch {
      return 'T'; // the thread exited
    }
  };
  for (let i = 0; i < 100; i++) {
    if (readdirSync(`/proc/${pid}/task`).every((t) => ['T', 't'].includes(state(t)))) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`broker ${pid} not stopped 5 s after SIGSTOP`);
}

describe('Kafka client wrapper (real broker)', () => {
  let broker: KafkaHandle;
  const { log, lines } = capturedLogger(500);

  beforeAll(async () => {
    broker = await startKafka();
  }, 120_000);
  afterAll(async () => {
    await broker?.stop();
  }, 60_000);

  const kafka = () =>
    createKafkaClient({ brokers: broker.brokers.split(','), clientId: `t-${randomUUID().slice(0, 8)}`, log, requestTimeoutMs: 3000 });
  const admin = async <T>(fn: (a: kafkajs.Admin) => Promise<T>): Promise<T> => {
    // An independent kafkajs client inspects the broker (tests may use kafkajs as a tool).
    const a = new kafkajs.Kafka({ brokers: broker.brokers.split(','), clientId: 'admin', logLevel: kafkajs.logLevel.NOTHING }).admin();
    await a.connect();
    try {
      return await fn(a);
    } finally {
      await a.disconnect();
    }
  };
  const readAll = async (topic: string, count: number): Promise<string[]> => {
    const got: string[] = [];
    const c = await runConsumer(kafka(), {
      groupId: `read-${randomUUID()}`,
      topic,
      fromBeginning: true,
      log,
      handleBatch: async (rs) => void got.push(...rs.map((r) => r.value ?? '')),
    });
    for (let i = 0; i < 150 && got.length < count; i++) await new Promise((r) => setTimeout(r, 100));
    await c.stop();
    return got;
  };

  it('a consumer that crashed with a non-retriable error is rebuilt and handles the record again', async () => {
    const topic = `crash-${randomUUID().slice(0, 8)}`;
    await admin((a) => a.createTopics({ waitForLeaders: true, topics: [{ topic, numPartitions: 1, replicationFactor: 1 }] }));
    const producer = await createProducer(kafka(), { timeoutMs: 3000, log });
    await producer.send(topic, [{ key: 'k', value: 'first', headers: {} }]);
    const seen: InRecord[] = [];
    let thrown = 0;
    const consumer = await runConsumer(kafka(), {
      groupId: `g-${randomUUID()}`,
      topic,
      fromBeginning: true,
      log,
      handleBatch: async (records) => {
        seen.push(...records);
        if (thrown++ === 0) throw Object.assign(new Error('poison'), { retriable: false });
      },
    });
    try {
      for (let i = 0; i < 200 && seen.length < 2; i++) await new Promise((r) => setTimeout(r, 100));
      // kafkajs stops for good after a non-retriable error (restart: false); the wrapper rebuilds the member.
      expect(lines.join('')).toMatch(/"restart":false/);
      expect(seen.map((r) => r.value)).toEqual(['first', 'first']);
      // ...and it goes on consuming.
      await producer.send(topic, [{ key: 'k', value: 'second', headers: {} }]);
      for (let i = 0; i < 100 && seen.length < 3; i++) await new Promise((r) => setTimeout(r, 100));
      expect(seen.map((r) => r.value)).toEqual(['first', 'first', 'second']);
    } finally {
      await consumer.stop();
      await producer.close();
    }
  }, 60_000);

  it('a consumer commits on an interval, and on stop what it handled since (a drain leaves nothing to read again)', async () => {
    const topic = `commit-${randomUUID().slice(0, 8)}`;
    const groupId = `g-${randomUUID()}`;
    await admin((a) => a.createTopics({ waitForLeaders: true, topics: [{ topic, numPartitions: 1, replicationFactor: 1 }] }));
    const producer = await createProducer(kafka(), { timeoutMs: 3000, log });
    const committed = async () => admin(async (a) => (await a.fetchOffsets({ groupId, topics: [topic] }))[0]!.partitions[0]!.offset);
    let seen = 0;
    // An interval far longer than the test: only the stop can commit.
    const consumer = await runConsumer(kafka(), {
      groupId,
      topic,
      fromBeginning: true,
      log,
      commitIntervalMs: 60_000,
      handleBatch: async (records) => void (seen += records.length),
    });
    try {
      for (let i = 0; i < 5; i++) await producer.send(topic, [{ key: 'k', value: `v${i}`, headers: {} }]);
      for (let i = 0; i < 100 && seen < 5; i++) await new Promise((r) => setTimeout(r, 100));
      expect(seen).toBe(5);
      // Five batches handled, no commit yet (kafkajs alone committed after each of them).
      expect(await committed()).toBe('-1');
    } finally {
      await consumer.stop();
      await producer.close();
    }
    expect(await committed()).toBe('5');
  }, 60_000);

  it('a member reading from the latest offset commits where it began: back before it handled a record, it skips nothing produced meanwhile', async () => {
    const topic = `latest-${randomUUID().slice(0, 8)}`;
    const groupId = `g-${randomUUID()}`;
    await admin((a) => a.createTopics({ waitForLeaders: true, topics: [{ topic, numPartitions: 4, replicationFactor: 1 }] }));
    const producer = await createProducer(kafka(), { timeoutMs: 3000, log });
    await producer.send(topic, [{ key: 'before', value: 'before', headers: {} }]);
    const opts = { groupId, topic, fromBeginning: false, log, commitIntervalMs: 60_000 };
    // The first member handles nothing: kafkajs alone would commit no position at all.
    const first = await runConsumer(kafka(), { ...opts, handleBatch: async () => {} });
    const committed = await admin(async (a) => (await a.fetchOffsets({ groupId, topics: [topic] }))[0]!.partitions);
    const ends = await admin((a) => a.fetchTopicOffsets(topic));
    expect(committed.map((p) => [p.partition, p.offset]).sort()).toEqual(ends.map((e) => [e.partition, e.high]).sort());
    await first.stop();
    // Produced while no member runs (a broker outage, a rebuild): a key per partition, most likely.
    const keys = Array.from({ length: 12 }, (_, i) => `k${i}`);
    await producer.send(
      topic,
      keys.map((k) => ({ key: k, value: k, headers: {} })),
    );
    const seen: string[] = [];
    const second = await runConsumer(kafka(), { ...opts, handleBatch: async (rs) => void seen.push(...rs.map((r) => r.value ?? '')) });
    try {
      for (let i = 0; i < 100 && seen.length < keys.length; i++) await new Promise((r) => setTimeout(r, 100));
      expect(seen.sort()).toEqual([...keys].sort());
    } finally {
      await second.stop();
      await producer.close();
    }
  }, 60_000);

  it('a record the broker refuses fails only its own send: sends coalesced into the same request are written', async () => {
    const small = `small-${randomUUID().slice(0, 8)}`;
    const good = `good-${randomUUID().slice(0, 8)}`;
    await admin((a) =>
      a.createTopics({
        waitForLeaders: true,
        topics: [
          { topic: small, numPartitions: 1, replicationFactor: 1, configEntries: [{ name: 'max.message.bytes', value: '1024' }] },
          { topic: good, numPartitions: 1, replicationFactor: 1 },
        ],
      }),
    );
    const producer = await createProducer(kafka(), { timeoutMs: 3000, log });
    try {
      // Called in one tick: one produce request carries both (the producer coalesces calls).
      const [tooLarge, fine] = await Promise.allSettled([
        producer.send(small, [{ key: 'k', value: 'x'.repeat(4096), headers: {} }]),
        producer.send(good, [{ key: 'k', value: 'innocent', headers: {} }]),
      ]);
      expect(tooLarge.status).toBe('rejected');
      expect((tooLarge as PromiseRejectedResult).reason).toMatchObject({ retriable: false });
      expect(fine.status).toBe('fulfilled');
      // The shared request may have written it before it failed as a whole: at least once.
      expect(new Set(await readAll(good, 1))).toEqual(new Set(['innocent']));
    } finally {
      await producer.close();
    }
  }, 60_000);

  it('coalesced sends that add up past the broker limit of one partition go out as several requests, in order, none refused', async () => {
    const topic = `bound-${randomUUID().slice(0, 8)}`;
    await admin((a) =>
      a.createTopics({
        waitForLeaders: true,
        topics: [
          { topic, numPartitions: 1, replicationFactor: 1, configEntries: [{ name: 'max.message.bytes', value: String(64 * 1024) }] },
        ],
      }),
    );
    const producer = await createProducer(kafka(), { timeoutMs: 3000, log, maxRequestBytes: 16 * 1024 });
    const refusedBefore = lines.filter((l) => l.includes('kafka send failed')).length;
    try {
      // 40 calls of 4 KiB in one tick: 160 KiB for one partition, where the broker takes 64 KiB per batch.
      const values = Array.from({ length: 40 }, (_, i) => `${String(i).padStart(2, '0')}:${'v'.repeat(4096)}`);
      await Promise.all(values.map((value) => producer.send(topic, [{ key: 'same', value, headers: {} }])));
      expect(lines.filter((l) => l.includes('kafka send failed')).length).toBe(refusedBefore);
      expect((await readAll(topic, 40)).map((v) => v.slice(0, 2))).toEqual(values.map((v) => v.slice(0, 2)));
    } finally {
      await producer.close();
    }
  }, 60_000);

  it('a producer whose sequence fell behind the broker (a timed-out batch was written after all) is replaced', async () => {
    const topic = `seq-${randomUUID().slice(0, 8)}`;
    await admin((a) => a.createTopics({ waitForLeaders: true, topics: [{ topic, numPartitions: 1, replicationFactor: 1 }] }));
    const client = createKafkaClient({
      brokers: broker.brokers.split(','),
      clientId: `t-${randomUUID().slice(0, 8)}`,
      log,
      requestTimeoutMs: 1000,
    });
    const producer = await createProducer(client, { timeoutMs: 1000, log });
    const pid = Number(readFileSync(join(broker.dir, 'node-1', 'pid'), 'utf8').trim());
    try {
      await producer.send(topic, [{ key: 'k', value: 'a0', headers: {} }]);
      // A frozen broker: the batch waits in its socket buffer, every attempt times out, kafkajs
      // gives up and rolls its sequence number back...
      process.kill(pid, 'SIGSTOP');
      await allThreadsStopped(pid);
      const frozen = await producer.send(topic, [{ key: 'k', value: 'a1', headers: {} }]).then(
        () => 'sent',
        () => 'failed',
      );
      expect(frozen).toBe('failed');
      // ...while kafkajs may still be retrying it in the background: let it run out.
      await new Promise((r) => setTimeout(r, 15_000));
      process.kill(pid, 'SIGCONT');
      // ...and the thawed broker writes the queued batch after all: its sequence is taken.
      for (let i = 0; i < 50 && (await readAll(topic, 2)).length < 2; i++) await new Promise((r) => setTimeout(r, 200));
      const errors: string[] = [];
      let sent = false;
      // Generous: a just-thawed broker on a busy machine may take a while to answer a new producer.
      for (let attempt = 0; attempt < 30 && !sent; attempt++) {
        try {
          // A batch of another size at the stale sequence number is refused (OUT_OF_ORDER_SEQUENCE_NUMBER).
          await producer.send(topic, [
            { key: 'k', value: 'b0', headers: {} },
            { key: 'k', value: 'b1', headers: {} },
          ]);
          sent = true;
        } catch (err) {
          errors.push((err as Error).message);
          await new Promise((r) => setTimeout(r, 300));
        }
      }
      expect(sent, `send errors: ${errors.join(' | ')}`).toBe(true);
      expect(await readAll(topic, 4)).toEqual(['a0', 'a1', 'b0', 'b1']);
    } finally {
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        /* gone */
      }
      await producer.close();
    }
  }, 90_000);

  it('the lag probe reads over one kept session, and replaces it after a reading failed', async () => {
    const topic = `lag-${randomUUID()}`;
    await admin((a) => a.createTopics({ waitForLeaders: true, topics: [{ topic, numPartitions: 1 }] }));
    const producer = await createProducer(kafka(), { timeoutMs: 5000, log });
    await producer.send(
      topic,
      [1, 2, 3, 4, 5].map((i) => ({ key: 'k', value: String(i), headers: {} })),
    );
    await producer.close();
    // Our sockets to the broker, by local port: a kept session keeps the same ones.
    const sockets = () =>
      execFileSync('ss', ['-tnH', 'state', 'established', 'dport', `= :${broker.port}`], { encoding: 'utf8' })
        .trim()
        .split('\n')
        .filter(Boolean)
        .map((l) => l.trim().split(/\s+/)[2])
        .sort();
    const probe = createLagProbe(kafka());
    try {
      // A fresh broker creates its offsets topic on first use: the group coordinator may not exist yet.
      let lags: number[] = [];
      for (let i = 0; i < 40 && lags.length === 0; i++) {
        lags = await probe.lag('no-such-group', topic).then(
          (ls) => ls.map((p) => p.lag),
          () => new Promise<number[]>((r) => setTimeout(() => r([]), 250)),
        );
      }
      expect(lags).toEqual([5]);
      const first = sockets();
      for (let i = 0; i < 3; i++) expect((await probe.lag('no-such-group', topic))[0]?.lag).toBe(5);
      expect(sockets()).toEqual(first);

      const pid = Number(readFileSync(join(broker.dir, 'node-1', 'pid'), 'utf8').trim());
      process.kill(pid, 'SIGSTOP');
      try {
        await allThreadsStopped(pid);
        // A timeout, or kafkajs giving up on the coordinator first: either way the reading fails.
        await expect(probe.lag('no-such-group', topic)).rejects.toThrow();
      } finally {
        process.kill(pid, 'SIGCONT');
      }
      expect((await probe.lag('no-such-group', topic))[0]?.lag).toBe(5);
      expect(sockets()).not.toEqual(first); // the failed session was replaced
    } finally {
      await probe.close();
    }
  }, 60_000);
  it('with an address map every broker connection goes where the map says (a partition of that path stops sends)', async () => {
    const topic = `mapped-${randomUUID().slice(0, 8)}`;
    await admin((a) => a.createTopics({ waitForLeaders: true, topics: [{ topic, numPartitions: 1, replicationFactor: 1 }] }));
    // The broker advertises its own address; only the map sends the client back through the proxy.
    const proxy = await TcpProxy.start(broker.port);
    const client = createKafkaClient({
      brokers: [`127.0.0.1:${proxy.port}`],
      clientId: `mapped-${randomUUID().slice(0, 8)}`,
      log,
      requestTimeoutMs: 1500,
      addressMap: new Map([[`127.0.0.1:${broker.port}`, { host: '127.0.0.1', port: proxy.port }]]),
    });
    const producer = await createProducer(client, { timeoutMs: 2500, log });
    try {
      await producer.send(topic, [{ key: 'k', value: 'before', headers: {} }]);
      proxy.partition();
      await expect(producer.send(topic, [{ key: 'k', value: 'during', headers: {} }])).rejects.toThrow();
      proxy.heal();
      let sent = false;
      for (let i = 0; i < 20 && !sent; i++) {
        sent = await producer.send(topic, [{ key: 'k', value: 'after', headers: {} }]).then(
          () => true,
          () => false,
        );
      }
      expect(sent).toBe(true);
    } finally {
      await producer.close().catch(() => {});
      await proxy.close();
    }
  });
});
