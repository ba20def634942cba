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
import type { PipelineFactory } from '../gateway/pipeline.js';

export function inProcessPipeline(deps: { config: Config; sql: Sql; log: Logger; metrics: Metrics }): PipelineFactory {
  const { config, sql, log, metrics } = deps;
  return async (inbox) => {
    const bus = createInMemoryBus();
    const router = createDeliveryRouter({
      sink: { deliver: (d) => inbox.deliver(d) },
      log,
      metrics,
      dedupEntries: 100_000,
      async onUndecodable(record, reason) {
        metrics.deadLettered.inc({ reason: 'undecodable' });
        log.error(
          { event_id: record.eventId, type: record.type, trace_id: record.traceId, reason },
          'undecodable event skipped (no dead-letter topic in-process)',
        );
      },
    });
    bus.subscribe((records) => router.handle(records));
    const relay = createOutboxRelay({
      sql,
      bus,
      log,
      metrics,
      batchSize: 500,
      pollMs: config.timeouts.relayPollMs,
      queryTimeoutMs: config.timeouts.dbQueryMs,
    });
    relay.start();
    return {
      onEventCommitted: () => relay.wake(),
      settled: () => relay.idle(),
      async stop() {
        await relay.stop();
        await bus.close();
      },
      cluster: null,
    };
  };
}
