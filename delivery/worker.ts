/**
 * A delivery worker (distributed mode): a member of the delivery consumer group on the event topic.
 * Per partition batch, in order: decode, drop duplicates by (conversation_id, sequence), look the
 * recipients up for the whole batch, produce one record per node that holds any of them (several
 * partitions are handled at once), and only then mark the offsets. A record
 * that cannot be decoded, or whose hand-over keeps failing after retries with backoff, goes to the
 * dead-letter topic with the reason; if even that fails the batch is retried, never dropped.
 */
import type { Config } from '../common/config.js';
import type { Logger } from '../common/log.js';
import type { Metrics } from '../common/metrics.js';
import {
  KafkaError,
  createLagProbe,
  createKafkaClient,
  kafkaConnection,
  createProducer,
  deleteTopics,
  ensureTopics,
  runConsumer,
  type InRecord,
  type OutRecord,
} from '../common/kafka/index.js';
import type { EventRecord } from '../common/events.js';
import { nodeTopic } from '../common/node-records.js';
import { retry } from '../common/retry.js';
import { CircuitBreaker } from '../common/breaker.js';
import { watchBreaker } from '../common/breaker-watch.js';
import type { PresenceRegistry } from '../common/presence.js';
import { createDeliveryRouter } from './router.js';
import type { MembershipCache } from '../common/membership.js';
import { createRecipientRouting } from './recipient-routing.js';
import type { Delivery } from '../common/delivery.js';
import { SpanKind, noTracing, type TraceSpan, type Tracing } from '../common/tracing.js';
import { carriesTrace, traceIdOf } from '../common/trace-id.js';
import { toEventRecord } from './event-record.js';

/** One span per delivery that carries a trace, until the node records are written; they carry its context on. */
function startRouteSpans(tracing: Tracing, deliveries: ReadonlyArray<{ delivery: Delivery }>): Array<TraceSpan | null> {
  return deliveries.map(({ delivery: d }) => {
    if (!carriesTrace(d.traceId)) return null;
    const span = tracing.start('route', d.traceId, SpanKind.CONSUMER, { 'realchat.conversation_id': d.event.conversation_id });
    if (span) d.traceId = span.traceparent;
    return span;
  });
}

export const DLQ_HEADERS = { reason: 'realchat-dlq-reason', source: 'realchat-dlq-source' } as const;

