/** Producing records: idempotent, acks=all, replaced after any failed send. */
import type { Logger } from '../log.js';
import { retry } from '../retry.js';
import { withTimeout } from '../timeout.js';
import { raw, KAFKA_DEFAULTS, type KafkaClient } from './client.js';
import { KafkaError, isRecordRefusal, toKafkaError } from './errors.js';
import { Partitioners, type Producer } from './kafkajs.js';

export interface OutRecord {
  key: string;
  value: string;
  headers: Record<string, string>;
}

export interface KafkaProducer {
  /** Resolves once every record is acknowledged by all in-sync replicas (acks=all). Rejects with KafkaError. */
  send(topic: string, records: OutRecord[]): Promise<void>;
  /** Several topics in one request (acks=all). */
  sendMany(batches: ReadonlyMap<string, OutRecord[]>): Promise<void>;
  close(): Promise<void>;
}

/** Calls merged into one request at most (each is one caller's batch, itself bounded). */
const MAX_COALESCED_CALLS = 64;

/**
 * Bytes of record values, keys and headers per produce request at most. The broker refuses a
 * partition's record batch above its `message.max.bytes` (1 MiB by default) for good, and kafkajs
 * puts every record of a request that lands in one partition into one batch: coalesced calls (or
 * one caller's records under a backlog) would otherwise add up past it (measured: a delivery worker
 * working through a backlog, six partition batches of 500 events coalesced; perf/README.md, "Sixth round").
 */
export const DEFAULT_MAX_REQUEST_BYTES = 512 * 1024;

const recordBytes = (r: OutRecord): number => {
  let n = Buffer.byteLength(r.value) + Buffer.byteLength(r.key) + 16;
  for (const h in r.headers) n += h.length + Buffer.byteLength(r.headers[h]!) + 4;
  return n;
};

/**
 * (topic, records) in order, cut into requests of at most `maxBytes` (a record larger than that
 * alone): consecutive requests keep each partition's order, one request in flight at a time.
 */
export function splitRequests(
  batches: ReadonlyArray<readonly [string, readonly OutRecord[]]>,
  maxBytes: number,
): Array<Array<{ topic: string; records: OutRecord[] }>> {
  const requests: Array<Array<{ topic: string; records: OutRecord[] }>> = [];
  let current = new Map<string, OutRecord[]>();
  let bytes = 0;
  const cut = () => {
    if (current.size > 0) requests.push([...current].map(([topic, records]) => ({ topic, records })));
    current = new Map();
    bytes = 0;
  };
  for (const [topic, records] of batches) {
    for (const r of records) {
      const size = recordBytes(r);
      if (bytes > 0 && bytes + size > maxBytes) cut();
      bytes += size;
      const list = current.get(topic);
      if (list) list.push(r);
      else current.set(topic, [r]);
    }
  }
  cut();
  return requests;
}

const toMessages = (records: OutRecord[]) => records.map((r) => ({ key: r.key, value: r.value, headers: r.headers }));

/** topic -> partitions a send assigned records to (filled by the partitioner, on every attempt). */
export type Assigned = Map<string, Set<number>>;

/**
 * The partitions a send assigned records to that its answer does not acknowledge. kafkajs 2.2.4
 * keeps the brokers that answered an attempt across its retries: when a partition's leader dies
 * mid-send and the partition moves to a broker that had already answered for its own partitions,
 * the retry sends nothing for it and the send resolves as if all were written (tulios/kafkajs#1303
 * and #1798, open). Found by the chaos run's pipeline audit: 3 messages never reached the event
 * topic, their outbox rows deleted after that "successful" send (docs/chaos.md, finding 12).
 */
export function unacknowledged(
  assigned: Assigned,
  answer: ReadonlyArray<{ topicName: string; partition: number; errorCode: number }>,
): string[] {
  const acked = new Set(answer.filter((a) => a.errorCode === 0).map((a) => `${a.topicName}/${a.partition}`));
  const missing: string[] = [];
  for (const [topic, partitions] of assigned) for (const p of partitions) if (!acked.has(`${topic}/${p}`)) missing.push(`${topic}/${p}`);
  return missing;
}

/**
 * Sends are coalesced: calls made while a request is in flight (or within `lingerMs` of the first)
 * go out together as one produce request (several, one after the other, past the byte bound), each
 * caller's records in call order, and each call settles with them. The broker's cost here is
 * mostly per request, not per record.
 */
