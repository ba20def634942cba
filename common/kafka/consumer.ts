/**
 * A consumer group member that hands records to the handler in partition order and marks offsets
 * only after the handler succeeded. `handleBatch` receives up to `chunk` records of one partition;
 * a handler error stops the batch (what is done stays committed) and kafkajs retries from the first
 * unfinished record, so processing is at-least-once.
 */
import type { Logger } from '../log.js';
import { backoffMs } from '../backoff.js';
import { retry } from '../retry.js';
import { withTimeout } from '../timeout.js';
import { uncommittedPartitionEnds } from './admin.js';
import { raw, KAFKA_DEFAULTS, type KafkaClient } from './client.js';
import type { Consumer, IHeaders, KafkaMessage } from './kafkajs.js';

export interface InRecord {
  topic: string;
  partition: number;
  offset: string;
  key: string | null;
  value: string | null;
  headers: Record<string, string>;
}

/** Whether the member consumes now (readiness): joined and not crashed, or why not. */
export interface ConsumerStatus {
  running: boolean;
  detail: string;
}

/** What a role may do with a running member (pause under load, stop on drain). */
export interface RunningConsumer {
  readonly paused: boolean;
  readonly status?: ConsumerStatus;
  pause(): void;
  resume(): void;
  stop(): Promise<void>;
}

export interface GroupConsumerOptions {
  groupId: string;
  topic: string | string[];
  fromBeginning: boolean;
  log: Logger;
  handleBatch(records: InRecord[]): Promise<void>;
  chunk?: number;
  sessionTimeoutMs?: number;
  /** Partitions handled at once (each still in order); handleBatch must then be re-entrant. */
  partitionsConsumedConcurrently?: number;
  /**
   * Fetch batching: the broker answers once `minBytes` have arrived or after `maxWaitMs`. Larger
   * values mean fewer, larger fetches (the broker's cost is per request) at up to maxWaitMs more latency.
   */
  fetch?: { minBytes: number; maxWaitMs: number };
  /**
   * Wait this long for the first partition assignment. `required`: fail instead of going on
   * without one (a gateway must not serve clients before it can receive their deliveries:
   * reading from the latest offset, it would skip what is produced before it joins).
   */
  join?: { timeoutMs: number; required: boolean };
  /** How often progress is committed after batches (default KAFKA_DEFAULTS.consumer.autoCommitIntervalMs; 0: after every batch). */
  commitIntervalMs?: number;
  /** Each time the member (re)joins the group: its partitions may have changed. */
  onGroupJoin?(): void;
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
  return {
    topic,
    partition,
    offset: m.offset,
    key: m.key ? m.key.toString() : null,
    value: m.value ? m.value.toString() : null,
    headers: decodeHeaders(m.headers),
  };
}

export class GroupConsumer implements RunningConsumer {
  private readonly topics: string[];
  private member: Consumer | null = null;
  private pausedFlag = false;
  private stopped = false;
  /** Rebuilds since the last successful join (drives the backoff). */
  private rebuilds = 0;
  private rebuildTimer: NodeJS.Timeout | null = null;
  private firstJoin: () => void = () => {};
  private readonly joined = new Promise<void>((resolve) => (this.firstJoin = resolve));
  private state: ConsumerStatus = { running: false, detail: 'joining the group' };

  constructor(
    private readonly client: KafkaClient,
    private readonly opts: GroupConsumerOptions,
  ) {
    this.topics = Array.isArray(opts.topic) ? opts.topic : [opts.topic];
  }

  /** Joins the group (bounded wait for the first assignment, see `join`). */
  async start(): Promise<this> {
    this.member = await this.connect();
    const join = this.opts.join ?? { timeoutMs: KAFKA_DEFAULTS.consumer.joinTimeoutMs, required: false };
    try {
      await withTimeout(this.joined, join.timeoutMs, 'kafka group join');
    } catch (err) {
      if (join.required) {
        await this.stop().catch(() => {});
        throw err;
      }
      this.opts.log.warn({ err, group: this.opts.groupId }, 'no group assignment yet');
      return this;
    }
    if (!this.opts.fromBeginning) await this.commitStartingPositions();
    return this;
  }

  /**
   * kafkajs resolves "the latest offset" in memory only, and commits a partition's position only
   * after a record there was handled. A member restarted before that (kafkajs' own restart after a
   * broker outage, or a rebuild) resolved "latest" again and skipped what was produced while it was
   * down: in CI a gateway's consumer came back after the broker restart and never saw a
   * conversation's next 46 messages, already written to its delivery topic. The position each
   * partition began at is committed before start() returns, so every later join resumes from there.
   * Done once, at the first join: the one member of its group owns every partition from then on
   * (partitions added to a topic later are not covered until they hold a record). A position
   * committed ahead of what the member has read only skips records produced before start()
   * returned, when the role had nothing to hand them to yet.
   */
  private async commitStartingPositions(): Promise<void> {
    const group = this.opts.groupId;
    try {
      await retry(
        async () => {
          const pins = await uncommittedPartitionEnds(this.client, group, this.topics);
          if (pins.length > 0 && this.member)
            await withTimeout(this.member.commitOffsets(pins), KAFKA_DEFAULTS.adminCallTimeoutMs, 'kafka commit of starting positions');
        },
        { retries: 3, baseMs: 200, capMs: 2000 },
      );
    } catch (err) {
      this.opts.log.warn(
        { err, group },
        'starting positions not committed: restarted before it handles a record on a partition, this member may skip what was produced there meanwhile',
      );
    }
  }

