/**
 * The only module of the application that imports kafkajs (unmaintained upstream; `npm run lint`
 * enforces it). The rest of common/kafka/ builds on these names; everything outside sees only
 * common/kafka/index.ts, so the client can be swapped without touching the roles.
 */
import { createRequire } from 'node:module';
import kafkajs from 'kafkajs';
import { retry } from '../retry.js';

export type { Admin, Consumer, IHeaders, Kafka, KafkaMessage, Producer } from 'kafkajs';
export const { Kafka: KafkaJs, KafkaJSError, Partitioners, logLevel } = kafkajs;

/** The part of kafkajs' per-connection request queue (src/network/requestQueue) the fix touches. */
interface RequestQueueInternals {
  pending: unknown[];
  throttledUntil: number;
  throttleCheckTimeoutId: ReturnType<typeof setTimeout> | null;
  checkPendingRequests(): void;
  scheduleCheckPendingRequests(): void;
}

/** kafkajs' own retry interval for a queue that has requests waiting (CHECK_PENDING_REQUESTS_INTERVAL). */
const CHECK_PENDING_MS = 10;

/**
 * kafkajs 2.2.4 re-arms a timer on every broker connection forever once any request completed,
 * with a negative delay when nothing is throttled (tulios/kafkajs#1556, fix #1667 never released):
 * each connection wakes the event loop about every millisecond. Measured on an idle gateway with
 * about ten broker connections: 1,400-1,600 epoll wakeups/s and 5-8 % of a core per process doing
 * nothing. The timer is only needed while requests wait (throttled, or at the in-flight limit);
 * an in-flight request that completes checks the queue itself, and `push` schedules the check
 * again when a new request has to wait.
 */
export function patchRequestQueue(RequestQueue: { prototype: RequestQueueInternals }): void {
  RequestQueue.prototype.scheduleCheckPendingRequests = function (this: RequestQueueInternals) {
    if (this.throttleCheckTimeoutId || this.pending.length === 0) return;
    const untilThrottleEnds = this.throttledUntil - Date.now();
    this.throttleCheckTimeoutId = setTimeout(
      () => {
        this.throttleCheckTimeoutId = null;
        this.checkPendingRequests();
      },
      untilThrottleEnds > 0 ? untilThrottleEnds : CHECK_PENDING_MS,
    );
  };
}

/** The class kafkajs itself uses (same module instance through require's cache). */
export function kafkajsRequestQueue(): { prototype: RequestQueueInternals } {
  return createRequire(import.meta.url)('kafkajs/src/network/requestQueue/index.js') as { prototype: RequestQueueInternals };
}

/** The part of kafkajs' consumer group (src/consumer/consumerGroup) the second fix touches. */
interface ConsumerGroupInternals {
  groupId: string;
  coordinator: unknown;
  cluster: { refreshMetadata(): Promise<void>; findGroupCoordinator(o: { groupId: string }): Promise<unknown> };
  recoverFromFetch(e: unknown): Promise<void>;
  heartbeat(o: { interval: number }): Promise<void>;
  leave(): Promise<void>;
}

/** Pause between fetch attempts at a partition leader that refuses connections. */
export const UNREACHABLE_LEADER_BACKOFF_MS = 250;

/**
 * A fetch from a broker that died fails with KafkaJSConnectionError, which kafkajs 2.2.4's
 * `recoverFromFetch` rethrows: the error ends every fetcher of the consumer (all brokers, not only
 * the dead one), and the runner retries with the metadata it had, which still names the dead
 * broker, until its retries run out and the consumer crash-restarts (tulios/kafkajs#1439; the
 * broker pool "bails on connection errors" expecting "a higher level" to refresh metadata, which
 * the consumer never does). Measured in a chaos run: a gateway's consumer stalled 25 s after a
 * controller kill, plus the 5 s restart delay. Now the fetcher of the unreachable broker alone
 * waits a moment and refreshes metadata; once the controller has moved its partitions, the new
 * node list rebuilds the fetchers. Fetchers of live brokers go on meanwhile. If the refresh
 * itself fails (no broker reachable), that error takes kafkajs' crash-and-restart path as before.
 */
