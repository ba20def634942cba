/** Topic administration and lag. */
import { retry } from '../retry.js';
import { withTimeout } from '../timeout.js';
import { raw, KAFKA_DEFAULTS, type KafkaClient } from './client.js';
import type { Admin } from './kafkajs.js';

/** One admin session, bounded as a whole; the disconnect also ends whatever kafkajs still retries. */
async function withAdmin<T>(
  client: KafkaClient,
  fn: (admin: Admin) => Promise<T>,
  timeoutMs: number = KAFKA_DEFAULTS.adminCallTimeoutMs,
): Promise<T> {
  const admin = raw(client).admin();
  try {
    return await withTimeout(
      (async () => {
        await admin.connect();
        return fn(admin);
      })(),
      timeoutMs,
      'kafka admin',
    );
  } finally {
    await withTimeout(admin.disconnect(), KAFKA_DEFAULTS.disconnectTimeoutMs, 'kafka admin disconnect').catch(() => {});
  }
}

/**
 * Creates missing topics with a fixed partition count and waits until their metadata is served.
 * Retried with backoff, connection included: right after a creation (several nodes starting at
 * once, or a fresh broker) the broker may answer metadata requests with retriable errors such as
 * UNKNOWN_TOPIC_OR_PARTITION, and a busy broker may not answer the first connection in time.
 * Bounded: a broker that stays unreachable (or refuses for good) fails the start after ~20 s.
 */
export async function ensureTopics(
  client: KafkaClient,
  topics: Array<{ topic: string; partitions: number; replicationFactor?: number }>,
): Promise<void> {
  await retry(
    () =>
      withAdmin(client, async (admin) => {
        const existing = new Set(await admin.listTopics());
        const missing = topics.filter((t) => !existing.has(t.topic));
        if (missing.length) {
          await admin.createTopics({
            waitForLeaders: true,
            topics: missing.map((t) => ({ topic: t.topic, numPartitions: t.partitions, replicationFactor: t.replicationFactor ?? -1 })),
          });
        }
        await admin.fetchTopicMetadata({ topics: topics.map((t) => t.topic) });
      }),
    { retries: KAFKA_DEFAULTS.topicRetries, baseMs: 200, capMs: 3000 },
  );
}

export async function deleteTopics(client: KafkaClient, topics: string[]): Promise<void> {
  if (topics.length === 0) return;
  await withAdmin(client, async (admin) => {
    const existing = new Set(await admin.listTopics());
    const present = topics.filter((t) => existing.has(t));
    if (present.length) await admin.deleteTopics({ topics: present, timeout: 10_000 });
  });
}

export interface PartitionLag {
  topic: string;
  partition: number;
  committed: number;
  end: number;
  lag: number;
}

/** Each partition of `topic`: its first and end offsets, and the group's committed offset (-1: none). */
async function groupOffsets(
  admin: Admin,
  groupId: string,
  topic: string,
): Promise<Array<{ partition: number; low: string; high: string; committed: number }>> {
  const [ends, committed] = await Promise.all([admin.fetchTopicOffsets(topic), admin.fetchOffsets({ groupId, topics: [topic] })]);
  const byPartition = new Map((committed[0]?.partitions ?? []).map((p) => [p.partition, Number(p.offset)]));
  return ends.map((e) => ({ partition: e.partition, low: e.low, high: e.high, committed: byPartition.get(e.partition) ?? -1 }));
}

/** Consumer lag per partition: log end offset minus the group's committed offset. */
async function readLag(admin: Admin, groupId: string, topic: string): Promise<PartitionLag[]> {
  return (await groupOffsets(admin, groupId, topic)).map((p) => {
    const end = Number(p.high);
    const committedOffset = p.committed < 0 ? Number(p.low) : p.committed;
    return { topic, partition: p.partition, committed: committedOffset, end, lag: Math.max(0, end - committedOffset) };
  });
}

/**
 * The partitions of `topics` on which `groupId` has committed nothing, each with its end offset now:
 * where a member that reads from the latest offset begins (GroupConsumer.commitStartingPositions).
 */
export async function uncommittedPartitionEnds(
  client: KafkaClient,
  groupId: string,
  topics: string[],
): Promise<Array<{ topic: string; partition: number; offset: string }>> {
  return withAdmin(client, async (admin) => {
    const out: Array<{ topic: string; partition: number; offset: string }> = [];
    for (const topic of topics) {
      for (const p of await groupOffsets(admin, groupId, topic))
        if (p.committed < 0) out.push({ topic, partition: p.partition, offset: p.high });
    }
    return out;
  });
}

/** One lag reading on a session of its own (the CLI). */
export async function consumerLag(client: KafkaClient, groupId: string, topic: string): Promise<PartitionLag[]> {
  return withAdmin(client, (admin) => readLag(admin, groupId, topic), KAFKA_DEFAULTS.lagCallTimeoutMs);
}

export interface LagProbe {
  lag(groupId: string, topic: string): Promise<PartitionLag[]>;
  close(): Promise<void>;
}

/**
 * Lag readings every few seconds over one admin session kept between them. A session per reading
 * (what the roles did before) costs the brokers new connections, ApiVersions and full metadata
 * each time, several times a second across a cluster. A failed or timed-out reading drops the
 * session (its disconnect also ends whatever kafkajs still retries); the next reading opens a new one.
 */
export function createLagProbe(client: KafkaClient): LagProbe {
  let session: Promise<Admin> | null = null;
  let closed = false;
  const end = (s: Promise<Admin>) =>
    s.then((a) => withTimeout(a.disconnect(), KAFKA_DEFAULTS.disconnectTimeoutMs, 'kafka admin disconnect')).catch(() => {});
  const open = (): Promise<Admin> => {
    const admin = raw(client).admin();
    return admin.connect().then(() => admin);
  };
  return {
    async lag(groupId, topic) {
      if (closed) throw new Error('lag probe closed');
      if (!session) session = open();
      const s = session;
      try {
        return await withTimeout(
          s.then((a) => readLag(a, groupId, topic)),
          KAFKA_DEFAULTS.lagCallTimeoutMs,
          'kafka lag',
        );
      } catch (err) {
        if (session === s) session = null;
        void end(s);
        throw err;
      }
    },
    async close() {
      closed = true;
      const s = session;
      session = null;
      if (s) await end(s);
    },
  };
}
