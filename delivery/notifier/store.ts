/**
 * The notifier's SQL (sql/migrations/0012_web_push.sql). Every statement has a deadline; a claimed
 * row is held by a lease, so several notifiers share the table and one that dies mid-send leaves
 * its rows to the others once the lease runs out (at-least-once: docs/architecture.md, "Notifier").
 */
import type { Sql } from '../../common/db.js';
import { withTimeout } from '../../common/timeout.js';

/** The newest plain message of one conversation in a batch of events. */
export interface MessageArrival {
  conversationId: string;
  sequence: number;
  senderId: string;
  createdAt: string;
}

/** A claimed notification with what deciding and sending it needs. */
export interface DueNotification {
  subscriptionId: number;
  conversationId: string;
  userId: string;
  sequence: number;
  attempts: number;
  /** ms since the message was written (the database's clock). */
  ageMs: number;
  endpoint: string;
  p256dh: string;
  auth: string;
  readSequence: number;
  muted: boolean;
  member: boolean;
  title: string | null;
  messageId: string | null;
  senderId: string | null;
  senderName: string | null;
  /** The message's payload now (null: deleted, or not found). */
  payload: unknown;
}

export function createNotifierStore(sql: Sql, timeoutMs: number) {
  const t = <T>(p: Promise<T>, what: string) => withTimeout(p, timeoutMs, what);
  const key = (n: { subscriptionId: number; conversationId: string }) => [n.subscriptionId, n.conversationId] as const;
  return {
    /**
     * One pending row per subscription of every member (not the sender) who has not read the message
     * and has not muted the conversation. A row already pending takes the newer sequence; a row
     * whose notification was sent is armed again only once its user read past it (the collapse).
     * Idempotent: the same events again change nothing.
     */
    /** Whether any push subscription exists (the notifier skips its per-batch work when none does). */
    async anySubscription(): Promise<boolean> {
      const [r] = await t(sql<{ any: boolean }[]>`SELECT EXISTS (SELECT 1 FROM push_subscriptions) AS any`, 'push check');
      return r!.any;
    },

    async ingest(arrivals: MessageArrival[], maxRoomMembers: number): Promise<number> {
      if (arrivals.length === 0) return 0;
      const rows = await t(
        sql`
        INSERT INTO push_notifications AS p (subscription_id, conversation_id, user_id, sequence_number, message_at, state, attempts, due_at)
        SELECT s.id, e.conversation_id, m.user_id, e.seq, e.created_at, 'pending', 0, now()
        FROM unnest(${arrivals.map((a) => a.conversationId)}::uuid[], ${arrivals.map((a) => a.sequence)}::bigint[],
                    ${arrivals.map((a) => a.senderId)}::uuid[], ${arrivals.map((a) => a.createdAt)}::timestamptz[])
             AS e(conversation_id, seq, sender_id, created_at)
        JOIN conversations c ON c.id = e.conversation_id AND c.member_count <= ${maxRoomMembers}
        JOIN members m ON m.conversation_id = e.conversation_id AND m.user_id <> e.sender_id
        JOIN push_subscriptions s ON s.user_id = m.user_id
        LEFT JOIN user_conversation_state st ON st.user_id = m.user_id AND st.conversation_id = e.conversation_id
        WHERE coalesce(st.last_read_sequence, 0) < e.seq
          -- A new notifier group reads what the topic retains: history is not news.
          AND e.created_at > now() - interval '1 day'
          AND NOT EXISTS (SELECT 1 FROM push_mutes x WHERE x.user_id = m.user_id AND x.conversation_id = e.conversation_id)
        ON CONFLICT (subscription_id, conversation_id) DO UPDATE SET
          sequence_number = EXCLUDED.sequence_number,
          message_at = CASE WHEN p.state = 'sent' THEN EXCLUDED.message_at ELSE p.message_at END,
          attempts = CASE WHEN p.state = 'sent' THEN 0 ELSE p.attempts END,
          due_at = CASE WHEN p.state = 'sent' THEN EXCLUDED.due_at ELSE p.due_at END,
          lease_until = CASE WHEN p.state = 'sent' THEN NULL ELSE p.lease_until END,
          state = 'pending'
        WHERE EXCLUDED.sequence_number > p.sequence_number
          AND (p.state = 'pending' OR coalesce((SELECT r.last_read_sequence FROM user_conversation_state r
                 WHERE r.user_id = p.user_id AND r.conversation_id = p.conversation_id), 0) >= p.sequence_number)
        RETURNING 1`,
        'push ingest',
      );
      return rows.length;
    },

    async pendingCount(): Promise<number> {
      const [r] = await t(
        sql<{ n: number }[]>`SELECT count(*)::int AS n FROM push_notifications WHERE state = 'pending'`,
        'push pending count',
      );
      return r!.n;
    },

    /** Takes up to `limit` due rows under a lease, with what deciding and sending needs. */
    async claim(limit: number, leaseMs: number): Promise<DueNotification[]> {
      const rows = await t(
        sql<Record<string, unknown>[]>`
        WITH claimed AS (
          UPDATE push_notifications p SET lease_until = now() + ${leaseMs} * interval '1 millisecond'
          FROM (SELECT subscription_id, conversation_id FROM push_notifications
                WHERE state = 'pending' AND due_at <= now() AND (lease_until IS NULL OR lease_until < now())
                ORDER BY due_at LIMIT ${limit} FOR UPDATE SKIP LOCKED) d
          WHERE p.subscription_id = d.subscription_id AND p.conversation_id = d.conversation_id
          RETURNING p.*)
        SELECT cl.subscription_id, cl.conversation_id, cl.user_id, cl.sequence_number, cl.attempts,
               (extract(epoch FROM now() - cl.message_at) * 1000)::bigint AS age_ms,
               s.endpoint, s.p256dh, s.auth,
               coalesce(st.last_read_sequence, 0) AS read_sequence,
               EXISTS (SELECT 1 FROM push_mutes x WHERE x.user_id = cl.user_id AND x.conversation_id = cl.conversation_id) AS muted,
               -- A subscription taken over by another user (same browser, new sign-in) no longer speaks for this one.
               (s.user_id = cl.user_id AND EXISTS (SELECT 1 FROM members m WHERE m.user_id = cl.user_id AND m.conversation_id = cl.conversation_id)) AS member,
               c.title, msg.id AS message_id, msg.sender_id, u.name AS sender_name, msg.payload
        FROM claimed cl
        JOIN push_subscriptions s ON s.id = cl.subscription_id
        LEFT JOIN conversations c ON c.id = cl.conversation_id
        LEFT JOIN user_conversation_state st ON st.user_id = cl.user_id AND st.conversation_id = cl.conversation_id
        LEFT JOIN messages msg ON msg.conversation_id = cl.conversation_id AND msg.sequence = cl.sequence_number AND msg.kind = 'message'
        LEFT JOIN users u ON u.id = msg.sender_id`,
        'push claim',
      );
      return rows.map((r) => ({
        subscriptionId: Number(r.subscription_id),
        conversationId: String(r.conversation_id),
        userId: String(r.user_id),
        sequence: Number(r.sequence_number),
        attempts: Number(r.attempts),
        ageMs: Number(r.age_ms),
        endpoint: String(r.endpoint),
        p256dh: String(r.p256dh),
        auth: String(r.auth),
        readSequence: Number(r.read_sequence),
        muted: Boolean(r.muted),
        member: Boolean(r.member),
        title: (r.title as string | null) ?? null,
        messageId: (r.message_id as string | null) ?? null,
        senderId: (r.sender_id as string | null) ?? null,
        senderName: (r.sender_name as string | null) ?? null,
        payload: r.payload ?? null,
      }));
    },

    /** The push service took it: the row now holds the collapse until the user reads past it. */
    async markSent(n: DueNotification): Promise<void> {
      const [s, c] = key(n);
      await t(
        sql`UPDATE push_notifications SET state = 'sent', lease_until = NULL, attempts = 0, last_error = NULL
            WHERE subscription_id = ${s} AND conversation_id = ${c}`,
        'push mark sent',
      );
    },

    /** Nothing to send (read, muted, left): the row goes, unless a newer message re-armed it meanwhile. */
    async drop(n: DueNotification): Promise<void> {
      const [s, c] = key(n);
      await t(
        sql`DELETE FROM push_notifications WHERE subscription_id = ${s} AND conversation_id = ${c} AND sequence_number = ${n.sequence}`,
        'push drop',
      );
      await t(
        sql`UPDATE push_notifications SET lease_until = NULL WHERE subscription_id = ${s} AND conversation_id = ${c}`,
        'push release',
      );
    },

    /** Try again in `delayMs` (attempt: counts toward the dead letter; otherwise a presence wait). */
    async reschedule(n: DueNotification, delayMs: number, attempt: { error: string } | null): Promise<void> {
      const [s, c] = key(n);
      await t(
        sql`UPDATE push_notifications SET due_at = now() + ${Math.max(0, Math.round(delayMs))} * interval '1 millisecond', lease_until = NULL,
              attempts = attempts + ${attempt ? 1 : 0}, last_error = coalesce(${attempt?.error ?? null}, last_error)
            WHERE subscription_id = ${s} AND conversation_id = ${c}`,
        'push reschedule',
      );
    },

    async deadLetter(n: DueNotification, status: number | null, reason: string): Promise<void> {
      const [s, c] = key(n);
      await t(
        sql.begin(async (tx) => {
          await tx`INSERT INTO push_dead_letters (user_id, conversation_id, sequence_number, endpoint, attempts, status, reason)
                   VALUES (${n.userId}, ${n.conversationId}, ${n.sequence}, ${n.endpoint}, ${n.attempts + 1}, ${status}, ${reason})`;
          await tx`DELETE FROM push_notifications WHERE subscription_id = ${s} AND conversation_id = ${c}`;
        }),
        'push dead letter',
      );
    },

    /** 404/410: the subscription is gone; its rows go with it (ON DELETE CASCADE). */
    async removeSubscription(n: DueNotification): Promise<void> {
      await t(sql`DELETE FROM push_subscriptions WHERE id = ${n.subscriptionId}`, 'push remove subscription');
    },
  };
}

export type NotifierStore = ReturnType<typeof createNotifierStore>;