export function patchConsumerFetchRecovery(ConsumerGroup: { prototype: ConsumerGroupInternals }): void {
  const original = ConsumerGroup.prototype.recoverFromFetch;
  ConsumerGroup.prototype.recoverFromFetch = async function (this: ConsumerGroupInternals, e: unknown) {
    const name = (e as { name?: unknown } | null)?.name;
    // Behind a proxy or a load balancer a dead broker accepts the connection and then closes it:
    // kafkajs only drops that connection and fetches from the same dead leader again, at once and
    // until the broker is back (a chaos run's gateway behind proxies: 26 s, the broker's restart).
    if (name === 'KafkaJSConnectionClosedError') await original.call(this, e);
    else if (name !== 'KafkaJSConnectionError') return original.call(this, e);
    await new Promise((resolve) => setTimeout(resolve, UNREACHABLE_LEADER_BACKOFF_MS));
    await this.cluster.refreshMetadata();
  };
}

/** The part of kafkajs' offset manager (src/consumer/offsetManager) the third fix touches. */
interface OffsetManagerInternals {
  groupId: string;
  coordinator: { isConnected(): boolean; nodeId?: number };
  cluster: {
    refreshMetadata(): Promise<void>;
    findBroker(b: { nodeId?: number }): Promise<OffsetManagerInternals['coordinator']>;
    findGroupCoordinator(o: { groupId: string }): Promise<OffsetManagerInternals['coordinator']>;
  };
  getCoordinator(): Promise<OffsetManagerInternals['coordinator']>;
}

/** The broker is gone: refused, closed by whatever accepted the connection for it, or not in the metadata. */
const lostBroker = (e: unknown) => {
  const name = (e as { name?: unknown } | null)?.name;
  return name === 'KafkaJSConnectionError' || name === 'KafkaJSConnectionClosedError' || name === 'KafkaJSBrokerNotFound';
};

/** Fresh metadata, then the group's coordinator as the brokers name it now (what a join does). */
async function findCoordinatorAgain<C>(self: {
  groupId: string;
  coordinator: C;
  cluster: { refreshMetadata(): Promise<void>; findGroupCoordinator(o: { groupId: string }): Promise<C> };
}): Promise<C> {
  await self.cluster.refreshMetadata();
  self.coordinator = await self.cluster.findGroupCoordinator({ groupId: self.groupId });
  return self.coordinator;
}

/**
 * kafkajs' offset manager keeps the group coordinator it was built with: when that broker dies,
 * every offset commit looks it up by node id again (refused, or gone from the metadata), the batch
 * is retried against it until the consumer's retries run out, and only the crash-restart finds the
 * new coordinator. Measured in a chaos run: delivery workers crashed 40 s after a controller kill
 * ("Broker 1 not found in the cached metadata" from OffsetManager.getCoordinator), with deliveries
 * held up 25-30 s. Now a coordinator that is gone is looked up again by the group, which is what
 * the consumer does when it joins.
 */
export function patchOffsetCoordinator(OffsetManager: { prototype: OffsetManagerInternals }): void {
  const original = OffsetManager.prototype.getCoordinator;
  OffsetManager.prototype.getCoordinator = async function (this: OffsetManagerInternals) {
    try {
      return await original.call(this);
    } catch (e) {
      if (!lostBroker(e)) throw e;
      return findCoordinatorAgain(this);
    }
  };
}

/**
 * The same for the group's heartbeats, which go to the coordinator found at the last join: a
 * heartbeat that cannot reach it looks the coordinator up again and is sent once more, so the
 * member stays in its group (the new coordinator loads the group from __consumer_offsets) instead
 * of the consumer retrying the dead broker until it crash-restarts and rejoins.
 */
export function patchHeartbeatCoordinator(ConsumerGroup: { prototype: ConsumerGroupInternals }): void {
  const original = ConsumerGroup.prototype.heartbeat;
  ConsumerGroup.prototype.heartbeat = async function (this: ConsumerGroupInternals, o: { interval: number }) {
    try {
      return await original.call(this, o);
    } catch (e) {
      if (!lostBroker(e)) throw e;
      await findCoordinatorAgain(this);
      return original.call(this, o);
    }
  };
}

/** What a group's coordinator answers while it moves to another broker: ask again in a moment. */
const COORDINATOR_MOVING = new Set(['GROUP_LOAD_IN_PROGRESS', 'GROUP_COORDINATOR_NOT_AVAILABLE', 'NOT_COORDINATOR_FOR_GROUP']);

/** A member's leave: attempts and the ceiling of the jittered pause between them (at most ~2 s added to a stop or a crash). */
export const LEAVE_RETRY = { attempts: 8, pauseMs: 250 };

