/**
 * Events from the stream become delivery rows, one per (webhook, event) for every enabled webhook
 * whose types match, in stream order (row ids follow it, so a conversation's rows are sent in its
 * order). Idempotent per (webhook, event): a redelivered batch inserts nothing twice. A webhook
 * with `maxPending` waiting rows gets new ones as dead (`backlog_full`, replayable), so a receiver
 * that is down for long cannot grow the table without bound.
 */
import type { Sql } from '../../common/db.js';
import type { Logger } from '../../common/log.js';
import { withTimeout } from '../../common/timeout.js';
import { EventDecodeError, decodeEvent, receiptOf, type EventRecord } from '../../common/events.js';
import type { WebhookMetrics } from './metrics.js';
import { anyRows } from '../any-rows.js';

export interface WebhookIntake {
  /** Resolves once the rows are committed (the caller may then mark the records consumed). */
  ingest(records: readonly EventRecord[]): Promise<number>;
}

export function createWebhookIntake(deps: {
  sql: Sql;
  log: Logger;
  metrics: WebhookMetrics;
  maxPending: number;
  queryTimeoutMs: number;
}): WebhookIntake {
  const { sql, log, metrics } = deps;
  // No enabled webhook: nothing to store, and no query per batch (docs/webhooks.md: a new webhook
  // receives events committed from about a second after it was created).
  const hooks = anyRows(
    async () =>
      (
        await withTimeout(
          sql<{ any: boolean }[]>`SELECT EXISTS (SELECT 1 FROM webhooks WHERE enabled) AS any`,
          deps.queryTimeoutMs,
          'webhook check',
        )
      )[0]!.any,
    1000,
  );
  return {
    async ingest(records) {
      if (!(await hooks.check())) return 0;
      const items: Array<{ event_id: string; event_type: string; conversation_id: string; body: string }> = [];
      for (const r of records) {
        try {
          const e = decodeEvent(JSON.parse(r.value));
          if (e) items.push({ event_id: e.event_id, event_type: e.type, conversation_id: e.conversation_id, body: r.value });
          // v1.5 folds a send's receipt into its message's event; webhooks still receive the
          // conversation.read as before (docs/webhooks.md), with the receipt's own event id.
          const receipt = e?.type === 'message.created' ? receiptOf(e) : null;
          if (receipt)
            items.push({
              event_id: receipt.event_id,
              event_type: receipt.type,
              conversation_id: receipt.conversation_id,
              body: JSON.stringify(receipt),
            });
        } catch (err) {
          // Delivery dead-letters these on its own path; a webhook never receives what does not decode.
          if (!(err instanceof EventDecodeError) && !(err instanceof SyntaxError)) throw err;
          log.warn({ event_id: r.eventId, reason: (err as Error).message }, 'undecodable event not sent to webhooks');
        }
      }
      if (items.length === 0) return 0;
      const rows = await withTimeout(
        sql<Array<{ status: string }>>`
          WITH ev AS (
            SELECT (e.v->>'event_id')::uuid AS event_id, e.v->>'event_type' AS event_type,
                   (e.v->>'conversation_id')::uuid AS conversation_id, e.v->>'body' AS body, e.ord
            FROM jsonb_array_elements(${JSON.stringify(items)}::text::jsonb) WITH ORDINALITY AS e(v, ord)
          ), hooks AS (
            SELECT w.id, w.event_types,
                   (SELECT count(*) FROM webhook_deliveries p WHERE p.webhook_id = w.id AND p.status = 'pending') >= ${deps.maxPending} AS full
            FROM webhooks w WHERE w.enabled
          )
          INSERT INTO webhook_deliveries (webhook_id, event_id, event_type, conversation_id, body, status, last_error, finished_at)
          SELECT h.id, ev.event_id, ev.event_type, ev.conversation_id, ev.body,
                 CASE WHEN h.full THEN 'dead' ELSE 'pending' END,
                 CASE WHEN h.full THEN 'backlog_full' END,
                 CASE WHEN h.full THEN clock_timestamp() END
          FROM ev JOIN hooks h ON cardinality(h.event_types) = 0 OR ev.event_type = ANY (h.event_types)
          ORDER BY ev.ord, h.id
          ON CONFLICT (webhook_id, event_id) DO NOTHING
          RETURNING status`,
        deps.queryTimeoutMs,
        'webhook intake',
      );
      const dropped = rows.filter((r) => r.status === 'dead').length;
      metrics.queued.inc(rows.length - dropped);
      if (dropped > 0) {
        metrics.deadLettered.inc({ reason: 'backlog_full' }, dropped);
        log.warn({ dropped }, 'webhook backlog full: deliveries dead-lettered at once (replay them once the receiver is back)');
      }
      return rows.length - dropped;
    },
  };
}