export async function createProducer(
  client: KafkaClient,
  opts: { timeoutMs: number; log: Logger; lingerMs?: number; maxRequestBytes?: number },
): Promise<KafkaProducer> {
  // What the send in flight assigned where (one send at a time: flushes are serialized).
  let assigned: Assigned = new Map();
  const recordingPartitioner = () => {
    const choose = Partitioners.DefaultPartitioner();
    return (a: Parameters<typeof choose>[0]) => {
      const partition = choose(a);
      const set = assigned.get(a.topic) ?? new Set<number>();
      set.add(partition);
      assigned.set(a.topic, set);
      return partition;
    };
  };
  // Idempotent: broker-side dedup of retried batches, and with one request in flight, per-partition order.
  const open = async (): Promise<Producer> => {
    const p = raw(client).producer({
      idempotent: true,
      maxInFlightRequests: 1,
      createPartitioner: recordingPartitioner,
      retry: { ...KAFKA_DEFAULTS.producerRetry },
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
  await retry(() => current(), {
    retries: KAFKA_DEFAULTS.producerConnectRetries,
    baseMs: 500,
    capMs: 5000,
    onRetry: (err, attempt) => opts.log.warn({ err, attempt }, 'kafka producer connect failed; retrying'),
  });
  /**
   * kafkajs rolls a partition's sequence number back when a produce request fails; if the broker
   * wrote that batch after all (it timed out on our side: a slow or frozen broker), every later
   * batch of another size is refused with OUT_OF_ORDER_SEQUENCE_NUMBER, forever. So after any
   * failed send the producer is replaced by one with a new producer id. What the old one may have
   * written is re-sent, which at-least-once delivery with consumer-side dedup already allows.
   */
  const run = async (send: (p: Producer) => Promise<unknown>, what: string): Promise<void> => {
    const pending = current();
    let p: Producer;
    try {
      p = await pending;
    } catch (err) {
      throw toKafkaError(err, what);
    }
    try {
      await withTimeout(send(p), opts.timeoutMs * 2, what);
    } catch (err) {
      if (producer === pending) {
        producer = null;
        opts.log.warn({ err }, 'kafka send failed; the producer is replaced before the next send');
        void withTimeout(p.disconnect(), opts.timeoutMs, 'kafka producer disconnect').catch(() => {});
      }
      throw toKafkaError(err, what);
    }
  };
  interface Waiting {
    batches: ReadonlyArray<readonly [string, OutRecord[]]>;
    resolve(): void;
    reject(err: unknown): void;
  }
  const waiting: Waiting[] = [];
  let flushing = false;

  const schedule = () => {
    if (flushing || waiting.length === 0) return;
    flushing = true;
    const linger = opts.lingerMs ?? 0;
    if (linger > 0) setTimeout(() => void flush(), linger);
    else setImmediate(() => void flush());
  };

  const maxRequestBytes = opts.maxRequestBytes ?? DEFAULT_MAX_REQUEST_BYTES;

  /** These calls' records, each call's in call order, in as few requests as the byte bound allows. */
  async function produce(calls: readonly Waiting[]): Promise<void> {
    for (const request of splitRequests(
      calls.flatMap((w) => w.batches),
      maxRequestBytes,
    )) {
      const topicMessages = request.map(({ topic, records }) => ({ topic, messages: toMessages(records) }));
      await run(async (p) => {
        assigned = new Map();
        const answer = await p.sendBatch({ acks: -1, timeout: opts.timeoutMs, topicMessages });
        const missing = unacknowledged(assigned, answer);
        // Retriable: the caller sends the batch again (duplicates for the partitions that were written).
        if (missing.length) throw new KafkaError(`kafka produce: no acknowledgement for ${missing.join(', ')}`, { retriable: true });
      }, 'kafka produce');
    }
  }

  async function flush(): Promise<void> {
    const taken = waiting.splice(0, MAX_COALESCED_CALLS);
    try {
      await produce(taken);
      for (const w of taken) w.resolve();
    } catch (err) {
      if (taken.length > 1 && isRecordRefusal(err)) {
        // A record the broker will never take (too large, say) fails the whole request: a caller
        // would then dead-letter records that only shared the request with it. Each call alone.
        // Only then: after a broker-level failure, one call after the other would wait out one
        // timeout each.
        for (const w of taken) await produce([w]).then(w.resolve, w.reject);
      } else for (const w of taken) w.reject(err);
    } finally {
      flushing = false;
      schedule();
    }
  }

  const enqueue = (batches: ReadonlyArray<readonly [string, OutRecord[]]>): Promise<void> => {
    const nonEmpty = batches.filter(([, records]) => records.length > 0);
    if (nonEmpty.length === 0) return Promise.resolve();
    if (closed) return Promise.reject(toKafkaError(new Error('kafka producer closed'), 'kafka produce'));
    return new Promise<void>((resolve, reject) => {
      waiting.push({ batches: nonEmpty, resolve, reject });
      schedule();
    });
  };

  return {
    send: (topic, records) => enqueue([[topic, records]]),
    sendMany: (batches) => enqueue([...batches]),
    async close() {
      closed = true;
      const p = producer;
      producer = null;
      await p?.then((x) => withTimeout(x.disconnect(), opts.timeoutMs, 'kafka producer disconnect')).catch(() => {});
    },
  };
}
