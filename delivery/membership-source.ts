import { mapDbError, withTimeout, type Sql } from '../common/db.js';
import type { MembershipSource } from './membership-cache.js';

export function createMembershipSource(sql: Sql, timeoutMs: number): MembershipSource {
  return {
    async membersOf(conversationId) {
      try {
        const rows = await withTimeout(sql<{ user_id: string }[]>`SELECT user_id FROM members WHERE conversation_id = ${conversationId}`, timeoutMs, 'membersOf');
        return rows.map((r) => r.user_id);
      } catch (err) {
        throw mapDbError(err);
      }
    },
  };
}
