/**
 * The gateway's side of Web Push in PostgreSQL: browsers' subscriptions and per-conversation mutes
 * (sql/migrations/0012_web_push.sql). The notifier reads these tables; it never writes mutes.
 */
import { timedQuery, type Sql } from '../common/db.js';

/** A PushSubscription already validated at the edge (gateway/push-routes.ts). */
export interface PushSubscriptionInput {
  endpoint: string;
  p256dh: string;
  auth: string;
}

export interface PushStore {
  /**
   * Saves the subscription for `userId` (taking it over from another user on the same endpoint) and
   * drops the user's oldest ones beyond `maxPerUser`. `created`: the endpoint was not this user's before.
   */
  subscribe(userId: string, s: PushSubscriptionInput, maxPerUser: number): Promise<{ created: boolean }>;
  /** Removes the user's subscription with this endpoint; false when there was none. */
  unsubscribe(userId: string, endpoint: string): Promise<boolean>;
  /** Mutes (a row) or unmutes (no row); muting also drops what is pending for the user there. */
  setMuted(userId: string, conversationId: string, muted: boolean): Promise<void>;
}

export function createPushStore(deps: { sql: Sql; queryTimeoutMs: number }): PushStore {
  const { sql, queryTimeoutMs } = deps;
  const timed = <T>(what: string, p: Promise<T>): Promise<T> => timedQuery(p, queryTimeoutMs, what);
  return {
    async subscribe(userId, s, maxPerUser) {
      return timed(
        'push subscribe',
        sql.begin(async (tx) => {
          const [row] = await tx<{ created: boolean }[]>`
            WITH before AS (SELECT user_id FROM push_subscriptions WHERE endpoint = ${s.endpoint})
            INSERT INTO push_subscriptions (user_id, endpoint, p256dh, auth)
            VALUES (${userId}, ${s.endpoint}, ${s.p256dh}, ${s.auth})
            ON CONFLICT (endpoint) DO UPDATE SET user_id = EXCLUDED.user_id, p256dh = EXCLUDED.p256dh, auth = EXCLUDED.auth
            RETURNING NOT EXISTS (SELECT 1 FROM before b WHERE b.user_id = ${userId}) AS created`;
          // Browsers leave stale subscriptions behind (reinstalls, cleared data) that the user cannot
          // see: past the cap the oldest go, rather than refusing the device in the user's hand.
          await tx`
            DELETE FROM push_subscriptions WHERE user_id = ${userId} AND id NOT IN (
              SELECT id FROM push_subscriptions WHERE user_id = ${userId} ORDER BY id DESC LIMIT ${maxPerUser})`;
          return { created: row!.created };
        }) as Promise<{ created: boolean }>,
      );
    },
    async unsubscribe(userId, endpoint) {
      const rows = await timed(
        'push unsubscribe',
        sql`DELETE FROM push_subscriptions WHERE user_id = ${userId} AND endpoint = ${endpoint} RETURNING id`,
      );
      return rows.length > 0;
    },
    async setMuted(userId, conversationId, muted) {
      if (!muted) {
        await timed('push unmute', sql`DELETE FROM push_mutes WHERE user_id = ${userId} AND conversation_id = ${conversationId}`);
        return;
      }
      await timed(
        'push mute',
        sql.begin(async (tx) => {
          await tx`INSERT INTO push_mutes (user_id, conversation_id) VALUES (${userId}, ${conversationId}) ON CONFLICT DO NOTHING`;
          await tx`DELETE FROM push_notifications WHERE user_id = ${userId} AND conversation_id = ${conversationId} AND state = 'pending'`;
        }),
      );
    },
  };
}
