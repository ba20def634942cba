/**
 * A delivery worker (distributed mode): a member of the delivery consumer group on the event topic.
 * Per partition, in order: decode, drop duplicates by (conversation_id, sequence), produce one
 * delivery record per event to the gateway delivery topic, and only then mark the offsets. A record
 * that cannot be decoded, or whose hand-over keeps failing after retries with backoff, goes to the
 * dead-letter topic with the reason; if even that fails the batch is retried, never dropped.
 */
import type { Config } from '../common/config.js';
import type { Logger } from '../common/log.js';
import type { Metrics } from '../common/metrics.js';
import {
  KafkaError,
  consumerLag,
  createKafkaClient,
  createProducer,
  deleteTopics,
  ensureTopics,
  runConsumer,
  type InRecord,
  type OutRecord,
} from '../common/kafka/index.js';
import { EVENT_HEADERS, nodeTopic, type EventRecord } from '../common/events.js';
import { retry } from '../common/retry.js';
import { CircuitBreaker } from '../common/breaker.js';
import type { PresenceRegistry } from '../common/presence.js';
import { createDeliveryRouter } from './router.js';
import type { MembershipCache } from '../common/membership.js';
import { createRecipientRouting, type Outgoing } from './recipient-routing.js';

export const DLQ_HEADERS = { reason: 'realchat-dlq-reason', source: 'realchat-dlq-source' } as const;

function toEventRecord(r: InRecord): EventRecord {
  return {
    key: r.key ?? '',
    value: r.value ?? '',
    type: r.headers[EVENT_HEADERS.type] ?? '',
    eventId: r.headers[EVENT_HEADERS.eventId] ?? r.headers.id ?? '',
    traceId: r.headers[EVENT_HEADERS.traceId] ?? null,
  };
}

export async function startDeliveryWorker(deps: {
  config: Config;
  log: Logger;
  metrics: Metrics;
  /** With both: route to the nodes that hold the recipients; otherwise broadcast. */
  presence: PresenceRegistry | null;
  membership: MembershipCache | null;
}) {
  const { config, log, metrics, presence } = deps;
  const topics = config.kafka;
  const kafka = createKafkaClient({
    brokers: config.kafkaBrokers!,
    clientId: `realchat-delivery-${config.nodeId}`,
    log,
    requestTimeoutMs: topics.requestTimeoutMs,
  });
  await ensureTopics(kafka, [
    { topic: topics.eventsTopic, partitions: topics.partitions },
    { topic: topics.deliveriesTopic, partitions: topics.partitions },
    { topic: topics.deadLetterTopic, partitions: topics.partitions },
  ]);
  const producer = await createProducer(kafka, { timeoutMs: topics.requestTimeoutMs, log });

  const routing = createRecipientRouting({
    presence,
    membership: deps.membership,
    breaker: new CircuitBreaker(config.presence.breakerOpenMs),
    broadcastTopic: topics.deliveriesTopic,
    log,
    metrics,
  });
  let pending: Outgoing = new Map();
  let deadLetters: OutRecord[] = [];
  const deadLetter = (record: EventRecord, source: InRecord, reason: string) => {
    metrics.deadLettered.inc({ reason: reason.split(':')[0]! });
    log.error(
      { event_id: record.eventId, trace_id: record.traceId, partition: source.partition, offset: source.offset, reason },
      'event dead-lettered',
    );
    deadLetters.push({
      key: record.key,
      value: record.value,
      headers: {
        ...source.headers,
        [DLQ_HEADERS.reason]: reason,
        [DLQ_HEADERS.source]: `${source.topic}/${source.partition}/${source.offset}`,
      },
    });
  };

  let current: InRecord | null = null;
  const router = createDeliveryRouter({
    log,
    metrics,
    dedupEntries: 100_000,
    sink: {
      async deliver(d, source) {
        if (d.event.type === 'conversation.members_added') deps.membership?.add(d.event.conversation_id, d.event.user_ids);
        await routing(d, source, pending);
      },
    },
    async onUndecodable(record, reason) {
      deadLetter(record, current!, `undecodable: ${reason}`);
    },
  });

  async function handleBatch(records: InRecord[]): Promise<void> {
    pending = new Map();
    deadLetters = [];
    for (const r of records) {
      current = r;
      await router.route(toEventRecord(r));
    }
    try {
      await retry(() => producer.sendMany(pending), {
        retries: config.limits.deliveryMaxRetries,
        baseMs: 200,
        capMs: 5000,
        // A record the broker will never take (too large, invalid) goes to the dead letters at once.
        isRetriable: (err) => !(err instanceof KafkaError) || err.retriable,
        onRetry: (err, attempt, delay) => {
          router.forgetDedup();
          log.warn({ err, attempt, retry_in_ms: delay }, 'delivery hand-over failed; retrying');
        },
      });
      for (const list of pending.values()) metrics.deliveriesForwarded.inc(list.length);
    } catch (err) {
      router.forgetDedup();
      deadLetters = [];
      for (const r of records) deadLetter(toEventRecord(r), r, `delivery_failed: ${(err as Error).message}`);
    }
    // Throws if the dead-letter topic cannot be written either: the batch is retried, not lost.
    await producer.send(topics.deadLetterTopic, deadLetters);
  }

  const consumer = await runConsumer(kafka, {
    groupId: topics.deliveryGroupId,
    topic: topics.eventsTopic,
    fromBeginning: true,
    log,
    handleBatch,
  });

  const lagTimer = setInterval(() => {
    consumerLag(kafka, topics.deliveryGroupId, topics.eventsTopic).then(
      (lags) => {
        for (const l of lags)
          metrics.consumerLag.set({ group: topics.deliveryGroupId, topic: l.topic, partition: String(l.partition) }, l.lag);
      },
      (err) => log.debug({ err }, 'lag poll failed'),
    );
  }, 2000);
  lagTimer.unref();

  // Node topics of nodes dead for a while are removed (a restarted node with the same id recreates its own).
  const janitor = setInterval(() => {
    if (!presence) return;
    presence
      .deadNodes(config.presence.deadNodeTopicTtlMs)
      .then(async (dead) => {
        if (dead.length === 0) return;
        await deleteTopics(kafka, dead.map(nodeTopic));
        for (const n of dead) await presence.forgetNode(n);
        log.info({ nodes: dead }, 'deleted topics of dead gateway nodes');
      })
      .catch((err) => log.debug({ err }, 'node topic cleanup failed'));
  }, 60_000);
  janitor.unref();

  return {
    async stop() {
      clearInterval(janitor);
      clearInterval(lagTimer);
      await consumer.stop();
      await producer.close();
    },
  };
}
