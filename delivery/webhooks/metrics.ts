/** The dispatcher's metrics, on the registry of the process it runs in (its own, or a gateway's in-process). */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export function createWebhookMetrics(registry: Registry) {
  const r = [registry];
  return {
    attempts: new Counter({
      name: 'realchat_webhook_attempts_total',
      help: 'Webhook delivery attempts by outcome: ok (2xx), http_error (any other status, redirects included), timeout, network, refused (the URL resolved to a refused address)',
      labelNames: ['outcome'] as const,
      registers: r,
    }),
    attemptSeconds: new Histogram({
      name: 'realchat_webhook_attempt_seconds',
      help: 'Duration of one webhook delivery attempt (DNS, connect, request, response)',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: r,
    }),
    deadLettered: new Counter({
      name: 'realchat_webhook_dead_letters_total',
      help: 'Webhook deliveries dead-lettered: retries_spent, or backlog_full (the webhook had REALCHAT_WEBHOOK_MAX_PENDING pending deliveries)',
      labelNames: ['reason'] as const,
      registers: r,
    }),
    queued: new Counter({ name: 'realchat_webhook_queued_total', help: 'Webhook deliveries queued from the event stream', registers: r }),
    pending: new Gauge({
      name: 'realchat_webhook_pending',
      help: 'Webhook deliveries waiting (all webhooks), as of the last count',
      registers: r,
    }),
    errors: new Counter({
      name: 'realchat_webhook_dispatcher_errors_total',
      help: 'Database failures of the webhook dispatcher (retried)',
      registers: r,
    }),
  };
}

export type WebhookMetrics = ReturnType<typeof createWebhookMetrics>;