export async function startDeliveryWorker(deps: {
  config: Config;
  log: Logger;
  metrics: Metrics;
  /** With both: route to the nodes that hold the recipients; otherwise broadcast. */
  presence: PresenceRegistry | null;
  membership: MembershipCache | null;
  /** A "route" span per traced event (absent: off). */
  tracing?: Tracing;
}) {
  const { config, log, metrics, presence } = deps;
  const tracing = deps.tracing ?? noTracing();
  const topics = config.kafka;
  const kafka = createKafkaClient({
    brokers: config.kafkaBrokers!,
    clientId: `realchat-delivery-${config.nodeId}`,
    log,
    ...kafkaConnection(config),
  });
  await ensureTopics(kafka, [
    { topic: topics.eventsTopic, partitions: topics.partitions },
    { topic: topics.deliveriesTopic, partitions: topics.partitions },
    { topic: topics.deadLetterTopic, partitions: topics.partitions },
  ]);
  const producer = await createProducer(kafka, { timeoutMs: topics.requestTimeoutMs, log, lingerMs: topics.producerLingerMs });

  const routing = createRecipientRouting({
    presence,
    membership: deps.membership,
    breaker: new CircuitBreaker(config.breakers.redis, undefined, watchBreaker('redis', log, metrics)),
    broadcastTopic: topics.deliveriesTopic,
    log,
    metrics,
  });
  const router = createDeliveryRouter({ log, metrics, dedupEntries: 100_000 });

  function deadLetter(record: EventRecord, source: InRecord, reason: string): OutRecord {
    metrics.deadLettered.inc({ reason: reason.split(':')[0]! });
    log.error(
      { event_id: record.eventId, trace_id: traceIdOf(record.traceId), partition: source.partition, offset: source.offset, reason },
      'event dead-lettered',
    );
    return {
      key: record.key,
      value: record.value,
      headers: {
        ...source.headers,
        [DLQ_HEADERS.reason]: reason,
        [DLQ_HEADERS.source]: `${source.topic}/${source.partition}/${source.offset}`,
      },
    };
  }

  /** One batch of one partition, in order (several partitions may be handled at once). */
  async function handleBatch(records: InRecord[]): Promise<void> {
    if (records.length === 0) return;
    const sources = new Map<EventRecord, InRecord>();
    const eventRecords = records.map((r) => {
      const e = toEventRecord(r);
      sources.set(e, r);
      return e;
    });
    const routed = router.prepare(eventRecords);
    let dead = routed.flatMap((r) =>
      r.kind === 'undecodable' ? [deadLetter(r.record, sources.get(r.record)!, `undecodable: ${r.reason}`)] : [],
    );
    const deliveries = routed.flatMap((r) => (r.kind === 'delivery' ? [r] : []));
    const observe = (stage: 'routed' | 'forwarded') => {
      const now = Date.now();
      for (const d of deliveries) metrics.pipelineSeconds.observe({ stage }, (now - Date.parse(d.delivery.event.occurred_at)) / 1000);
    };
    observe('routed');
    const spans = tracing.enabled ? startRouteSpans(tracing, deliveries) : null;
    // Every batch of a source partition goes out under one key: the node topics keep their order.
    const key = `${records[0]!.topic}/${records[0]!.partition}`;
    try {
      await retry(
        async () => {
          const out = await routing(deliveries, key);
          await producer.sendMany(out);
          for (const list of out.values()) metrics.deliveriesForwarded.inc(list.length);
          observe('forwarded');
        },
        {
          retries: config.limits.deliveryMaxRetries,
          baseMs: 200,
          capMs: 5000,
          // A record the broker will never take (too large, invalid) goes to the dead letters at once.
          isRetriable: (err) => !(err instanceof KafkaError) || err.retriable,
          onRetry: (err, attempt, delay) => log.warn({ err, attempt, retry_in_ms: delay }, 'delivery hand-over failed; retrying'),
        },
      );
      router.commit(routed);
      for (const span of spans ?? []) span?.end();
    } catch (err) {
      for (const span of spans ?? []) span?.end(err);
      router.forgetDedup();
      dead = records.map((r) => deadLetter(toEventRecord(r), r, `delivery_failed: ${(err as Error).message}`));
    }
    // Throws if the dead-letter topic cannot be written either: the batch is retried, not lost.
    await producer.send(topics.deadLetterTopic, dead);
  }

  const consumer = await runConsumer(kafka, {
    groupId: topics.deliveryGroupId,
    topic: topics.eventsTopic,
    fromBeginning: true,
    log,
    handleBatch,
    partitionsConsumedConcurrently: config.limits.deliveryConcurrency,
    // A partition this worker held before may have had members removed by another worker meanwhile.
    onGroupJoin: () => deps.membership?.clear(),
    fetch: { minBytes: topics.fetchMinBytes, maxWaitMs: topics.fetchMaxWaitMs },
    commitIntervalMs: topics.commitIntervalMs,
  });

  const lagProbe = createLagProbe(kafka);
  const lagTimer = setInterval(() => {
    lagProbe.lag(topics.deliveryGroupId, topics.eventsTopic).then(
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
    /** Readiness: the group member consumes (joined, not crashed). */
    consumerStatus: () => consumer.status ?? { running: true, detail: 'unknown' },
    async stop() {
      clearInterval(janitor);
      clearInterval(lagTimer);
      await lagProbe.close();
      await consumer.stop();
      await producer.close();
    },
  };
}
