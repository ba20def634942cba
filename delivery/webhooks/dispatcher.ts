/**
 * The webhook dispatcher: intake (events -> delivery rows) and the sender (rows -> signed POSTs).
 * Fed by a Kafka consumer group of its own in the distributed stack (main.ts) and by the in-process
 * bus on the embedded default (standalone/in-process-pipeline.ts). The table is its queue, so what
 * is waiting survives restarts and is bounded per webhook (intake.ts).
 */
import type { Registry } from 'prom-client';
import type { Config } from '../../common/config.js';
import type { Sql } from '../../common/db.js';
import type { Logger } from '../../common/log.js';
import type { EventRecord } from '../../common/events.js';
import { createUrlGuard, type Resolver } from '../../common/url-guard.js';
import { createWebhookMetrics } from './metrics.js';
import { createWebhookIntake } from './intake.js';
import { createWebhookSender } from './sender.js';
import { postPinned, type WebhookPoster } from './http-post.js';

export interface WebhookDispatcher {
  /** Queues deliveries for these events; resolves once they are stored. */
  ingest(records: readonly EventRecord[]): Promise<void>;
  stop(): Promise<void>;
}

export function startWebhookDispatcher(deps: {
  config: Config;
  sql: Sql;
  log: Logger;
  registry: Registry;
  /** Tests: a resolver with fixed answers. */
  resolve?: Resolver;
  post?: WebhookPoster;
}): WebhookDispatcher {
  const { config, sql } = deps;
  const w = config.webhooks;
  const log = deps.log.child({ component: 'webhooks' });
  const metrics = createWebhookMetrics(deps.registry);
  const intake = createWebhookIntake({ sql, log, metrics, maxPending: w.maxPendingPerWebhook, queryTimeoutMs: config.timeouts.dbQueryMs });
  const sender = createWebhookSender({
    sql,
    log,
    metrics,
    settings: {
      requestTimeoutMs: w.requestTimeoutMs,
      dnsTimeoutMs: w.dnsTimeoutMs,
      retryScheduleMs: w.retryScheduleMs,
      concurrency: w.concurrency,
      pollMs: w.pollMs,
      queryTimeoutMs: config.timeouts.dbQueryMs,
    },
    guard: createUrlGuard({
      allowPrivate: w.allowPrivate,
      dnsTimeoutMs: w.dnsTimeoutMs,
      ...(deps.resolve ? { resolve: deps.resolve } : {}),
    }),
    post: deps.post ?? postPinned,
  });
  sender.start();
  return {
    async ingest(records) {
      if ((await intake.ingest(records)) > 0) sender.wake();
    },
    stop: () => sender.stop(),
  };
}
