/**
 * Relay and delivery in the gateway's own process (the embedded default and single-node
 * PostgreSQL): outbox -> in-memory bus -> delivery router -> this node's inbox. The same relay and
 * router as the distributed roles; only the transport differs.
 */
import type { Config } from '../common/config.js';
import type { Sql } from '../common/db.js';
import { createInMemoryBus } from '../common/bus.js';
import type { Logger } from '../common/log.js';
import type { Metrics } from '../common/metrics.js';
import { createOutboxRelay } from '../relay/outbox-relay.js';
import { createDeliveryRouter } from '../delivery/router.js';
import { startWebhookDispatcher } from '../delivery/webhooks/dispatcher.js';
import type { PipelineFactory } from '../gateway/pipeline.js';
import type { Delivery } from '../common/delivery.js';
import { SpanKind, noTracing, type Tracing } from '../common/tracing.js';
import { carriesTrace, traceIdOf } from '../common/trace-id.js';
import { createNotifier, ingestOrDrop } from '../delivery/notifier/notifier.js';
import { createPushMetrics } from '../delivery/notifier/metrics.js';

export function inProcessPipeline(deps: {
  config: Config;
  sql: Sql;
  log: Logger;
  metrics: Metrics;
  tracing?: Tracing;
  /** Web Push keys in use (configured or the embedded default's); null/absent: no notifier. */
  vapid?: { publicKey: string; privateKey: string } | null;
}): PipelineFactory {
  const { config, sql, log, metrics } = deps;
  const tracing = deps.tracing ?? noTracing();
  return async ({ inbox, users }) => {
    const bus = createInMemoryBus();
    const router = createDeliveryRouter({ log, metrics, dedupEntries: 100_000 });
    const sink = {
      prepare: (deliveries: readonly Delivery[]) => inbox.prepare(deliveries),
      // The delivery role's "route" span, as a delivery worker has it (here: until the node took the event).
      async deliver(d: Delivery) {
        const span = tracing.enabled && carriesTrace(d.traceId) ? tracing.start('route', d.traceId, SpanKind.CONSUMER) : null;
        if (!span) return inbox.deliver(d);
        try {
          await inbox.deliver({ ...d, traceId: span.traceparent });
          span.end();
        } catch (err) {
          span.end(err);
          throw err;
        }
      },
    };
    bus.subscribe((records) =>
      router.handle(records, sink, async (record, reason) => {
        metrics.deadLettered.inc({ reason: 'undecodable' });
        log.error(
          { event_id: record.eventId, type: record.type, trace_id: traceIdOf(record.traceId), reason },
          'undecodable event skipped (no dead-letter topic in-process)',
        );
      }),
    );
    // Webhooks: the same dispatcher as `npm run webhooks`, fed from this bus (its table is its queue).
    const webhooks = startWebhookDispatcher({ config, sql, log, registry: metrics.registry });
    bus.subscribe((records) => webhooks.ingest(records));
    // Web Push for members without a live connection here (this process holds every connection).
    // Subscribed after the router: delivery to connections goes first.
    const vapid = deps.vapid ?? null;
    const pushMetrics = vapid ? createPushMetrics(metrics.registry) : null;
    const notifier =
      vapid && pushMetrics
        ? createNotifier({
            sql,
            log,
            metrics: pushMetrics,
            config: config.push,
            vapid,
            online: async (ids) => {
              const here = users();
              return new Set(ids.filter((u) => here.has(u)));
            },
            queryTimeoutMs: config.timeouts.dbQueryMs,
          })
        : null;
    if (notifier && pushMetrics) {
      bus.subscribe((records) => ingestOrDrop(notifier, records, pushMetrics, log));
      notifier.start();
    }
    const relay = createOutboxRelay({
      sql,
      bus,
      log,
      metrics,
      batchSize: config.limits.relayBatch,
      lingerMs: config.timeouts.relayLingerMs,
      pollMs: config.timeouts.relayPollMs,
      queryTimeoutMs: config.timeouts.dbQueryMs,
      tracing,
    });
    relay.start();
    return {
      onEventCommitted: () => relay.wake(),
      settled: () => relay.idle(),
      async stop() {
        await relay.stop();
        await notifier?.stop();
        await bus.close();
        await webhooks.stop();
      },
      cluster: null,
    };
  };
}
