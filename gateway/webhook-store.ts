/** The webhooks table and its delivery log, as the admin routes read and write them (docs/webhooks.md). */
import { randomUUID } from 'node:crypto';
import { AppError } from '../common/errors.js';
import { timedQuery, type Sql } from '../common/db.js';
import type { ChatEventType } from '../common/events.js';

/** What a webhook may subscribe to: the public event stream's types (docs/events.md). */
export const WEBHOOK_EVENT_TYPES = [
  'message.created',
  'message.edited',
  'message.deleted',
  'conversation.members_added',
  'conversation.members_removed',
  'conversation.role_changed',
  'conversation.read',
] as const satisfies readonly ChatEventType[];

export const DELIVERY_STATUSES = ['pending', 'delivered', 'dead'] as const;
export type DeliveryStatus = (typeof DELIVERY_STATUSES)[number];

export interface WebhookRecord {
  webhook_id: string;
  url: string;
  /** Empty: every type. */
  event_types: string[];
  enabled: boolean;
  created_at: string;
  updated_at: string;
}

export interface DeliveryRecord {
  delivery_id: number;
  event_id: string;
  event_type: string;
  conversation_id: string;
  status: DeliveryStatus;
  attempts: number;
  next_attempt_at: string | null;
  last_status_code: number | null;
  last_error: string | null;
  created_at: string;
  finished_at: string | null;
}

interface WebhookRow {
  id: string;
  url: string;
  event_types: string[];
  secret: string;
  enabled: boolean;
  created_at: Date;
  updated_at: Date;
}

interface DeliveryRow {
  id: number;
  event_id: string;
  event_type: string;
  conversation_id: string;
  status: DeliveryStatus;
  attempts: number;
  next_attempt_at: Date;
  last_status_code: number | null;
  last_error: string | null;
  created_at: Date;
  finished_at: Date | null;
}

const toWebhook = (r: WebhookRow): WebhookRecord => ({
  webhook_id: r.id,
  url: r.url,
  event_types: r.event_types,
  enabled: r.enabled,
  created_at: r.created_at.toISOString(),
  updated_at: r.updated_at.toISOString(),
});

const toDelivery = (r: DeliveryRow): DeliveryRecord => ({
  delivery_id: r.id,
  event_id: r.event_id,
  event_type: r.event_type,
  conversation_id: r.conversation_id,
  status: r.status,
  attempts: r.attempts,
  next_attempt_at: r.status === 'pending' ? r.next_attempt_at.toISOString() : null,
  last_status_code: r.last_status_code,
  last_error: r.last_error,
  created_at: r.created_at.toISOString(),
  finished_at: r.finished_at ? r.finished_at.toISOString() : null,
});

export interface WebhookChanges {
  url?: string;
  eventTypes?: string[];
  enabled?: boolean;
  secret?: string;
}

export interface WebhookStore {
  create(url: string, eventTypes: string[], secret: string): Promise<WebhookRecord>;
  list(after: string | null, limit: number): Promise<{ webhooks: WebhookRecord[]; has_more: boolean }>;
  get(id: string): Promise<WebhookRecord>;
  update(id: string, changes: WebhookChanges): Promise<WebhookRecord>;
  /** Its delivery log goes with it. */
  remove(id: string): Promise<void>;
  /** Newest first; `before`: a delivery id from the previous page. */
  deliveries(
    id: string,
    opts: { status: DeliveryStatus | null; before: number | null; limit: number },
  ): Promise<{ deliveries: DeliveryRecord[]; has_more: boolean }>;
}

export function createWebhookStore(sql: Sql, queryTimeoutMs: number): WebhookStore {
  const run = <T>(what: string, fn: () => Promise<T>): Promise<T> => timedQuery(fn(), queryTimeoutMs, what);
  const found = (rows: WebhookRow[]): WebhookRecord => {
    if (!rows[0]) throw new AppError('not_found', 'webhook not found');
    return toWebhook(rows[0]);
  };
  return {
    async create(url, eventTypes, secret) {
      const rows = await run(
        'createWebhook',
        () => sql<WebhookRow[]>`
          INSERT INTO webhooks (id, url, event_types, secret) VALUES (${randomUUID()}, ${url}, ${eventTypes}, ${secret}) RETURNING *`,
      );
      return toWebhook(rows[0]!);
    },
    async list(after, limit) {
      const rows = await run(
        'listWebhooks',
        () => sql<WebhookRow[]>`
          SELECT * FROM webhooks WHERE true ${after ? sql`AND id > ${after}` : sql``} ORDER BY id LIMIT ${limit + 1}`,
      );
      return { webhooks: rows.slice(0, limit).map(toWebhook), has_more: rows.length > limit };
    },
    async get(id) {
      return found(await run('getWebhook', () => sql<WebhookRow[]>`SELECT * FROM webhooks WHERE id = ${id}`));
    },
    async update(id, c) {
      const rows = await run(
        'updateWebhook',
        () => sql<WebhookRow[]>`
          UPDATE webhooks SET
            url = COALESCE(${c.url ?? null}, url),
            event_types = COALESCE(${c.eventTypes ?? null}::text[], event_types),
            enabled = COALESCE(${c.enabled ?? null}::boolean, enabled),
            secret = COALESCE(${c.secret ?? null}, secret),
            updated_at = date_trunc('milliseconds', clock_timestamp())
          WHERE id = ${id} RETURNING *`,
      );
      return found(rows);
    },
    async remove(id) {
      const rows = await run('deleteWebhook', () => sql<WebhookRow[]>`DELETE FROM webhooks WHERE id = ${id} RETURNING *`);
      found(rows);
    },
    async deliveries(id, { status, before, limit }) {
      return run('webhookDeliveries', async () => {
        found(await sql<WebhookRow[]>`SELECT * FROM webhooks WHERE id = ${id}`);
        const rows = await sql<DeliveryRow[]>`
          SELECT id, event_id, event_type, conversation_id, status, attempts, next_attempt_at, last_status_code, last_error,
                 created_at, finished_at
          FROM webhook_deliveries
          WHERE webhook_id = ${id} ${status ? sql`AND status = ${status}` : sql``} ${before !== null ? sql`AND id < ${before}` : sql``}
          ORDER BY id DESC LIMIT ${limit + 1}`;
        return { deliveries: rows.slice(0, limit).map(toDelivery), has_more: rows.length > limit };
      });
    },
  };
}
