/** The notifier's metrics (docs/operations.md, "Web Push"), on the registry of the process that runs it. */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export function createPushMetrics(registry: Registry) {
  const r = [registry];
  return {
    sent: new Counter({ name: 'realchat_push_sent_total', help: 'Notifications a push service accepted', registers: r }),
    attempts: new Counter({
      name: 'realchat_push_attempt_failures_total',
      help: 'Requests to push services that failed and will be retried, by reason (status_5xx, status_429, timeout, network)',
      labelNames: ['reason'],
      registers: r,
    }),
    deadLettered: new Counter({
      name: 'realchat_push_dead_lettered_total',
      help: 'Notifications given up on and written to push_dead_letters, by reason (attempts, rejected)',
      labelNames: ['reason'],
      registers: r,
    }),
    subscriptionsRemoved: new Counter({
      name: 'realchat_push_subscriptions_removed_total',
      help: 'Subscriptions deleted because the push service answered 404 or 410',
      labelNames: ['status'],
      registers: r,
    }),
    skipped: new Counter({
      name: 'realchat_push_skipped_total',
      help: 'Notifications not sent when due, by reason (read, muted, not_member, deleted, online)',
      labelNames: ['reason'],
      registers: r,
    }),
    dropped: new Counter({
      name: 'realchat_push_dropped_total',
      help: 'Message events not turned into notifications, by reason (queue_full: REALCHAT_PUSH_MAX_PENDING reached; undecodable; ingest_failed)',
      labelNames: ['reason'],
      registers: r,
    }),
    presenceUnknown: new Counter({
      name: 'realchat_push_presence_unknown_total',
      help: 'Presence lookups that failed (members then count as online: notified only after the unread delay)',
      registers: r,
    }),
    pending: new Gauge({
      name: 'realchat_push_pending',
      help: 'Notifications waiting to be sent (push_notifications, state pending)',
      registers: r,
    }),
    sendSeconds: new Histogram({
      name: 'realchat_push_request_seconds',
      help: 'Duration of requests to push services',
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: r,
    }),
  };
}

export type PushMetrics = ReturnType<typeof createPushMetrics>;
