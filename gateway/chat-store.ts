/**
 * Every database read and write of the gateway. Writes that produce events insert the outbox row in
 * the same transaction as the state change, so an event exists if and only if the change committed.
 */
import { randomUUID } from 'node:crypto';
import { AppError } from '../common/errors.js';
import { mapDbError, type Sql, type TxSql } from '../common/db.js';
import { withTimeout } from '../common/timeout.js';
import type { Semaphore } from '../common/semaphore.js';
import type { Envelope } from '../common/protocol.js';
import { membersAddedEvent, messageCreatedEvent, readUpdatedEvent, type ChatEvent } from '../common/events.js';
import { insertOutboxEvents, type OutboxMode } from '../common/outbox.js';
import { retry } from '../common/retry.js';

export type { ConversationSummary } from '../common/wire.js';
import type { ConversationSummary } from '../common/wire.js';

export interface SendResult {
  envelope: Envelope;
  duplicate: boolean;
}

interface MessageRow {
  id: string;
  conversation_id: string;
  sender_id: string;
  sequence: number;
  payload: unknown;
  created_at: Date;
  idempotency_key: string;
}

export function toEnvelope(r: MessageRow): Envelope {
  return {
    message_id: r.id,
    conversation_id: r.conversation_id,
    sender_id: r.sender_id,
    sequence_number: r.sequence,
    payload: r.payload,
    created_at: r.created_at.toISOString(),
    idempotency_key: r.idempotency_key,
  };
}

/** Ids, sequence, timestamps and keys around each payload in a message frame, roughly. */
const ENVELOPE_OVERHEAD_BYTES = 300;

/** Thrown inside a send transaction to roll it back (undoing the sequence increment). */
class IdempotencyRace extends Error {}

export type Membership = 'member' | 'not_member' | 'not_found';

export interface Page {
  messages: Envelope[];
  /** Messages after the page exist. */
  has_more: boolean;
}

/**
 * The gateway's contract with its database. Errors are AppError with the contract's codes:
 * `not_found` / `forbidden` for conversations, `conflict` for a reused idempotency key,
 * `unavailable` when the database is unreachable, slow, or its request queue is full.
 */
export interface ChatStore {
  membership(userId: string, conversationId: string): Promise<Membership>;
  createConversation(creator: string, memberIds: string[], title: string | null, traceId: string | null): Promise<ConversationCreated>;
  addMembers(actor: string, conversationId: string, userIds: string[], traceId: string | null): Promise<MembersAddedResult>;
  listConversations(userId: string, limit: number): Promise<{ conversations: ConversationSummary[]; has_more: boolean }>;
  /** For hello: every conversation of the user with its current last sequence. */
  conversationsOf(userId: string): Promise<Array<{ conversation_id: string; last_seq: number }>>;
  /** Catch-up for a connection (no membership check: the delivery path already routed by membership). */
  messagesAfter(conversationId: string, afterSequence: number, limit: number): Promise<Envelope[]>;
  /** A member's page of history, bounded in rows and in bytes. */
  listMessages(userId: string, conversationId: string, afterSequence: number, limit: number, maxBytes?: number): Promise<Page>;
  /** The write path: sequence, message and outbox event in one transaction; idempotent per (sender, key). */
  sendMessage(
    senderId: string,
    conversationId: string,
    key: string,
    payload: unknown,
    payloadBytes: number,
    traceId: string | null,
  ): Promise<SendResult>;
  /** Monotonic: returns the stored read sequence and whether it advanced (an event was emitted). */
  markRead(
    userId: string,
    conversationId: string,
    sequence: number,
    traceId: string | null,
  ): Promise<{ read_sequence: number; advanced: boolean }>;
  /** Bookkeeping for resume/unread diagnostics; monotonic so late writes never move it back. */
  recordDelivered(userId: string, entries: Array<[conversationId: string, sequence: number]>): Promise<void>;
  upsertUser(id: string, name: string | null): Promise<void>;
  ping(): Promise<void>;
}