/**
 * kafkajs asks its coordinator once to let a stopping member leave, and ignores a refusal. A
 * consumer that crashes because its coordinator's broker died asks the new coordinator while it
 * is still loading the group ("The coordinator is loading"), so the old member stays in the group
 * and the restarted consumer's JoinGroup waits out that member's session: in the fresh-clone
 * chaos run at `444f0f2`, gateway-3's leave was refused at 21:12:51.26, its JoinGroup sent at
 * 52.49 was answered at 57.29, and 4.8 of the isolated controller-kill's 12.9 s were that wait
 * (the new coordinator answered an OffsetFetch 0.25 s after refusing the leave). The leave is
 * now asked again, of the coordinator found anew, while the answer says the coordinator is moving
 * or its broker is gone.
 */
export function patchLeaveRetry(ConsumerGroup: { prototype: ConsumerGroupInternals }): void {
  const original = ConsumerGroup.prototype.leave;
  ConsumerGroup.prototype.leave = function (this: ConsumerGroupInternals) {
    return retry(
      async (attempt) => {
        if (attempt > 0) await findCoordinatorAgain(this).catch(() => {});
        return original.call(this);
      },
      {
        retries: LEAVE_RETRY.attempts - 1,
        baseMs: LEAVE_RETRY.pauseMs,
        capMs: LEAVE_RETRY.pauseMs,
        isRetriable: (e) => COORDINATOR_MOVING.has(String((e as { type?: unknown } | null)?.type)) || lostBroker(e),
      },
    );
  };
}

export function kafkajsOffsetManager(): { prototype: OffsetManagerInternals } {
  return createRequire(import.meta.url)('kafkajs/src/consumer/offsetManager/index.js') as { prototype: OffsetManagerInternals };
}

export function kafkajsConsumerGroup(): { prototype: ConsumerGroupInternals } {
  return createRequire(import.meta.url)('kafkajs/src/consumer/consumerGroup.js') as { prototype: ConsumerGroupInternals };
}

interface SeedBroker {
  connect(...args: unknown[]): Promise<unknown>;
  metadata(...args: unknown[]): Promise<unknown>;
}
interface BrokerPoolInternals {
  seedBroker: SeedBroker | null;
  createSeedBroker(): Promise<void>;
}

/**
 * kafkajs tries the next seed broker when connecting to one fails with `KafkaJSConnectionError`
 * only: a seed behind a proxy or a load balancer that accepts and then closes the connection (its
 * broker is dead) fails with `KafkaJSConnectionClosedError`, and kafkajs retries that same seed
 * until the broker returns. A consumer that crashed then stayed down until then (chaos finding 20:
 * gateway-3's node consumer, about 8 s after the controller it seeded from was killed). The seed's
 * closed connection now counts as a connection error, so the next seed is tried.
 *
 * A seed that connected before has its API versions already: reconnecting it sends nothing, the
 * proxy's accept counts as success, and the first request (the metadata a restarted consumer asks
 * for at once) is what fails. kafkajs keeps that seed, so every restart, 200 ms apart, went to
 * the same dead broker until it came back (the rest of finding 20, seen in gateway-3's debug log:
 * 38 restarts in 8.5 s, each one a Metadata request to the dead seed's proxy, while the process's
 * other clients had rotated). A seed whose metadata request fails on its connection is replaced
 * by the next one before the error goes on, so the next attempt asks another broker.
 */
export function patchSeedBrokerRotation(BrokerPool: { prototype: BrokerPoolInternals }): void {
  const { KafkaJSConnectionError } = createRequire(import.meta.url)('kafkajs/src/errors.js') as {
    KafkaJSConnectionError: new (e: unknown, o: { broker?: string }) => Error;
  };
  const original = BrokerPool.prototype.createSeedBroker;
  BrokerPool.prototype.createSeedBroker = async function (this: BrokerPoolInternals) {
    await original.call(this);
    const broker = this.seedBroker;
    if (!broker) return;
    const connect = broker.connect.bind(broker);
    broker.connect = async (...args: unknown[]) => {
      try {
        return await connect(...args);
      } catch (e) {
        const err = e as { name?: string; message?: string; broker?: string };
        if (err?.name !== 'KafkaJSConnectionClosedError') throw e;
        throw new KafkaJSConnectionError(err.message ?? 'Closed connection', { broker: err.broker });
      }
    };
    const metadata = broker.metadata.bind(broker);
    broker.metadata = async (...args: unknown[]) => {
      try {
        return await metadata(...args);
      } catch (e) {
        if (lostBroker(e) && this.seedBroker === broker) await this.createSeedBroker().catch(() => {});
        throw e;
      }
    };
  };
}

