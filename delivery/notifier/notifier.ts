/**
 * The notifier (docs/architecture.md, "Notifier"): turns `message.created` events into Web Push
 * notifications for members who are offline, or who have not read the message within
 * REALCHAT_PUSH_UNREAD_DELAY_MS. Two halves joined by the push_notifications table:
 * - ingest(records): called by the event consumer (a Kafka group member, or the in-process bus);
 *   it resolves once the rows are stored, so the consumer marks its position only after that;
 * - a sender loop: claims due rows under a lease, decides (read? muted? still a member? online?),
 *   sends at most `concurrency` requests at once, and records the outcome (sent, retry with
 *   backoff, dead letter, subscription removed).
 * Bounds: `concurrency` requests in flight, one claimed batch of as many rows in memory, and
 * REALCHAT_PUSH_MAX_PENDING rows in the table (beyond, new notifications are dropped and counted).
 */
import type { PushConfig } from '../../common/config.js';
import type { Sql } from '../../common/db.js';
import { decodeEvent, type EventRecord } from '../../common/events.js';
import type { Logger } from '../../common/log.js';
import { Sleeper, backoffMs } from '../../common/backoff.js';
import { retry } from '../../common/retry.js';
import { createNotifierStore, type DueNotification, type MessageArrival } from './store.js';
import { createPushSender, topicFor, type PushSender } from './push-sender.js';
import { createUrlGuard } from '../../common/url-guard.js';
import { anyRows } from '../any-rows.js';
import type { PushMetrics } from './metrics.js';

/** Which of these users have a live connection now; null: cannot tell (the registry is unreachable). */
export type OnlineCheck = (userIds: string[]) => Promise<ReadonlySet<string> | null>;

export interface NotifierDeps {
  sql: Sql;
  log: Logger;
  metrics: PushMetrics;
  config: PushConfig;
  vapid: { publicKey: string; privateKey: string };
  online: OnlineCheck;
  queryTimeoutMs: number;
  /** Tests: a sender other than the real one. */
  sender?: PushSender;
}

export interface Notifier {
  ingest(records: readonly EventRecord[]): Promise<void>;
  start(): void;
  /** Look for due work now (new rows were stored). */
  wake(): void;
  /** Stops claiming, waits (bounded by the request timeout) for requests in flight. */
  stop(): Promise<void>;
}

const PREVIEW_CHARS = 140;

/** What the service worker shows (web/public/sw.js). Text only from a `text` field, cut short: the push service's limit is 4 KiB. */
export function notificationPayload(n: DueNotification): string {
  const p = n.payload as { text?: unknown } | null;
  const text = p && typeof p === 'object' && typeof p.text === 'string' ? p.text : null;
  const body = text === null ? 'New message' : text.length > PREVIEW_CHARS ? `${text.slice(0, PREVIEW_CHARS - 1)}…` : text;
  return JSON.stringify({
    type: 'message',
    conversation_id: n.conversationId,
    sequence_number: n.sequence,
    message_id: n.messageId,
    sender_id: n.senderId,
    title: n.title ?? n.senderName ?? 'RealChat',
    body: n.title && n.senderName ? `${n.senderName}: ${body}` : body,
    url: `/?conversation=${n.conversationId}`,
  });
}

/** The newest plain message per conversation of a batch (one statement can touch a row once). */
export function arrivalsOf(records: readonly EventRecord[], onUndecodable: () => void): MessageArrival[] {
  const newest = new Map<string, MessageArrival>();
  for (const r of records) {
    if (r.type !== 'message.created' && r.type !== '') continue;
    let e: ReturnType<typeof decodeEvent>;
    try {
      e = decodeEvent(JSON.parse(r.value));
    } catch {
      onUndecodable();
      continue;
    }
    if (e?.type !== 'message.created') continue;
    const m = e.message;
    const prev = newest.get(m.conversation_id);
    if (!prev || prev.sequence < m.sequence_number)
      newest.set(m.conversation_id, {
        conversationId: m.conversation_id,
        sequence: m.sequence_number,
        senderId: m.sender_id,
        createdAt: m.created_at,
      });
  }
  return [...newest.values()];
}

