/**
 * Every database read and write of the gateway. Writes that produce events insert the outbox row in
 * the same transaction as the state change, so an event exists if and only if the change committed.
 */
import { randomUUID } from 'node:crypto';
import { AppError } from '../common/errors.js';
import { isUnavailableError, mapDbError, type Sql, type TxSql } from '../common/db.js';
import type { CircuitBreaker } from '../common/breaker.js';
import { withTimeout } from '../common/timeout.js';
import type { Semaphore } from '../common/semaphore.js';
import type { Envelope } from '../common/protocol.js';
import { membersAddedEvent, readUpdatedEvent, type ChatEvent } from '../common/events.js';
import { insertOutboxEvents, type OutboxMode } from '../common/outbox.js';
import { GroupCommit } from './group-commit.js';
import { SpanKind, noTracing, type Tracing } from '../common/tracing.js';

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

/** One send as the batch statement takes it (short keys: a batch is one JSON parameter). */
interface SendItem {
  c: string;
  s: string;
  k: string;
  p: unknown;
  b: number;
  t: string | null;
}

/** A message row as realchat_send_batch answers it, for the send at `idx`. */
interface SendRow extends Omit<MessageRow, 'id'> {
  idx: number;
  status: 'created' | 'duplicate' | 'conflict' | 'not_member' | 'not_found';
  message_id: string;
}

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
  conversationsOf(userId: string): Promise<Array<{ conversation_id: string; last_seq: number; large: boolean }>>;
  /** The current last sequence of each conversation. */
  lastSequences(conversationIds: string[]): Promise<Array<{ conversation_id: string; last_seq: number }>>;
  /** Catch-up for a connection (no membership check: the delivery path already routed by membership). */
  messagesAfter(conversationId: string, afterSequence: number, limit: number): Promise<Envelope[]>;
  /** A member's page of history, bounded in rows and in bytes. */
  listMessages(userId: string, conversationId: string, afterSequence: number, limit: number, maxBytes?: number): Promise<Page>;
  /**
   * The write path: sequence, message and outbox event in one transaction; idempotent per (sender, key).
   * `traceId`: the request's trace, an incoming W3C traceparent or a new trace id (common/tracing.ts).
   */
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
  /** Past this many members a conversation is a large room (delivered by room interest). */
  largeRoomMembers: number;
  /** Pages of history stop at this many bytes (see selectAfter). */
  maxPageBytes: number;
  outboxMode: OutboxMode;
  /** Bounds request-path database work (see common/semaphore.ts). */
  gate: Semaphore;
  /** PostgreSQL's breaker: while open, request-path work is refused at once (absent: none). */
  breaker?: CircuitBreaker;
  /** Group commit of sends: batch size, concurrent batches, sends allowed to wait. */
  sendBatch: { maxBatch: number; maxInFlight: number; maxQueued: number };
  /** The "send" span of each message (absent: off). */
  tracing?: Tracing;
}