export interface ConversationCreated {
  conversation_id: string;
  title: string | null;
  member_ids: string[];
  last_sequence: number;
  created_at: string;
}

export interface MembersAddedResult {
  conversation_id: string;
  added_user_ids: string[];
  member_count: number;
  last_sequence: number;
}

export interface ChatStoreDeps {
  sql: Sql;
  queryTimeoutMs: number;
  maxRoomMembers: number;
  /** Pages of history stop at this many bytes (see selectAfter). */
  maxPageBytes: number;
  outboxMode: OutboxMode;
  /** Bounds request-path database work (see common/semaphore.ts). */
  gate: Semaphore;
}

export function createChatStore(deps: ChatStoreDeps): ChatStore {
  const { sql, queryTimeoutMs, maxRoomMembers, maxPageBytes, gate } = deps;

  async function run<T>(what: string, fn: () => Promise<T>): Promise<T> {
    const slot = gate.tryAcquire();
    if (!slot) throw new AppError('unavailable', 'server busy: too many database operations waiting; retry shortly', { retryAfterS: 1 });
    let abandoned = false;
    const work = slot.then(async (release) => {
      try {
        // Timed out while waiting for a slot: the caller already answered; do not start the work.
        if (abandoned) throw new AppError('unavailable', 'abandoned');
        return await fn();
      } finally {
        release();
      }
    });
    work.catch(() => {});
    try {
      // The wait for a slot counts toward the timeout: no request waits longer than queryTimeoutMs.
      return await withTimeout(work, queryTimeoutMs, what);
    } catch (err) {
      abandoned = true;
      throw mapDbError(err);
    }
  }

  const insertEvent = (tx: TxSql, event: ChatEvent, traceId: string | null) => insertOutboxEvents(tx, [event], traceId, deps.outboxMode);

  async function membership(userId: string, conversationId: string): Promise<Membership> {
    const rows = await sql<{ member: boolean }[]>`
      SELECT EXISTS (SELECT 1 FROM members m WHERE m.conversation_id = c.id AND m.user_id = ${userId}) AS member
      FROM conversations c WHERE c.id = ${conversationId}`;
    if (rows.length === 0) return 'not_found';
    return rows[0]!.member ? 'member' : 'not_member';
  }

  /**
   * Up to `limit` messages after a sequence, also bounded in bytes: the page stops once the
   * payloads (as stored) pass `maxPageBytes`, but always holds at least one message. `has_more`
   * says whether messages after the page exist.
   */
  async function selectAfter(
    conversationId: string,
    afterSequence: number,
    limit: number,
    maxBytes = maxPageBytes,
  ): Promise<{ messages: Envelope[]; has_more: boolean }> {
    const rows = await sql<(MessageRow & { fetched: number })[]>`
      SELECT id, conversation_id, sender_id, sequence, payload, created_at, idempotency_key, fetched FROM (
        SELECT w.*, sum(w.size) OVER (ORDER BY w.sequence) AS running, count(*) OVER () AS fetched FROM (
          SELECT id, conversation_id, sender_id, sequence, payload, created_at, idempotency_key,
                 COALESCE(payload_bytes, octet_length(payload::text)) + ${ENVELOPE_OVERHEAD_BYTES} AS size
          FROM messages WHERE conversation_id = ${conversationId} AND sequence > ${afterSequence}
          ORDER BY sequence LIMIT ${limit + 1}) w) p
      WHERE running - size < ${maxBytes}
      ORDER BY sequence`;
    const fetched = rows[0]?.fetched ?? 0;
    const page = rows.slice(0, limit);
    return { messages: page.map(toEnvelope), has_more: fetched > page.length };
  }

  async function requireMember(userId: string, conversationId: string): Promise<void> {
    const m = await membership(userId, conversationId);
    if (m === 'not_found') throw new AppError('not_found', 'conversation not found');
    if (m === 'not_member') throw new AppError('forbidden', 'not a member of this conversation');
  }

  async function findByKey(senderId: string, key: string, conversationId: string, payload: unknown): Promise<SendResult | null> {
    const rows = await sql<(MessageRow & { same_payload: boolean })[]>`
      SELECT id, conversation_id, sender_id, sequence, payload, created_at, idempotency_key,
             payload = ${JSON.stringify(payload)}::text::jsonb AS same_payload
      FROM messages WHERE sender_id = ${senderId} AND idempotency_key = ${key}`;
    const row = rows[0];
    if (!row) return null;
    if (row.conversation_id !== conversationId || !row.same_payload) {
      throw new AppError('conflict', 'idempotency_key was already used for a different conversation or payload');
    }
    return { envelope: toEnvelope(row), duplicate: true };
  }

  return {
    membership: (userId: string, conversationId: string) => run('membership', () => membership(userId, conversationId)),

    async createConversation(creator: string, memberIds: string[], title: string | null, traceId: string | null) {
      const all = [...new Set([creator, ...memberIds])];
      if (all.length > maxRoomMembers) throw new AppError('conflict', `a conversation has at most ${maxRoomMembers} members`);
      const id = randomUUID();
      return run('createConversation', () =>
        sql.begin(async (tx) => {
          const [conv] = await tx<{ created_at: Date }[]>`
            INSERT INTO conversations (id, title, created_by) VALUES (${id}, ${title}, ${creator}) RETURNING created_at`;
          await tx`INSERT INTO members ${tx(all.map((u) => ({ conversation_id: id, user_id: u })))}`;
          await tx`INSERT INTO user_conversation_state ${tx(all.map((u) => ({ conversation_id: id, user_id: u })))}`;
          await insertEvent(tx, membersAddedEvent(id, all, creator, 0), traceId);
          return { conversation_id: id, title, member_ids: all, last_sequence: 0, created_at: conv!.created_at.toISOString() };
        }),
      );
    },

    async addMembers(actor: string, conversationId: string, userIds: string[], traceId: string | null) {
      return run('addMembers', () =>
        sql.begin(async (tx) => {
          // Locking the conversation row orders this event against concurrent sends in the stream:
          // last_sequence is exactly the sequence the new members start after.
          const [conv] = await tx<{ last_seq: number }[]>`SELECT last_seq FROM conversations WHERE id = ${conversationId} FOR UPDATE`;
          if (!conv) throw new AppError('not_found', 'conversation not found');
          const existing = new Set(
            (await tx<{ user_id: string }[]>`SELECT user_id FROM members WHERE conversation_id = ${conversationId}`).map((r) => r.user_id),
          );
          if (!existing.has(actor)) throw new AppError('forbidden', 'not a member of this conversation');
          const added = userIds.filter((u) => !existing.has(u));
          if (existing.size + added.length > maxRoomMembers)
            throw new AppError('conflict', `a conversation has at most ${maxRoomMembers} members`);
          if (added.length > 0) {
            await tx`INSERT INTO members ${tx(added.map((u) => ({ conversation_id: conversationId, user_id: u })))}`;
            await tx`INSERT INTO user_conversation_state ${tx(added.map((u) => ({ conversation_id: conversationId, user_id: u })))} ON CONFLICT DO NOTHING`;
            await tx`UPDATE conversations SET updated_at = date_trunc('milliseconds', clock_timestamp()) WHERE id = ${conversationId}`;
            await insertEvent(tx, membersAddedEvent(conversationId, added, actor, conv.last_seq), traceId);
          }
          return {
            conversation_id: conversationId,
            added_user_ids: added,
            member_count: existing.size + added.length,
            last_sequence: conv.last_seq,
          };
        }),
      );
    },

    listConversations(userId: string, limit: number) {
      return run('listConversations', async () => {
        const rows = await sql<(ConversationSummary & { updated_at: Date })[]>`
          SELECT c.id AS conversation_id, c.title, c.last_seq AS last_sequence,
                 COALESCE(s.last_read_sequence, 0) AS read_sequence, c.updated_at
          FROM members m
          JOIN conversations c ON c.id = m.conversation_id
          LEFT JOIN user_conversation_state s ON s.user_id = m.user_id AND s.conversation_id = m.conversation_id
          WHERE m.user_id = ${userId}
          ORDER BY c.updated_at DESC, c.id
          LIMIT ${limit + 1}`;
        const has_more = rows.length > limit;
        const conversations = rows.slice(0, limit).map((r) => ({
          conversation_id: r.conversation_id,
          title: r.title,
          last_sequence: r.last_sequence,
          read_sequence: r.read_sequence,
          unread: Math.max(0, r.last_sequence - r.read_sequence),
        }));
        return { conversations, has_more };
      });
    },

    /** For hello: every conversation of the user with its current last sequence. */
    conversationsOf(userId: string) {
      return run(
        'conversationsOf',
        () =>
          sql<{ conversation_id: string; last_seq: number }[]>`
          SELECT m.conversation_id, c.last_seq FROM members m JOIN conversations c ON c.id = m.conversation_id
          WHERE m.user_id = ${userId}`,
      );
    },

    /** No membership check: callers are the delivery path, which already routed by membership. */
    messagesAfter(conversationId: string, afterSequence: number, limit: number) {
      return run('messagesAfter', async () => (await selectAfter(conversationId, afterSequence, limit)).messages);
    },

    async listMessages(userId: string, conversationId: string, afterSequence: number, limit: number, maxBytes = maxPageBytes) {
      return run('listMessages', async () => {
        await requireMember(userId, conversationId);
        return selectAfter(conversationId, afterSequence, limit, maxBytes);
      });
    },

    /**
     * The write path: sequence, message and outbox event in one transaction. Idempotency is the
     * UNIQUE (sender_id, idempotency_key) constraint: on conflict the transaction rolls back
     * (so the sequence stays gap-free) and the stored message answers the retry.
     */
    async sendMessage(
      senderId: string,
      conversationId: string,
      key: string,
      payload: unknown,
      payloadBytes: number,
      traceId: string | null,
    ): Promise<SendResult> {
      return run('sendMessage', async () => {
        const attempt = async (): Promise<SendResult> => {
          try {
            return await sql.begin(async (tx) => {
              const [conv] = await tx<{ last_seq: number }[]>`
                UPDATE conversations SET last_seq = last_seq + 1, updated_at = date_trunc('milliseconds', clock_timestamp())
                WHERE id = ${conversationId}
                  AND EXISTS (SELECT 1 FROM members WHERE conversation_id = ${conversationId} AND user_id = ${senderId})
                RETURNING last_seq`;
              if (!conv) {
                const m = await tx<{ x: number }[]>`SELECT 1 AS x FROM conversations WHERE id = ${conversationId}`;
                throw m.length === 0
                  ? new AppError('not_found', 'conversation not found')
                  : new AppError('forbidden', 'not a member of this conversation');
              }
              const messageId = randomUUID();
              const [row] = await tx<MessageRow[]>`
                INSERT INTO messages (id, conversation_id, sender_id, sequence, payload, idempotency_key, payload_bytes)
                VALUES (${messageId}, ${conversationId}, ${senderId}, ${conv.last_seq}, ${JSON.stringify(payload)}::text::jsonb, ${key}, ${payloadBytes})
                ON CONFLICT (sender_id, idempotency_key) DO NOTHING
                RETURNING id, conversation_id, sender_id, sequence, payload, created_at, idempotency_key`;
              if (!row) throw new IdempotencyRace();
              const envelope = toEnvelope(row);
              await insertEvent(tx, messageCreatedEvent(envelope), traceId);
              return { envelope, duplicate: false };
            });
          } catch (err) {
            // A retry whose key exists must be answered as a duplicate even if the member check or
            // the conversation changed meanwhile; only then report the original error.
            const raced = err instanceof IdempotencyRace;
            if (raced || (err instanceof AppError && (err.code === 'forbidden' || err.code === 'not_found'))) {
              const dup = await findByKey(senderId, key, conversationId, payload);
              if (dup) return dup;
            }
            // A race whose winner rolled back after blocking ours: retried below.
            throw err;
          }
        };
        try {
          return await retry(attempt, { retries: 2, baseMs: 0, capMs: 0, isRetriable: (err) => err instanceof IdempotencyRace });
        } catch (err) {
          if (!(err instanceof IdempotencyRace)) throw err;
        }
        throw new AppError('unavailable', 'could not settle a concurrent send with the same idempotency key');
      });
    },

    /** Monotonic: returns the stored read sequence and whether it advanced (an event was emitted). */
    async markRead(userId: string, conversationId: string, sequence: number, traceId: string | null) {
      return run('markRead', () =>
        sql.begin(async (tx) => {
          const [conv] = await tx<{ last_seq: number; member: boolean }[]>`
            SELECT last_seq, EXISTS (SELECT 1 FROM members WHERE conversation_id = ${conversationId} AND user_id = ${userId}) AS member
            FROM conversations WHERE id = ${conversationId}`;
          if (!conv) throw new AppError('not_found', 'conversation not found');
          if (!conv.member) throw new AppError('forbidden', 'not a member of this conversation');
          if (sequence > conv.last_seq)
            throw new AppError('invalid_frame', `sequence_number ${sequence} is beyond the conversation's last sequence ${conv.last_seq}`);
          const updated = await tx<{ last_read_sequence: number }[]>`
            INSERT INTO user_conversation_state (user_id, conversation_id, last_read_sequence)
            VALUES (${userId}, ${conversationId}, ${sequence})
            ON CONFLICT (user_id, conversation_id) DO UPDATE SET last_read_sequence = EXCLUDED.last_read_sequence
              WHERE user_conversation_state.last_read_sequence < EXCLUDED.last_read_sequence
            RETURNING last_read_sequence`;
          const advanced = updated.length > 0;
          const read = advanced
            ? sequence
            : (
                await tx<
                  { r: number }[]
                >`SELECT last_read_sequence AS r FROM user_conversation_state WHERE user_id = ${userId} AND conversation_id = ${conversationId}`
              )[0]!.r;
          if (advanced) await insertEvent(tx, readUpdatedEvent(conversationId, userId, read), traceId);
          return { read_sequence: read, advanced };
        }),
      );
    },

    /** Bookkeeping for resume/unread diagnostics; monotonic so late writes never move it back. */
    recordDelivered(userId: string, entries: Array<[conversationId: string, sequence: number]>) {
      if (entries.length === 0) return Promise.resolve();
      return run('recordDelivered', async () => {
        const rows = entries.map(([conversation_id, s]) => ({ user_id: userId, conversation_id, last_delivered_sequence: s }));
        await sql`
          INSERT INTO user_conversation_state ${sql(rows)}
          ON CONFLICT (user_id, conversation_id) DO UPDATE
            SET last_delivered_sequence = GREATEST(user_conversation_state.last_delivered_sequence, EXCLUDED.last_delivered_sequence)`;
      });
    },

    async upsertUser(id: string, name: string | null) {
      await run(
        'upsertUser',
        () =>
          sql`INSERT INTO users (id, name) VALUES (${id}, ${name}) ON CONFLICT (id) DO UPDATE SET name = COALESCE(EXCLUDED.name, users.name)`,
      );
    },

    async ping() {
      await run('ping', () => sql`SELECT 1`);
    },
  };
}