export function createNotifier(deps: NotifierDeps): Notifier {
  const { log, metrics, config } = deps;
  const store = createNotifierStore(deps.sql, deps.queryTimeoutMs);
  const send =
    deps.sender ??
    createPushSender({
      vapid: { ...deps.vapid, subject: config.vapidSubject },
      ttlS: config.ttlS,
      timeoutMs: config.requestTimeoutMs,
      // Tests run the push service on loopback (the same switch lets validation take http://127.0.0.1).
      guard: createUrlGuard({ allowPrivate: config.allowHttpLoopback, dnsTimeoutMs: Math.min(2000, config.requestTimeoutMs) }),
    });
  const subscribed = anyRows(() => store.anySubscription(), 1000);
  const sleeper = new Sleeper();
  let pending = 0;
  let stopped = false;
  let loop: Promise<void> | null = null;

  async function refreshPending(): Promise<void> {
    pending = await store.pendingCount();
    metrics.pending.set(pending);
  }

  async function decide(n: DueNotification, onlineNow: ReadonlySet<string> | null): Promise<void> {
    const skip = async (reason: string) => {
      metrics.skipped.inc({ reason });
      await store.drop(n);
    };
    if (!n.member) return skip('not_member');
    if (n.muted) return skip('muted');
    if (n.readSequence >= n.sequence) return skip('read');
    if (n.messageId === null || n.payload === null) return skip('deleted');
    // Unknown presence counts as online: notified once the delay passed unread, never at once.
    const online = onlineNow === null || onlineNow.has(n.userId);
    if (online && n.ageMs < config.unreadDelayMs) {
      metrics.skipped.inc({ reason: 'online' });
      await store.reschedule(n, config.unreadDelayMs - n.ageMs, null);
      return;
    }
    const timer = metrics.sendSeconds.startTimer();
    const out = await send({ endpoint: n.endpoint, p256dh: n.p256dh, auth: n.auth }, notificationPayload(n), topicFor(n.conversationId));
    timer();
    const ctx = { conversation_id: n.conversationId, user_id: n.userId, subscription_id: n.subscriptionId, sequence_number: n.sequence };
    switch (out.kind) {
      case 'accepted':
        metrics.sent.inc();
        await store.markSent(n);
        return;
      case 'gone':
        metrics.subscriptionsRemoved.inc({ status: String(out.status) });
        log.info({ ...ctx, status: out.status }, 'push subscription gone: removed');
        await store.removeSubscription(n);
        return;
      case 'rejected':
        metrics.deadLettered.inc({ reason: 'rejected' });
        log.warn({ ...ctx, status: out.status }, 'push service refused the notification: dead-lettered');
        await store.deadLetter(n, out.status, out.reason);
        return;
      case 'retry': {
        if (n.attempts + 1 >= config.maxAttempts) {
          metrics.deadLettered.inc({ reason: 'attempts' });
          log.warn({ ...ctx, status: out.status, reason: out.reason, attempts: n.attempts + 1 }, 'push kept failing: dead-lettered');
          await store.deadLetter(n, out.status, out.reason);
          return;
        }
        metrics.attempts.inc({ reason: out.reason });
        const delay = Math.min(
          config.retryMaxMs,
          Math.max(out.retryAfterMs ?? 0, config.retryBaseMs + backoffMs(n.attempts, config.retryBaseMs, config.retryMaxMs)),
        );
        await store.reschedule(n, delay, { error: out.reason });
        return;
      }
    }
  }

  async function presenceOf(rows: DueNotification[]): Promise<ReadonlySet<string> | null> {
    try {
      return await deps.online([...new Set(rows.map((r) => r.userId))]);
    } catch (err) {
      log.warn({ err }, 'presence lookup failed: members count as online');
      return null;
    }
  }

  /** One round: claim, decide and send with at most `concurrency` in flight. True when it claimed a full batch. */
  async function round(): Promise<boolean> {
    const rows = await store.claim(config.concurrency, config.leaseMs);
    if (rows.length === 0) return false;
    const onlineNow = await presenceOf(rows);
    if (onlineNow === null) metrics.presenceUnknown.inc();
    await Promise.all(
      rows.map((n) =>
        decide(n, onlineNow).catch((err: unknown) =>
          // The lease runs out and another round takes the row again.
          log.error({ err, conversation_id: n.conversationId, subscription_id: n.subscriptionId }, 'push notification step failed'),
        ),
      ),
    );
    return rows.length === config.concurrency;
  }

  async function run(): Promise<void> {
    let failures = 0;
    while (!stopped) {
      let more = false;
      try {
        more = await round();
        await refreshPending();
        failures = 0;
      } catch (err) {
        log.error({ err }, 'notifier round failed; retrying');
        await sleeper.sleep(backoffMs(failures++, 200, 10_000) + 50);
        continue;
      }
      if (!more && !stopped) await sleeper.sleep(config.pollMs);
    }
  }

  return {
    async ingest(records) {
      // No push subscription anywhere: no query per batch (a subscription made in the last second may miss a message).
      if (!(await subscribed.check())) return;
      const arrivals = arrivalsOf(records, () => metrics.dropped.inc({ reason: 'undecodable' }));
      if (arrivals.length === 0) return;
      if (pending >= config.maxPending) {
        metrics.dropped.inc({ reason: 'queue_full' }, arrivals.length);
        log.warn({ pending, max: config.maxPending, dropped: arrivals.length }, 'push queue full: notifications dropped');
        return;
      }
      const n = await store.ingest(arrivals, config.maxRoomMembers);
      if (n > 0) {
        pending += n;
        sleeper.wake();
      }
    },
    start() {
      loop ??= (async () => {
        await refreshPending().catch((err: unknown) => log.warn({ err }, 'push pending count failed'));
        await run();
      })();
    },
    wake: () => sleeper.wake(),
    async stop() {
      stopped = true;
      sleeper.wake();
      await loop;
    },
  };
}

/**
 * For the in-process bus, whose publish awaits every subscriber: a store that keeps failing must
 * not hold chat delivery up, so after a few attempts the batch's notifications are dropped (counted).
 */
export async function ingestOrDrop(notifier: Notifier, records: readonly EventRecord[], metrics: PushMetrics, log: Logger): Promise<void> {
  try {
    await retry(() => notifier.ingest(records), { retries: 3, baseMs: 100, capMs: 1000 });
  } catch (err) {
    metrics.dropped.inc({ reason: 'ingest_failed' }, records.length);
    log.error({ err, records: records.length }, 'notifications of a batch not stored: dropped');
  }
}
