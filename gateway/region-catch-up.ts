/**
 * A region coming back must not take writes for conversations another region took over while it
 * was gone (docs/multi-region.md, "Regional failover"): until its mirror applier has read the new
 * home's `conversation.rehomed` events it still believes it is their home, and what it took would
 * be reconciled later by the re-append, out of order. So a gateway, before it listens, asks each
 * peer region which conversations it took over from this one, and makes them copies
 * (common/rehome.ts), in pages; sends to them are then forwarded to their new home. A peer that
 * does not answer is passed over (logged): the mirror still brings the same news, later.
 */
import type { Sql } from '../common/db.js';
import type { Logger } from '../common/log.js';
import { applyRehoming, type Rehoming } from '../common/rehome.js';
import { isUuid } from '../common/validate.js';

/** The peers' route (gateway/rest.ts, regionFailovers). */
export const REGION_FAILOVERS_PATH = '/v1/regions/failovers';
const PAGE = 500;

/** Conversations this region took over from `from` and still homes, after `after` (by id), at most `limit`. */
export async function failoversFrom(sql: Sql, self: string, from: string, after: string | null, limit: number): Promise<Rehoming[]> {
  const rows = await sql<{ conversation_id: string; home_epoch: number; takeover_seq: string }[]>`
    SELECT f.conversation_id::text, f.home_epoch, f.takeover_seq
    FROM region_failovers f
    JOIN conversations c ON c.id = f.conversation_id AND c.home_epoch = f.home_epoch AND c.home_region IS NULL
    WHERE f.from_region = ${from} AND f.conversation_id > ${after ?? '00000000-0000-0000-0000-000000000000'}
    ORDER BY f.conversation_id
    LIMIT ${limit}`;
  return rows.map((r) => ({
    conversation_id: r.conversation_id,
    home_region: self,
    home_epoch: r.home_epoch,
    takeover_sequence: Number(r.takeover_seq),
  }));
}

export interface CatchUpOptions {
  sql: Sql;
  self: string;
  peers: ReadonlyMap<string, string>;
  secret: string;
  timeoutMs: number;
  log: Logger;
  fetch?: typeof fetch;
}

/** Per peer: conversations made copies here, or the reason it was passed over. */
export async function catchUpFailovers(o: CatchUpOptions): Promise<Record<string, number | string>> {
  const doFetch = o.fetch ?? fetch;
  const out: Record<string, number | string> = {};
  for (const [peer, url] of o.peers) {
    let applied = 0;
    let after: string | null = null;
    try {
      for (;;) {
        const q = new URLSearchParams({ from: o.self, limit: String(PAGE), ...(after ? { after } : {}) });
        const res = await doFetch(`${url}${REGION_FAILOVERS_PATH}?${q}`, {
          headers: { authorization: `Region ${o.secret}` },
          signal: AbortSignal.timeout(o.timeoutMs),
          redirect: 'error',
        });
        if (res.status !== 200) throw new Error(`${peer} answered ${res.status}`);
        const page = parsePage(await res.json());
        for (const r of page) {
          if (r.home_region !== peer) throw new Error(`${peer} names ${r.home_region} as the new home of ${r.conversation_id}`);
          const outcome = await o.sql.begin(async (tx) => {
            await tx`SET LOCAL realchat.copy_write = 'on'`;
            // Taken over from this region: recorded here too, for the rewind of its clients.
            return applyRehoming(tx, { ...r, from_region: o.self }, o.log);
          });
          if (outcome === 'applied') applied++;
        }
        if (page.length < PAGE) break;
        after = page.at(-1)!.conversation_id;
      }
      out[peer] = applied;
      if (applied > 0)
        o.log.warn({ peer, conversations: applied }, 'conversations re-homed in a peer while this region was away: now copies here');
    } catch (err) {
      out[peer] = err instanceof Error ? err.message : String(err);
      o.log.warn({ err, peer }, 'could not ask a peer region which conversations it took over; its stream will tell');
    }
  }
  return out;
}

function parsePage(body: unknown): Rehoming[] {
  const list = (body as { failovers?: unknown } | null)?.failovers;
  if (!Array.isArray(list)) throw new Error('a failovers page without `failovers`');
  return list.map((r: Record<string, unknown>) => {
    const { conversation_id, home_region, home_epoch, takeover_sequence } = r ?? {};
    if (
      typeof conversation_id !== 'string' ||
      !isUuid(conversation_id) ||
      typeof home_region !== 'string' ||
      !Number.isSafeInteger(home_epoch) ||
      !Number.isSafeInteger(takeover_sequence)
    )
      throw new Error(`a malformed failover entry: ${JSON.stringify(r).slice(0, 200)}`);
    return { conversation_id, home_region, home_epoch: home_epoch as number, takeover_sequence: takeover_sequence as number };
  });
}
