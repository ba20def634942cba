/**
 * The v1.1 changes to a conversation (docs/protocol.md, "Timeline entries"): edit, delete with
 * erasure, members added and removed, roles. Each runs in the caller's transaction, which it starts
 * by locking the conversation row: every rule is checked against the state no concurrent change can
 * move, and the entry takes the next sequence from UPDATE conversations ... RETURNING, written with
 * its outbox event (built by the database, realchat_entry_event, so the replay says the same).
 * Idempotency is per (actor, key) as for sends: a stored key answers its entry when the request is
 * the same, `conflict` otherwise.
 */
import { randomUUID } from 'node:crypto';
import { AppError } from '../common/errors.js';
import type { TxSql } from '../common/db.js';
import type { OutboxMode } from '../common/outbox.js';
import type { EntryKind, Envelope, Role } from '../common/wire.js';

export interface EntryResult {
  envelope: Envelope;
  duplicate: boolean;
}

export interface MembersChanged {
  conversation_id: string;
  user_ids: string[];
  member_count: number;
  /** The conversation's last sequence after the change (the entry's, when one was written). */
  last_sequence: number;
  duplicate: boolean;
}

export interface RoleSet {
  conversation_id: string;
  user_id: string;
  role: Role;
  last_sequence: number;
  duplicate: boolean;
}

interface Locked {
  last_seq: number;
  large: boolean;
  member_count: number;
  who_can_add: 'members' | 'admins';
  created_by: string;
  /** The actor's role; null: not a member. */
  role: Role | null;
}

interface StoredEntry {
  kind: EntryKind;
  conversation_id: string;
  ref_message_id: string | null;
  same_payload: boolean;
  envelope: Envelope;
}

const canModerate = (r: Role | null) => r === 'owner' || r === 'admin';

const membersChanged = (
  conversationId: string,
  userIds: string[],
  memberCount: number,
  lastSequence: number,
  duplicate: boolean,
): MembersChanged => ({
  conversation_id: conversationId,
  user_ids: userIds,
  member_count: memberCount,
  last_sequence: lastSequence,
  duplicate,
});

