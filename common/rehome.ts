/**
 * A region learning that one of its conversations now has its home elsewhere (a failover,
 * docs/multi-region.md): the row becomes a copy of the new home at the new epoch, and the entries
 * above the takeover point leave it (they were never mirrored to the new home, which re-appends
 * them with new numbers when they reach it: they come back on its stream). Shared by the mirror
 * applier (the `conversation.rehomed` event on the new home's stream) and a returning gateway
 * (asking the peers at start, before it takes writes). Idempotent by epoch.
 */
import type { TxSql } from './db.js';
import type { Logger } from './log.js';

export interface Rehoming {
  conversation_id: string;
  home_region: string;
  home_epoch: number;
  takeover_sequence: number;
  /**
   * The home it was taken from, when known: the re-homing is then recorded here too
   * (`region_failovers`), so a client of the old numbering that connects here is rewound to the
   * takeover point (gateway/chat-store.ts, failoverRewinds).
   */
  from_region?: string;
}

export type RehomeOutcome = 'applied' | 'duplicate' | 'unknownConversation';

/** In a transaction that may write copies (`SET LOCAL realchat.copy_write = 'on'`). */
export async function applyRehoming(tx: TxSql, r: Rehoming, log: Logger): Promise<RehomeOutcome> {
  const [row] = await tx<{ home_epoch: number }[]>`SELECT home_epoch FROM conversations WHERE id = ${r.conversation_id} FOR UPDATE`;
  if (!row) return 'unknownConversation';
  if (row.home_epoch >= r.home_epoch) return 'duplicate';
  const dropped = await tx`DELETE FROM messages WHERE conversation_id = ${r.conversation_id} AND sequence > ${r.takeover_sequence}`;
  await tx`
    UPDATE conversations SET home_region = ${r.home_region}, home_epoch = ${r.home_epoch}, last_seq = LEAST(last_seq, ${r.takeover_sequence})
    WHERE id = ${r.conversation_id}`;
  if (r.from_region)
    await tx`
      INSERT INTO region_failovers (conversation_id, home_epoch, from_region, takeover_seq)
      VALUES (${r.conversation_id}, ${r.home_epoch}, ${r.from_region}, ${r.takeover_sequence})
      ON CONFLICT DO NOTHING`;
  if (dropped.count > 0)
    log.warn(
      { ...r, dropped: dropped.count },
      'conversation re-homed: entries above the takeover point left the copy (the new home re-appends them)',
    );
  return 'applied';
}
