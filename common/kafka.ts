/**
 * The only module that imports kafkajs (unmaintained upstream): everything else sees these small
 * functions, so the client can be swapped without touching the roles.
 */
import kafkajs from 'kafkajs';
import type { Admin, Consumer, IHeaders, Kafka, KafkaMessage, Producer } from 'kafkajs';
import type { Logger } from './log.js';
import { withTimeout } from './db.js';
import { backoffMs } from './backoff.js';

const { Kafka: KafkaClient, logLevel, Partitioners } = kafkajs;

export interface KafkaOptions {
  brokers: string[];
  clientId: string;
  log: Logger;
  connectionTimeoutMs?: number;
  requestTimeoutMs?: number;
}

export interface OutRecord {
  key: string;
  value: string;
  headers: Record<string, string>;
}

export interface InRecord {
  topic: string;
  partition: number;
  offset: string;
  key: string | null;
  value: string | null;
  headers: Record<string, string>;
}

export function createKafka(opts: KafkaOptions): Kafka {
  const log = opts.log.child({ component: 'kafkajs' });
  return new KafkaClient({
    clientId: opts.clientId,
    brokers: opts.brokers,
    connectionTimeout: opts.connectionTimeoutMs ?? 3000,
    requestTimeout: opts.requestTimeoutMs ?? 10_000,
    retry: { initialRetryTime: 200, maxRetryTime: 5000, retries: 8 },
    logLevel: logLevel.WARN,
    logCreator: () => ({ level, log: entry }) => {
      const { message, ...rest } = entry;
      if (level <= logLevel.ERROR) log.error(rest, message);
      else log.warn(rest, message);
    },
  });
}

/**
 * Creates missing topics with a fixed partition count and waits until their metadata is served.
 * Retried with backoff, connection included: right after a creation (several nodes starting at
 * once, or a fresh broker) the broker may answer metadata requests with retriable errors such as
 * UNKNOWN_TOPIC_OR_PARTITION, and a busy broker may not answer the first connection in time.
 */
export async function ensureTopics(kafka: Kafka, topics: Array<{ topic: string; partitions: number; replicationFactor?: number }>): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    const admin = kafka.admin();
    try {
      await admin.connect();
      const existing = new Set(await admin.listTopics());
      const missing = topics.filter((t) => !existing.has(t.topic));
      if (missing.length) {
        await admin.createTopics({
          waitForLeaders: true,
          topics: missing.map((t) => ({ topic: t.topic, numPartitions: t.partitions, replicationFactor: t.replicationFactor ?? -1 })),
        });
      }
      await admin.fetchTopicMetadata({ topics: topics.map((t) => t.topic) });
      return;
    } catch (err) {
      // Bounded: a broker that stays unreachable (or refuses for good) fails the start after ~20 s.
      if (attempt >= 9) throw err;
      await new Promise((r) => setTimeout(r, backoffMs(attempt, 200, 3000)));
    } finally {
      await admin.disconnect().catch(() => {});
    }
  }
}

export interface KafkaProducer {
  /** Resolves once every record is acknowledged by all in-sync replicas (acks=all). */
  send(topic: string, records: OutRecord[]): Promise<void>;
  /** Several topics in one request (acks=all). */
  sendMany(batches: ReadonlyMap<string, OutRecord[]>): Promise<void>;
  close(): Promise<void>;
}