export function createTimelineWrites(outboxMode: OutboxMode) {
  /** Locks the conversation and reads the actor's role: `not_found` when there is no such conversation. */
  async function lock(tx: TxSql, conversationId: string, actor: string): Promise<Locked> {
    const [c] = await tx<Locked[]>`
      SELECT c.last_seq, c.large, c.member_count, c.who_can_add, c.created_by,
             (SELECT m.role FROM members m WHERE m.conversation_id = c.id AND m.user_id = ${actor}) AS role
      FROM conversations c WHERE c.id = ${conversationId} FOR UPDATE`;
    if (!c) throw new AppError('not_found', 'conversation not found');
    return c;
  }

  function requireMember(c: Locked): Role {
    if (c.role === null) throw new AppError('forbidden', 'not a member of this conversation');
    return c.role;
  }

  /** The entry an (actor, key) already wrote, with whether its payload equals `payload`. */
  async function stored(tx: TxSql, actor: string, key: string, payload: unknown): Promise<StoredEntry | null> {
    const [s] = await tx<StoredEntry[]>`
      SELECT m.kind, m.conversation_id, m.ref_message_id, m.payload = ${JSON.stringify(payload ?? null)}::text::jsonb AS same_payload,
             realchat_envelope(m) AS envelope
      FROM messages m WHERE m.sender_id = ${actor} AND m.idempotency_key = ${key}`;
    return s ?? null;
  }

  function conflictUnless(ok: boolean): void {
    if (!ok) throw new AppError('conflict', 'idempotency_key was already used for a different request');
  }

  /**
   * The payload of the entry a membership or role request's key already wrote (null: no key, or
   * not used yet); `conflict` unless it is an entry of `kind` in this conversation that `same` accepts.
   */
  async function repeated<P>(
    tx: TxSql,
    r: { conversationId: string; actor: string; key: string | null },
    kind: EntryKind,
    same: (payload: P) => boolean,
  ): Promise<P | null> {
    if (!r.key) return null;
    const s = await stored(tx, r.actor, r.key, null);
    if (!s) return null;
    const payload = s.envelope.payload as P;
    conflictUnless(s.kind === kind && s.conversation_id === r.conversationId && same(payload));
    return payload;
  }

  async function roleOf(tx: TxSql, conversationId: string, userId: string): Promise<Role | null> {
    const [m] = await tx<{ role: Role }[]>`SELECT role FROM members WHERE conversation_id = ${conversationId} AND user_id = ${userId}`;
    return m?.role ?? null;
  }

  /** Appends one entry with the next sequence and its outbox event. */
  async function append(
    tx: TxSql,
    e: {
      conversationId: string;
      actor: string;
      key: string | null;
      kind: EntryKind;
      ref: string | null;
      payload: unknown;
      payloadBytes?: number;
    },
    traceId: string | null,
  ): Promise<Envelope> {
    const id = randomUUID();
    const payloadText = JSON.stringify(e.payload ?? null);
    // A change asked for without a key still needs one (unique per sender): its own.
    const key = e.key ?? `${e.kind}:${id}`;
    await tx`
      WITH bumped AS (
        UPDATE conversations SET last_seq = last_seq + 1, updated_at = date_trunc('milliseconds', clock_timestamp())
        WHERE id = ${e.conversationId} RETURNING last_seq)
      INSERT INTO messages (id, conversation_id, sender_id, sequence, payload, idempotency_key, payload_bytes, kind, ref_message_id)
      SELECT ${id}, ${e.conversationId}, ${e.actor}, b.last_seq, ${payloadText}::text::jsonb, ${key},
             ${e.payloadBytes ?? Buffer.byteLength(payloadText)}, ${e.kind}, ${e.ref}
      FROM bumped b`;
    const [row] = await tx<{ envelope: Envelope; event_id: string }[]>`
      WITH e AS (
        SELECT realchat_envelope(m) AS envelope, realchat_entry_event(m, c.large) AS ev
        FROM messages m JOIN conversations c ON c.id = m.conversation_id WHERE m.id = ${id}
      ), o AS (
        INSERT INTO outbox (event_id, aggregateid, type, payload, trace_id)
        SELECT (ev->>'event_id')::uuid, ${e.conversationId}, ev->>'type', ev, ${traceId}::text FROM e
        RETURNING event_id
      )
      SELECT e.envelope, o.event_id FROM e, o`;
    // wal mode (Debezium): the insert is in the WAL; the row need not stay.
    if (outboxMode === 'wal') await tx`DELETE FROM outbox WHERE event_id = ${row!.event_id}`;
    return row!.envelope;
  }

  /** The plain message an edit or delete names, in this conversation (`not_found` otherwise). */
  async function target(tx: TxSql, conversationId: string, messageId: string) {
    const [m] = await tx<{ sender_id: string; deleted: boolean }[]>`
      SELECT sender_id, deleted_at IS NOT NULL AS deleted FROM messages
      WHERE id = ${messageId} AND conversation_id = ${conversationId} AND kind = 'message'`;
    if (!m) throw new AppError('not_found', 'message not found');
    return m;
  }

  return {
    /** Only the sender edits; a deleted message cannot be edited (`conflict`). */
    async edit(
      tx: TxSql,
      r: { conversationId: string; actor: string; messageId: string; key: string; payload: unknown; payloadBytes: number },
      traceId: string | null,
    ): Promise<EntryResult> {
      const conv = await lock(tx, r.conversationId, r.actor);
      const s = await stored(tx, r.actor, r.key, r.payload);
      if (s) {
        conflictUnless(s.kind === 'edit' && s.conversation_id === r.conversationId && s.ref_message_id === r.messageId && s.same_payload);
        return { envelope: s.envelope, duplicate: true };
      }
      requireMember(conv);
      const m = await target(tx, r.conversationId, r.messageId);
      if (m.sender_id !== r.actor) throw new AppError('forbidden', 'only the sender can edit a message');
      if (m.deleted) throw new AppError('conflict', 'the message was deleted');
      const envelope = await append(
        tx,
        {
          conversationId: r.conversationId,
          actor: r.actor,
          key: r.key,
          kind: 'edit',
          ref: r.messageId,
          payload: r.payload,
          payloadBytes: r.payloadBytes,
        },
        traceId,
      );
      await tx`UPDATE messages SET payload = ${JSON.stringify(r.payload ?? null)}::text::jsonb, payload_bytes = ${r.payloadBytes},
                 edited_at = ${envelope.created_at}::timestamptz
               WHERE id = ${r.messageId}`;
      return { envelope, duplicate: false };
    },

    /**
     * The sender, an owner or an admin. Erasure is real: the payload of the message and of every
     * edit of it become JSON null in this transaction, in the messages and in outbox rows not yet
     * published. Deleting a deleted message answers its delete entry.
     */
    async delete(
      tx: TxSql,
      r: { conversationId: string; actor: string; messageId: string; key: string },
      traceId: string | null,
    ): Promise<EntryResult> {
      const conv = await lock(tx, r.conversationId, r.actor);
      const s = await stored(tx, r.actor, r.key, null);
      if (s) {
        conflictUnless(s.kind === 'delete' && s.conversation_id === r.conversationId && s.ref_message_id === r.messageId);
        return { envelope: s.envelope, duplicate: true };
      }
      const role = requireMember(conv);
      const m = await target(tx, r.conversationId, r.messageId);
      if (m.sender_id !== r.actor && !canModerate(role))
        throw new AppError('forbidden', 'only the sender, an owner or an admin can delete a message');
      if (m.deleted) {
        const [prior] = await tx<{ envelope: Envelope }[]>`
          SELECT realchat_envelope(d) AS envelope FROM messages d
          WHERE d.conversation_id = ${r.conversationId} AND d.kind = 'delete' AND d.ref_message_id = ${r.messageId}
          ORDER BY d.sequence LIMIT 1`;
        return { envelope: prior!.envelope, duplicate: true };
      }
      const erased = await tx<{ id: string }[]>`
        UPDATE messages SET payload = 'null'::jsonb, payload_bytes = 4,
               deleted_at = CASE WHEN id = ${r.messageId} THEN date_trunc('milliseconds', clock_timestamp()) END
        WHERE conversation_id = ${r.conversationId} AND (id = ${r.messageId} OR (kind = 'edit' AND ref_message_id = ${r.messageId}))
        RETURNING id`;
      await tx`
        UPDATE outbox SET payload = jsonb_set(payload, '{message,payload}', 'null'::jsonb)
        WHERE aggregateid = ${r.conversationId} AND payload->'message'->>'message_id' = ANY(${erased.map((e) => e.id)}::text[])`;
      const envelope = await append(
        tx,
        { conversationId: r.conversationId, actor: r.actor, key: r.key, kind: 'delete', ref: r.messageId, payload: null },
        traceId,
      );
      return { envelope, duplicate: false };
    },

    /** Members add unless the owner restricted it to owners and admins (`who_can_add`). */
    async addMembers(
      tx: TxSql,
      r: { conversationId: string; actor: string; userIds: string[]; key: string | null; maxRoomMembers: number; largeRoomMembers: number },
      traceId: string | null,
    ): Promise<MembersChanged> {
      const conv = await lock(tx, r.conversationId, r.actor);
      const prior = await repeated<{ user_ids: string[] }>(tx, r, 'members_added', (p) => p.user_ids.every((u) => r.userIds.includes(u)));
      if (prior) return membersChanged(r.conversationId, prior.user_ids, conv.member_count, conv.last_seq, true);
      const role = requireMember(conv);
      if (conv.who_can_add === 'admins' && !canModerate(role))
        throw new AppError('forbidden', 'only owners and admins can add members here');
      const present = new Set(
        (
          await tx<{ user_id: string }[]>`
            SELECT user_id FROM members WHERE conversation_id = ${r.conversationId} AND user_id = ANY(${r.userIds}::uuid[])`
        ).map((x) => x.user_id),
      );
      const added = [...new Set(r.userIds)].filter((u) => !present.has(u));
      const count = conv.member_count + added.length;
      if (count > r.maxRoomMembers) throw new AppError('conflict', `a conversation has at most ${r.maxRoomMembers} members`);
      if (added.length === 0) return membersChanged(r.conversationId, [], count, conv.last_seq, false);
      await tx`INSERT INTO members ${tx(added.map((u) => ({ conversation_id: r.conversationId, user_id: u })))}`;
      await tx`INSERT INTO user_conversation_state ${tx(added.map((u) => ({ conversation_id: r.conversationId, user_id: u })))} ON CONFLICT DO NOTHING`;
      await tx`UPDATE conversations SET large = ${conv.large || count > r.largeRoomMembers}, member_count = ${count} WHERE id = ${r.conversationId}`;
      const envelope = await append(
        tx,
        {
          conversationId: r.conversationId,
          actor: r.actor,
          key: r.key,
          kind: 'members_added',
          ref: null,
          payload: { user_ids: added, by: r.actor },
        },
        traceId,
      );
      return membersChanged(r.conversationId, added, count, envelope.sequence_number, false);
    },

    /**
     * Leaving (target = actor) or removing. The owner cannot be removed, and leaves only as the last
     * member; an admin cannot remove an admin.
     */
    async removeMember(
      tx: TxSql,
      r: { conversationId: string; actor: string; userId: string; key: string | null },
      traceId: string | null,
    ): Promise<MembersChanged> {
      const conv = await lock(tx, r.conversationId, r.actor);
      const prior = await repeated<{ user_ids: string[] }>(tx, r, 'members_removed', (p) => p.user_ids.includes(r.userId));
      if (prior) return membersChanged(r.conversationId, prior.user_ids, conv.member_count, conv.last_seq, true);
      const role = requireMember(conv);
      const leaving = r.userId === r.actor;
      let targetRole: Role | null = role;
      if (!leaving) {
        if (!canModerate(role)) throw new AppError('forbidden', 'only owners and admins can remove members');
        targetRole = await roleOf(tx, r.conversationId, r.userId);
        if (!targetRole) throw new AppError('not_found', 'not a member of this conversation');
        if (targetRole === 'owner') throw new AppError('forbidden', 'the owner cannot be removed');
        if (targetRole === 'admin' && role === 'admin') throw new AppError('forbidden', 'an admin cannot remove an admin');
      } else if (targetRole === 'owner' && conv.member_count > 1) {
        throw new AppError('conflict', 'the owner can leave only as the last member');
      }
      await tx`DELETE FROM members WHERE conversation_id = ${r.conversationId} AND user_id = ${r.userId}`;
      await tx`UPDATE conversations SET member_count = member_count - 1 WHERE id = ${r.conversationId}`;
      const envelope = await append(
        tx,
        {
          conversationId: r.conversationId,
          actor: r.actor,
          key: r.key,
          kind: 'members_removed',
          ref: null,
          payload: { user_ids: [r.userId], by: r.actor, reason: leaving ? 'left' : 'removed' },
        },
        traceId,
      );
      return membersChanged(r.conversationId, [r.userId], conv.member_count - 1, envelope.sequence_number, false);
    },

    /** The owner names admins (and takes it back); the owner's own role never changes. */
    async setRole(
      tx: TxSql,
      r: { conversationId: string; actor: string; userId: string; role: 'admin' | 'member'; key: string | null },
      traceId: string | null,
    ): Promise<RoleSet> {
      const conv = await lock(tx, r.conversationId, r.actor);
      const set = (lastSequence: number, duplicate: boolean): RoleSet => ({
        conversation_id: r.conversationId,
        user_id: r.userId,
        role: r.role,
        last_sequence: lastSequence,
        duplicate,
      });
      if (await repeated<{ user_id: string; role: Role }>(tx, r, 'role_changed', (p) => p.user_id === r.userId && p.role === r.role))
        return set(conv.last_seq, true);
      if (requireMember(conv) !== 'owner') throw new AppError('forbidden', 'only the owner can change roles');
      const current = await roleOf(tx, r.conversationId, r.userId);
      if (!current) throw new AppError('not_found', 'not a member of this conversation');
      if (current === 'owner') throw new AppError('forbidden', "the owner's role cannot change");
      if (current === r.role) return set(conv.last_seq, false);
      await tx`UPDATE members SET role = ${r.role} WHERE conversation_id = ${r.conversationId} AND user_id = ${r.userId}`;
      const envelope = await append(
        tx,
        {
          conversationId: r.conversationId,
          actor: r.actor,
          key: r.key,
          kind: 'role_changed',
          ref: null,
          payload: { user_id: r.userId, role: r.role, by: r.actor },
        },
        traceId,
      );
      return set(envelope.sequence_number, false);
    },

    /** The owner restricts (or opens) adding members. */
    async setWhoCanAdd(tx: TxSql, r: { conversationId: string; actor: string; whoCanAdd: 'members' | 'admins' }): Promise<void> {
      const conv = await lock(tx, r.conversationId, r.actor);
      if (requireMember(conv) !== 'owner') throw new AppError('forbidden', 'only the owner can change who adds members');
      await tx`UPDATE conversations SET who_can_add = ${r.whoCanAdd} WHERE id = ${r.conversationId}`;
    },
  };
}

export type TimelineWrites = ReturnType<typeof createTimelineWrites>;