  get paused(): boolean {
    return this.pausedFlag;
  }

  get status(): ConsumerStatus {
    return this.state;
  }

  pause(): void {
    if (!this.pausedFlag) this.member?.pause(this.topics.map((topic) => ({ topic })));
    this.pausedFlag = true;
  }

  resume(): void {
    if (this.pausedFlag) this.member?.resume(this.topics.map((topic) => ({ topic })));
    this.pausedFlag = false;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.state = { running: false, detail: 'stopped' };
    if (this.rebuildTimer) clearTimeout(this.rebuildTimer);
    // Bounded: a drain must not hang on a broker that stopped answering (the group then expires the member).
    if (this.member)
      await withTimeout(this.member.disconnect(), KAFKA_DEFAULTS.disconnectTimeoutMs, 'kafka consumer disconnect').catch((err: unknown) =>
        this.opts.log.warn({ err, group: this.opts.groupId }, 'kafka consumer did not disconnect in time'),
      );
  }

  private async connect(): Promise<Consumer> {
    const c = KAFKA_DEFAULTS.consumer;
    const chunk = this.opts.chunk ?? c.chunk;
    const consumer: Consumer = raw(this.client).consumer({
      groupId: this.opts.groupId,
      sessionTimeout: this.opts.sessionTimeoutMs ?? c.sessionTimeoutMs,
      heartbeatInterval: c.heartbeatIntervalMs,
      rebalanceTimeout: c.rebalanceTimeoutMs,
      maxBytesPerPartition: c.maxBytesPerPartition,
      maxWaitTimeInMs: this.opts.fetch?.maxWaitMs ?? c.maxWaitTimeMs,
      minBytes: this.opts.fetch?.minBytes ?? c.minBytes,
      retry: { ...KAFKA_DEFAULTS.clientRetry, restartOnFailure: async () => true },
    });
    consumer.on(consumer.events.GROUP_JOIN, () => {
      this.rebuilds = 0;
      this.state = { running: true, detail: 'member of the group' };
      this.firstJoin();
      this.opts.onGroupJoin?.();
    });
    consumer.on(consumer.events.CRASH, (e) => {
      this.opts.log.error({ err: e.payload.error, group: this.opts.groupId, restart: e.payload.restart }, 'kafka consumer crashed');
      this.state = { running: false, detail: `crashed (${e.payload.restart ? 'restarting' : 'rebuilding'}): ${e.payload.error?.message}` };
      if (!e.payload.restart) this.scheduleRebuild(consumer);
    });
    try {
      await consumer.connect();
      await consumer.subscribe({ topics: this.topics, fromBeginning: this.opts.fromBeginning });
      await consumer.run({
        autoCommit: true,
        autoCommitInterval: this.opts.commitIntervalMs ?? c.autoCommitIntervalMs,
        partitionsConsumedConcurrently: this.opts.partitionsConsumedConcurrently ?? 1,
        eachBatchAutoResolve: false,
        eachBatch: async ({ batch, resolveOffset, heartbeat, isRunning, isStale }) => {
          for (let i = 0; i < batch.messages.length; i += chunk) {
            if (!isRunning() || isStale()) break;
            const slice = batch.messages.slice(i, i + chunk);
            await this.opts.handleBatch(slice.map((m) => toInRecord(batch.topic, batch.partition, m)));
            resolveOffset(slice[slice.length - 1]!.offset);
            await heartbeat();
          }
        },
      });
    } catch (err) {
      await consumer.disconnect().catch(() => {});
      throw err;
    }
    if (this.pausedFlag) consumer.pause(this.topics.map((topic) => ({ topic })));
    return consumer;
  }

  // kafkajs restarts a member itself after retriable errors only; after any other crash (a
  // non-retriable broker answer surfacing from the handler, for one) the member would stay
  // stopped while the process looks healthy. Rebuild it with backoff.
  private scheduleRebuild(dead: Consumer): void {
    if (this.stopped || dead !== this.member || this.rebuildTimer) return;
    const delay = backoffMs(this.rebuilds++, 500, 10_000);
    this.opts.log.warn({ group: this.opts.groupId, delay_ms: delay }, 'rebuilding the kafka consumer');
    this.rebuildTimer = setTimeout(() => {
      this.rebuildTimer = null;
      void (async () => {
        await dead.disconnect().catch(() => {});
        if (this.stopped) return;
        try {
          this.member = await this.connect();
        } catch (err) {
          this.opts.log.error({ err, group: this.opts.groupId }, 'kafka consumer rebuild failed; retrying');
          this.scheduleRebuild(dead);
        }
      })();
    }, delay);
  }
}

/** Starts a group member; resolves once it joined (see GroupConsumerOptions.join). */
export function runConsumer(client: KafkaClient, opts: GroupConsumerOptions): Promise<RunningConsumer> {
  return new GroupConsumer(client, opts).start();
}