export function createChatStore(deps: ChatStoreDeps): ChatStore {
  const { sql, queryTimeoutMs, maxRoomMembers, largeRoomMembers, maxPageBytes, gate } = deps;
  const tracing = deps.tracing ?? noTracing();

  const sends = new GroupCommit<SendItem, SendRow>({
    ...deps.sendBatch,
    async write(items) {
      const batch = JSON.stringify(items.map((it, i) => ({ ...it, i })));
      const rows = await withTimeout(
        sql<SendRow[]>`SELECT * FROM realchat_send_batch(${batch}::text::jsonb, ${deps.outboxMode})`,
        queryTimeoutMs,
        'send batch',
      );
      const byIndex: SendRow[] = [];
      for (const r of rows) byIndex[r.idx] = r;
      return byIndex;
    },
    // A batch that lost a race for an idempotency key (40001) or a deadlock victim (40P01) is
    // written once more: the key then answers as stored.
    retryOnce: (err) => /^(40P01|40001)$/.test((err as { code?: string }).code ?? ''),
    // The batch statement must not see one (sender, key) twice.
    key: (it) => `${it.s}\u0000${it.k}`,
  });

  const breaker = deps.breaker ?? null;
  /** While the database keeps failing, answer at once instead of each request waiting out its timeout. */
  function admit(): void {
    if (breaker && !breaker.allow())
      throw new AppError('unavailable', 'database unavailable, retry with the same idempotency key', { retryAfterS: 1 });
  }
  /** Only "cannot reach the database" counts against it; a refused request is a database that answered. */
  function outcome(err?: unknown): void {
    if (!breaker) return;
    if (err !== undefined && isUnavailableError(err)) breaker.failure();
    else breaker.success();
  }

  async function run<T>(what: string, fn: () => Promise<T>): Promise<T> {
    admit();
    const slot = gate.tryAcquire();
    if (!slot) throw new AppError('unavailable', 'server busy: too many database operations waiting; retry shortly', { retryAfterS: 1 });
    let abandoned = false;
    let inFlight: Promise<T> | null = null;
    const work = slot.then(async (release) => {
      try {
        // Timed out while waiting for a slot: the caller already answered; do not start the work.
        if (abandoned) throw new AppError('unavailable', 'abandoned');
        inFlight = fn();
        return await inFlight;
      } finally {
        release();
      }
    });
    work.catch(() => {});
    // On timeout a single query is cancelled on the server, so its gate slot frees at once;
    // transactions end at the server's statement_timeout.
    const cancel = () => {
      abandoned = true;
      const q = inFlight as (Promise<T> & { cancel?: () => unknown }) | null;
      if (typeof q?.cancel === 'function') Promise.resolve(q.cancel()).catch(() => {});
    };
    try {
      // The wait for a slot counts toward the timeout: no request waits longer than queryTimeoutMs.
      const value = await withTimeout(work, queryTimeoutMs, what, cancel);
      outcome();
      return value;
    } catch (err) {
      abandoned = true;
      outcome(err);
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

  return {
    membership: (userId: string, conversationId: string) => run('membership', () => membership(userId, conversationId)),

    async createConversation(creator: string, memberIds: string[], title: string | null, traceId: string | null) {
      const all = [...new Set([creator, ...memberIds])];
      if (all.length > maxRoomMembers) throw new AppError('conflict', `a conversation has at most ${maxRoomMembers} members`);
      const id = randomUUID();
      return run('createConversation', () =>
        sql.begin(async (tx) => {
          const large = all.length > largeRoomMembers;
          const [conv] = await tx<{ created_at: Date }[]>`
            INSERT INTO conversations (id, title, created_by, large, member_count) VALUES (${id}, ${title}, ${creator}, ${large}, ${all.length})
            RETURNING created_at`;
          await tx`INSERT INTO members ${tx(all.map((u) => ({ conversation_id: id, user_id: u })))}`;
          await tx`INSERT INTO user_conversation_state ${tx(all.map((u) => ({ conversation_id: id, user_id: u })))}`;
          await insertEvent(tx, membersAddedEvent(id, all, creator, 0, large), traceId);
          return { conversation_id: id, title, member_ids: all, last_sequence: 0, created_at: conv!.created_at.toISOString() };
        }),
      );
    },

    async addMembers(actor: string, conversationId: string, userIds: string[], traceId: string | null) {
      return run('addMembers', () =>
        sql.begin(async (tx) => {
          // Locking the conversation row orders this event against concurrent sends in the stream:
          // last_sequence is exactly the sequence the new members start after.
          const [conv] = await tx<{ last_seq: number; large: boolean; member_count: number; actor_is_member: boolean }[]>`
            SELECT last_seq, large, member_count,
                   EXISTS (SELECT 1 FROM members WHERE conversation_id = ${conversationId} AND user_id = ${actor}) AS actor_is_member
            FROM conversations WHERE id = ${conversationId} FOR UPDATE`;
          if (!conv) throw new AppError('not_found', 'conversation not found');
          if (!conv.actor_is_member) throw new AppError('forbidden', 'not a member of this conversation');
          const present = new Set(
            (
              await tx<{ user_id: string }[]>`
                SELECT user_id FROM members WHERE conversation_id = ${conversationId} AND user_id = ANY(${userIds}::uuid[])`
            ).map((r) => r.user_id),
          );
          const added = userIds.filter((u) => !present.has(u));
          const count = conv.member_count + added.length;
          if (count > maxRoomMembers) throw new AppError('conflict', `a conversation has at most ${maxRoomMembers} members`);
          if (added.length > 0) {
            const large = conv.large || count > largeRoomMembers;
            await tx`INSERT INTO members ${tx(added.map((u) => ({ conversation_id: conversationId, user_id: u })))}`;
            await tx`INSERT INTO user_conversation_state ${tx(added.map((u) => ({ conversation_id: conversationId, user_id: u })))} ON CONFLICT DO NOTHING`;
            await tx`UPDATE conversations SET updated_at = date_trunc('milliseconds', clock_timestamp()), large = ${large}, member_count = ${count}
                     WHERE id = ${conversationId}`;
            await insertEvent(tx, membersAddedEvent(conversationId, added, actor, conv.last_seq, large), traceId);
          }
          return { conversation_id: conversationId, added_user_ids: added, member_count: count, last_sequence: conv.last_seq };
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
          sql<{ conversation_id: string; last_seq: number; large: boolean }[]>`
          SELECT m.conversation_id, c.last_seq, c.large FROM members m JOIN conversations c ON c.id = m.conversation_id
          WHERE m.user_id = ${userId}`,
      );
    },

    lastSequences(conversationIds: string[]) {
      return run(
        'lastSequences',
        () =>
          sql<{ conversation_id: string; last_seq: number }[]>`
          SELECT id AS conversation_id, last_seq FROM conversations WHERE id = ANY(${conversationIds}::uuid[])`,
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
     * The write path, group-committed (gateway/group-commit.ts, sql/migrations/0004_send_batch.sql):
     * sequence, message and outbox event in one transaction per batch, idempotent per (sender, key),
     * each send answered on its own.
     */
    async sendMessage(senderId, conversationId, key, payload, payloadBytes, traceId) {
      admit();
      // The outbox row carries the send span's context (tracing off: the request's trace as given).
      const span = tracing.enabled ? tracing.start('send', traceId, SpanKind.SERVER, { 'realchat.conversation_id': conversationId }) : null;
      const t = span ? span.traceparent : traceId;
      const { result, abandon } = sends.submit({ c: conversationId, s: senderId, k: key, p: payload, b: payloadBytes, t });
      let row: SendRow;
      try {
        // The wait for a batch counts toward the timeout: no send waits longer than queryTimeoutMs.
        row = await withTimeout(result, queryTimeoutMs, 'sendMessage');
        outcome();
      } catch (err) {
        outcome(err);
        abandon();
        span?.end(err);
        throw mapDbError(err);
      }
      if (span) {
        if (row.sequence !== null) span.set('realchat.sequence', Number(row.sequence));
        span.end(row.status === 'created' || row.status === 'duplicate' ? undefined : row.status);
      }
      switch (row.status) {
        case 'created':
        case 'duplicate':
          // A new message's payload is the one sent (the statement returns stored payloads only).
          return {
            envelope: toEnvelope({ ...row, id: row.message_id, payload: row.status === 'created' ? payload : row.payload }),
            duplicate: row.status === 'duplicate',
          };
        case 'conflict':
          throw new AppError('conflict', 'idempotency_key was already used for a different conversation or payload');
        case 'not_member':
          throw new AppError('forbidden', 'not a member of this conversation');
        case 'not_found':
          throw new AppError('not_found', 'conversation not found');
      }
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