export async function createProducer(kafka: Kafka, opts: { timeoutMs: number; log: Logger }): Promise<KafkaProducer> {
  // Idempotent: broker-side dedup of retried batches, and with one request in flight, per-partition order.
  const open = async (): Promise<Producer> => {
    const p = kafka.producer({
      idempotent: true,
      maxInFlightRequests: 1,
      createPartitioner: Partitioners.DefaultPartitioner,
      retry: { retries: 5, initialRetryTime: 200, maxRetryTime: 3000 },
    });
    try {
      await withTimeout(p.connect(), opts.timeoutMs, 'kafka producer connect');
    } catch (err) {
      await withTimeout(p.disconnect(), opts.timeoutMs, 'kafka producer disconnect').catch(() => {});
      throw err;
    }
    return p;
  };
  let producer: Promise<Producer> | null = null;
  let closed = false;
  const current = (): Promise<Producer> => {
    if (closed) return Promise.reject(new Error('kafka producer closed'));
    return (producer ??= open().catch((err: unknown) => {
      producer = null;
      throw err;
    }));
  };
  // A broker that is slow to answer at start-up (busy, or just restarted) is retried, not fatal.
  for (let attempt = 0; ; attempt++) {
    try {
      await current();
      break;
    } catch (err) {
      if (attempt >= 4) throw err;
      opts.log.warn({ err, attempt }, 'kafka producer connect failed; retrying');
      await new Promise((r) => setTimeout(r, backoffMs(attempt, 500, 5000)));
    }
  }
  /**
   * kafkajs rolls a partition's sequence number back when a produce request fails; if the broker
   * wrote that batch after all (it timed out on our side: a slow or frozen broker), every later
   * batch of another size is refused with OUT_OF_ORDER_SEQUENCE_NUMBER, forever. So after any
   * failed send the producer is replaced by one with a new producer id. What the old one may have
   * written is re-sent, which at-least-once delivery with consumer-side dedup already allows.
   */
  const run = async (send: (p: Producer) => Promise<unknown>, what: string): Promise<void> => {
    const pending = current();
    const p = await pending;
    try {
      await withTimeout(send(p), opts.timeoutMs * 2, what);
    } catch (err) {
      if (producer === pending) {
        producer = null;
        opts.log.warn({ err }, 'kafka send failed; the producer is replaced before the next send');
        void withTimeout(p.disconnect(), opts.timeoutMs, 'kafka producer disconnect').catch(() => {});
      }
      throw err;
    }
  };
  return {
    async send(topic, records) {
      if (records.length === 0) return;
      const messages = records.map((r) => ({ key: r.key, value: r.value, headers: r.headers }));
      await run((p) => p.send({ topic, acks: -1, timeout: opts.timeoutMs, messages }), 'kafka produce');
    },
    async sendMany(batches) {
      const topicMessages = [...batches]
        .filter(([, records]) => records.length > 0)
        .map(([topic, records]) => ({ topic, messages: records.map((r) => ({ key: r.key, value: r.value, headers: r.headers })) }));
      if (topicMessages.length === 0) return;
      await run((p) => p.sendBatch({ acks: -1, timeout: opts.timeoutMs, topicMessages }), 'kafka produce');
    },
    async close() {
      closed = true;
      const p = producer;
      producer = null;
      await p?.then((x) => x.disconnect()).catch(() => {});
    },
  };
}

export async function deleteTopics(kafka: Kafka, topics: string[]): Promise<void> {
  if (topics.length === 0) return;
  const admin = kafka.admin();
  await admin.connect();
  try {
    const existing = new Set(await admin.listTopics());
    const present = topics.filter((t) => existing.has(t));
    if (present.length) await admin.deleteTopics({ topics: present, timeout: 10_000 });
  } finally {
    await admin.disconnect();
  }
}

function decodeHeaders(h: IHeaders | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h ?? {})) {
    if (v === undefined || v === null) continue;
    const first = Array.isArray(v) ? v[0] : v;
    if (first !== undefined && first !== null) out[k] = first.toString();
  }
  return out;
}

function toInRecord(topic: string, partition: number, m: KafkaMessage): InRecord {
  return { topic, partition, offset: m.offset, key: m.key ? m.key.toString() : null, value: m.value ? m.value.toString() : null, headers: decodeHeaders(m.headers) };
}

export interface RunningConsumer {
  readonly paused: boolean;
  pause(): void;
  resume(): void;
  stop(): Promise<void>;
}

/**
 * A consumer group member that hands records to the handler in partition order and marks offsets
 * only after the handler succeeded. `handleBatch` receives up to `chunk` records of one partition;
 * a handler error stops the batch (what is done stays committed) and kafkajs retries from the first
 * unfinished record, so processing is at-least-once.
 */