export function kafkajsBrokerPool(): { prototype: BrokerPoolInternals } {
  return createRequire(import.meta.url)('kafkajs/src/cluster/brokerPool.js') as { prototype: BrokerPoolInternals };
}

/** The part of kafkajs' consumer runner (src/consumer/runner) the sixth fix touches. */
interface RunnerInternals {
  autoCommit: boolean;
  running: boolean;
  consumerGroup: { commitOffsets(): Promise<void>; commitOffsetsIfNecessary(): Promise<void> };
  logger: { warn(message: string, extra?: object): void };
  /** One batch per partition the broker answered for, empty ones included. */
  fetch(nodeId: number): Promise<unknown[]>;
  processEachBatch(batch: unknown): Promise<void>;
  autoCommitOffsets(): Promise<void> | undefined;
  /** Part of `stop`: resolves once no batch is being handled; the member leaves its group next. */
  waitForConsumer(): Promise<void>;
  /** Batches handled whose post-batch commit has not been asked for yet (ours). */
  realchatBatchesEnded?: number;
}

/**
 * kafkajs 2.2.4 commits offsets after every batch, whatever `autoCommitInterval` says (the runner
 * calls `autoCommitOffsets`, not `autoCommitOffsetsIfNecessary`), and the fetch loop waits for that
 * commit before it fetches again: a replicated write to `__consumer_offsets` per batch, in series
 * with every hop. Seen in a gateway's Kafka debug log: an OffsetCommit of 10-70 ms between almost
 * every two fetches. After a batch the commit now follows `autoCommitInterval`, and a fetch that
 * found nothing commits what is left once the interval has passed (an idle member's lag goes to 0);
 * the other commits (a batch that failed, a rebalance seen by the heartbeat) stay unconditional, so
 * progress is handed over as before. A member that stops commits everything it handled once its
 * last batch is done, before it leaves the group (a drain hands its partitions over with nothing
 * to read again); a crash leaves at most one interval to be read again by the next owner:
 * at-least-once, deduplicated by sequence downstream.
 */
export function patchPostBatchCommit(Runner: { prototype: RunnerInternals }): void {
  const fetch = Runner.prototype.fetch;
  const processEachBatch = Runner.prototype.processEachBatch;
  const autoCommitOffsets = Runner.prototype.autoCommitOffsets;
  const waitForConsumer = Runner.prototype.waitForConsumer;
  Runner.prototype.waitForConsumer = async function (this: RunnerInternals) {
    await waitForConsumer.call(this);
    if (!this.autoCommit) return;
    // kafkajs' stop swallows any error of its steps: a failed commit must not also skip the leave.
    await this.consumerGroup.commitOffsets().catch((e: unknown) => this.logger.warn('Could not commit on stop', { error: String(e) }));
  };
  Runner.prototype.fetch = async function (this: RunnerInternals, nodeId: number) {
    const batches = await fetch.call(this, nodeId);
    // A fetch answers with one batch per partition, empty ones included.
    const idle = batches.every((b) => (b as { isEmpty?: () => boolean }).isEmpty?.() === true);
    if (idle && this.autoCommit && this.running) await this.consumerGroup.commitOffsetsIfNecessary();
    return batches;
  };
  Runner.prototype.processEachBatch = async function (this: RunnerInternals, batch: unknown) {
    await processEachBatch.call(this, batch);
    // A counter, not a flag: batches of several partitions can be handled at once.
    this.realchatBatchesEnded = (this.realchatBatchesEnded ?? 0) + 1;
  };
  Runner.prototype.autoCommitOffsets = function (this: RunnerInternals) {
    if ((this.realchatBatchesEnded ?? 0) > 0) {
      this.realchatBatchesEnded! -= 1;
      return this.autoCommit ? this.consumerGroup.commitOffsetsIfNecessary() : undefined;
    }
    return autoCommitOffsets.call(this);
  };
}

export function kafkajsRunner(): { prototype: RunnerInternals } {
  return createRequire(import.meta.url)('kafkajs/src/consumer/runner.js') as { prototype: RunnerInternals };
}

patchRequestQueue(kafkajsRequestQueue());
patchSeedBrokerRotation(kafkajsBrokerPool());
patchConsumerFetchRecovery(kafkajsConsumerGroup());
patchOffsetCoordinator(kafkajsOffsetManager());
patchHeartbeatCoordinator(kafkajsConsumerGroup());
patchLeaveRetry(kafkajsConsumerGroup());
patchPostBatchCommit(kafkajsRunner());
