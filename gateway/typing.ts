/**
 * A `typing` frame to the conversation's members connected here: this node's connections and, in
 * a cluster, the other nodes' (never stored, never retried). Used for a client's own frame
 * (gateway/ws-commands.ts), which is then also offered to the other regions, and for one another
 * region forwarded (POST /v1/regions/typing), which goes no further (docs/multi-region.md).
 */
import { AppError } from '../common/errors.js';
import { encodeFrame } from '../common/protocol.js';
import type { ChatStore } from './chat-store.js';
import type { ClusterPorts } from './pipeline.js';
import type { ConnectionRegistry } from './registry.js';

export interface TypingDeps {
  store: Pick<ChatStore, 'membership'>;
  /** Null: a large room (its membership is checked in the database). */
  membership: { isMember(conversationId: string, userId: string): Promise<ReadonlySet<string> | null> };
  registry: Pick<ConnectionRegistry, 'deliverFrame' | 'roomFrame'>;
  cluster: Pick<ClusterPorts, 'publishEphemeral'> | null;
}

/**
 * Delivers the user's typing in the conversation here. `checked`: the caller knows the user is a
 * member (a connection subscribed to it); otherwise the database is asked first, since this node's
 * member list can be stale (it learns removals only from the entries routed to it).
 */
export async function fanOutTyping(deps: TypingDeps, conversationId: string, userId: string, checked: boolean): Promise<void> {
  const conv = conversationId;
  const requireMember = async () => {
    const m = await deps.store.membership(userId, conv);
    if (m === 'not_found') throw new AppError('not_found', 'conversation not found');
    if (m === 'not_member') throw new AppError('forbidden', 'not a member of this conversation');
  };
  if (!checked) await requireMember();
  const members = await deps.membership.isMember(conv, userId);
  const typing = { type: 'typing', conversation_id: conv, user_id: userId } as const;
  if (members === null) {
    // A large room: membership from the database; the frame goes to whoever subscribed.
    await requireMember();
    deps.registry.roomFrame(conv, encodeFrame(typing), userId);
    deps.cluster?.publishEphemeral(conv, userId, null, typing);
    return;
  }
  if (members.size === 0) throw new AppError('not_found', 'conversation not found');
  if (!members.has(userId)) throw new AppError('forbidden', 'not a member of this conversation');
  deps.registry.deliverFrame(members, encodeFrame(typing), { exceptUser: userId, conversationId: conv });
  deps.cluster?.publishEphemeral(conv, userId, members, typing);
}