export async function runConsumer(
  kafka: Kafka,
  opts: {
    groupId: string;
    topic: string | string[];
    fromBeginning: boolean;
    log: Logger;
    handleBatch(records: InRecord[]): Promise<void>;
    chunk?: number;
    sessionTimeoutMs?: number;
    /**
     * Wait this long for the first partition assignment. `required`: fail instead of going on
     * without one (a gateway must not serve clients before it can receive their deliveries:
     * reading from the latest offset, it would skip what is produced before it joins).
     */
    join?: { timeoutMs: number; required: boolean };
  },
): Promise<RunningConsumer> {
  const topics = Array.isArray(opts.topic) ? opts.topic : [opts.topic];
  const chunk = opts.chunk ?? 500;
  let paused = false;
  let stopped = false;
  let rebuilds = 0;
  let rebuildTimer: NodeJS.Timeout | null = null;
  let firstJoin: () => void = () => {};
  const joined = new Promise<void>((resolve) => (firstJoin = resolve));
  let current: Consumer | null = null;

  // kafkajs restarts a member itself after retriable errors only; after any other crash (a
  // non-retriable broker answer surfacing from the handler, for one) the member would stay
  // stopped while the process looks healthy. Rebuild it with backoff.
  function scheduleRebuild(dead: Consumer): void {
    if (stopped || dead !== current || rebuildTimer) return;
    const delay = backoffMs(rebuilds++, 500, 10_000);
    opts.log.warn({ group: opts.groupId, delay_ms: delay }, 'rebuilding the kafka consumer');
    rebuildTimer = setTimeout(() => {
      rebuildTimer = null;
      void (async () => {
        await dead.disconnect().catch(() => {});
        if (stopped) return;
        try {
          current = await start();
        } catch (err) {
          opts.log.error({ err, group: opts.groupId }, 'kafka consumer rebuild failed; retrying');
          scheduleRebuild(dead);
        }
      })();
    }, delay);
  }

  const start = async (): Promise<Consumer> => {
    const consumer: Consumer = kafka.consumer({
      groupId: opts.groupId,
      sessionTimeout: opts.sessionTimeoutMs ?? 10_000,
      heartbeatInterval: 1000,
      rebalanceTimeout: 20_000,
      maxBytesPerPartition: 1024 * 1024,
      maxWaitTimeInMs: 50,
      retry: { retries: 8, initialRetryTime: 200, maxRetryTime: 5000, restartOnFailure: async () => true },
    });
    consumer.on(consumer.events.GROUP_JOIN, () => {
      rebuilds = 0;
      firstJoin();
    });
    consumer.on(consumer.events.CRASH, (e) => {
      opts.log.error({ err: e.payload.error, group: opts.groupId, restart: e.payload.restart }, 'kafka consumer crashed');
      if (!e.payload.restart) scheduleRebuild(consumer);
    });
    try {
      await consumer.connect();
      await consumer.subscribe({ topics, fromBeginning: opts.fromBeginning });
      await consumer.run({
        autoCommit: true,
        autoCommitInterval: 500,
        eachBatchAutoResolve: false,
        eachBatch: async ({ batch, resolveOffset, heartbeat, isRunning, isStale }) => {
          for (let i = 0; i < batch.messages.length; i += chunk) {
            if (!isRunning() || isStale()) break;
            const slice = batch.messages.slice(i, i + chunk);
            await opts.handleBatch(slice.map((m) => toInRecord(batch.topic, batch.partition, m)));
            resolveOffset(slice[slice.length - 1]!.offset);
            await heartbeat();
          }
        },
      });
    } catch (err) {
      await consumer.disconnect().catch(() => {});
      throw err;
    }
    if (paused) consumer.pause(topics.map((topic) => ({ topic })));
    return consumer;
  };

  current = await start();
  // Bounded wait for the first assignment, so a node is consuming before it announces presence.
  const join = opts.join ?? { timeoutMs: 30_000, required: false };
  try {
    await withTimeout(joined, join.timeoutMs, 'kafka group join');
  } catch (err) {
    if (join.required) {
      stopped = true;
      if (rebuildTimer) clearTimeout(rebuildTimer);
      await current?.disconnect().catch(() => {});
      throw err;
    }
    opts.log.warn({ err, group: opts.groupId }, 'no group assignment yet');
  }
  return {
    get paused() {
      return paused;
    },
    pause() {
      if (!paused) current?.pause(topics.map((topic) => ({ topic })));
      paused = true;
    },
    resume() {
      if (paused) current?.resume(topics.map((topic) => ({ topic })));
      paused = false;
    },
    async stop() {
      stopped = true;
      if (rebuildTimer) clearTimeout(rebuildTimer);
      await current?.disconnect();
    },
  };
}

export interface PartitionLag {
  topic: string;
  partition: number;
  committed: number;
  end: number;
  lag: number;
}

/** Consumer lag per partition: log end offset minus the group's committed offset. */
export async function consumerLag(kafka: Kafka, groupId: string, topic: string): Promise<PartitionLag[]> {
  const admin: Admin = kafka.admin();
  await admin.connect();
  try {
    const [ends, committed] = await Promise.all([admin.fetchTopicOffsets(topic), admin.fetchOffsets({ groupId, topics: [topic] })]);
    const byPartition = new Map((committed[0]?.partitions ?? []).map((p) => [p.partition, Number(p.offset)]));
    return ends.map((e) => {
      const end = Number(e.high);
      const c = byPartition.get(e.partition) ?? -1;
      const start = Number(e.low);
      const committedOffset = c < 0 ? start : c;
      return { topic, partition: e.partition, committed: committedOffset, end, lag: Math.max(0, end - committedOffset) };
    });
  } finally {
    await admin.disconnect();
  }
}

export type { Kafka };
