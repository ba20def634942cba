/**
 * Every database read and write of the gateway. Writes that produce events insert the outbox row in
 * the same transaction as the state change, so an event exists if and only if the change committed.
 */
import { randomUUID } from 'node:crypto';
import { AppError, HomeElsewhereError, OverloadError } from '../common/errors.js';
import { HOME_FENCE_SQLSTATE, isUnavailableError, mapDbError, type Sql, type TxSql } from '../common/db.js';
import type { CircuitBreaker } from '../common/breaker.js';
import { cancellableNow, cancelQuietly, withTimeout } from '../common/timeout.js';
import { LruMap } from '../common/lru.js';
import type { Semaphore } from '../common/semaphore.js';
import type { Envelope } from '../common/protocol.js';
import { UNREAD_CAP, type EntryKind, type MemberSummary, type UserSummary } from '../common/wire.js';
import { createTimelineWrites, type EntryResult, type MembersChanged, type RoleSet } from './timeline-writes.js';
import { membersAddedEvent, readUpdatedEvent, type ChatEvent } from '../common/events.js';
import { insertOutboxEvents, type OutboxMode } from '../common/outbox.js';
import { GroupCommit } from './group-commit.js';
import { batchReads } from './batched-reads.js';
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
  /** Absent on rows the send batch answers (always plain messages). */
  kind?: EntryKind;
  ref_message_id?: string | null;
  edited_at?: Date | null;
  deleted_at?: Date | null;
}

/** The same fields as realchat_envelope() (0008_timeline.sql): what does not apply is absent. */
export function toEnvelope(r: MessageRow): Envelope {
  const env: Envelope = {
    message_id: r.id,
    conversation_id: r.conversation_id,
    sender_id: r.sender_id,
    sequence_number: r.sequence,
    payload: r.payload,
    created_at: r.created_at.toISOString(),
    idempotency_key: r.idempotency_key,
  };
  if (r.kind && r.kind !== 'message') env.kind = r.kind;
  if (r.ref_message_id) env.ref_message_id = r.ref_message_id;
  if (r.edited_at) env.edited_at = r.edited_at.toISOString();
  if (r.deleted_at) env.deleted = true;
  return env;
}

/** The message columns toEnvelope reads. */
const ENTRY_COLUMNS =
  'id, conversation_id, sender_id, sequence, payload, created_at, idempotency_key, kind, ref_message_id, edited_at, deleted_at';

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
  /** Entries beyond the page exist (after it, or before it for a page read backwards). */
  has_more: boolean;
}

/** Where a page of history starts: after a sequence (forwards), or just below one (backwards). */
export type PageFrom = { after: number } | { before: number };

/**
 * The gateway's contract with its database. Errors are AppError with the contract's codes:
 * `not_found` / `forbidden` for conversations, `conflict` for a reused idempotency key,
 * `unavailable` when the database is unreachable, slow, or its request queue is full.
 */
export interface ChatStore {
  membership(userId: string, conversationId: string): Promise<Membership>;
  /**
   * With `key` (Idempotency-Key), a repeat answers the conversation it created (`duplicate`).
   * `home`: the region to create it in; another region's name is refused here with
   * HomeElsewhereError (withRegionForwarding creates it there).
   */
  createConversation(
    creator: string,
    memberIds: string[],
    title: string | null,
    traceId: string | null,
    key?: string | null,
    home?: string | null,
  ): Promise<ConversationCreated & { duplicate: boolean }>;
  addMembers(
    actor: string,
    conversationId: string,
    userIds: string[],
    traceId: string | null,
    key?: string | null,
  ): Promise<MembersAddedResult>;
  /** Leave (userId = actor) or remove (gateway/timeline-writes.ts has the rules). */
  removeMember(actor: string, conversationId: string, userId: string, traceId: string | null, key: string | null): Promise<MembersChanged>;
  setRole(
    actor: string,
    conversationId: string,
    userId: string,
    role: 'admin' | 'member',
    traceId: string | null,
    key: string | null,
  ): Promise<RoleSet>;
  setWhoCanAdd(actor: string, conversationId: string, whoCanAdd: 'members' | 'admins'): Promise<void>;
  editMessage(
    actor: string,
    conversationId: string,
    messageId: string,
    key: string,
    payload: unknown,
    payloadBytes: number,
    traceId: string | null,
  ): Promise<EntryResult>;
  deleteMessage(actor: string, conversationId: string, messageId: string, key: string, traceId: string | null): Promise<EntryResult>;
  /** Members with their roles and receipts, by user id after `after` (members only). */
  listMembers(
    actor: string,
    conversationId: string,
    after: string | null,
    limit: number,
  ): Promise<{ members: MemberSummary[]; has_more: boolean }>;
  setUserName(id: string, name: string): Promise<UserSummary>;
  /**
   * A token's `name` claim names a user who has no name yet (a name set with PUT /v1/users/me
   * wins). Remembered per node, so reconnects do not write again; best effort (never throws).
   */
  noteTokenName(id: string, name: string): Promise<void>;
  getUser(id: string): Promise<UserSummary>;
  /** Users whose name starts with `query` (case-insensitive), by name. */
  searchUsers(query: string, limit: number): Promise<UserSummary[]>;
  listConversations(userId: string, limit: number): Promise<{ conversations: ConversationSummary[]; has_more: boolean }>;
  /** For hello: every conversation of the user with its current last sequence. */
  conversationsOf(userId: string): Promise<Array<{ conversation_id: string; last_seq: number; large: boolean }>>;
  /** The current last sequence of each conversation. */
  lastSequences(conversationIds: string[]): Promise<Array<{ conversation_id: string; last_seq: number }>>;
  /**
   * For hello after a regional failover: of the resumed positions (with the message id the client
   * saw there), those past the point where this region took the conversation over whose entry is
   * not that message here (a position in the lost home's numbering): conversation -> takeover point.
   */
  failoverRewinds(positions: ReadonlyMap<string, number>, lastIds: ReadonlyMap<string, string>): Promise<Map<string, number>>;
  /** Catch-up for a connection (no membership check: the delivery path already routed by membership). */
  messagesAfter(conversationId: string, afterSequence: number, limit: number): Promise<Envelope[]>;
  /** A member's page of history, bounded in rows and in bytes, ascending either way. */
  listMessages(userId: string, conversationId: string, from: PageFrom, limit: number, maxBytes?: number): Promise<Page>;
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
  /** Presence for clients: those of `others` who share a conversation with `userId` (the user itself included). */
  sharedWith(userId: string, others: readonly string[]): Promise<Set<string>>;
  /** Presence for clients: the user's last connection here closed now (database clock; monotonic). Returns the stored time. */
  recordLastSeen(userId: string): Promise<string>;
  /** Presence for clients: each user's last_seen_at and its age on the database clock (users never seen are absent). */
  lastSeen(userIds: readonly string[]): Promise<Map<string, { lastSeenAt: string; ageMs: number }>>;
}

export interface ConversationCreated {
  conversation_id: string;
  title: string | null;
  member_ids: string[];
  last_sequence: number;
  created_at: string;
  /** The region that numbers its entries (docs/multi-region.md), and how often it was re-homed. */
  home_region: string;
  home_epoch: number;
}

export interface MembersAddedResult {
  conversation_id: string;
  added_user_ids: string[];
  member_count: number;
  /** The conversation's last sequence after the add: its `members_added` entry's when one was written. */
  last_sequence: number;
  duplicate: boolean;
}

export type { EntryResult, MembersChanged, RoleSet };

export interface ChatStoreDeps {
  sql: Sql;
  /** This deployment's region (REALCHAT_REGION): the home of what is created here. Default `default`. */
  region?: string;
  queryTimeoutMs: number;
  maxRoomMembers: number;
  /** Past this many members a conversation is a large room (delivered by room interest). */
  largeRoomMembers: number;
  /** Pages of history stop at this many bytes (see selectPage). */
  maxPageBytes: number;
  outboxMode: OutboxMode;
  /** Bounds request-path database work (see common/semaphore.ts). */
  gate: Semaphore;
  /** PostgreSQL's breaker: while open, request-path work is refused at once (absent: none). */
  breaker?: CircuitBreaker;
  /** Group commit of sends: batch size, concurrent batches, sends allowed to wait. */
  sendBatch: { maxBatch: number; maxInFlight: number; maxQueued: number; extraWriterAt?: number };
  /** The "send" span of each message (absent: off). */
  tracing?: Tracing;
}

export function createChatStore(deps: ChatStoreDeps): ChatStore {
  const { sql, queryTimeoutMs, maxRoomMembers, largeRoomMembers, maxPageBytes, gate } = deps;
  const region = deps.region ?? 'default';
  /** A stored home: NULL is this region (sql/migrations/0013_regions.sql). */
  const homeOf = (stored: string | null) => stored ?? region;
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
      // An acknowledgement must answer its own send: a driver that handed this batch another
      // statement's rows (common/timeout.ts, cancellableNow) would otherwise acknowledge sends
      // that were never stored. The outcome is then unknown: the client retries with the same key.
      items.forEach((it, i) => {
        const r = byIndex[i];
        if (r?.idempotency_key !== it.k || r.sender_id.toLowerCase() !== it.s.toLowerCase())
          throw new AppError('internal', 'the database answered a different request; retry with the same idempotency key', {
            retryAfterS: 1,
          });
      });
      return byIndex;
    },
    // A batch that lost a race for an idempotency key (40001) or a deadlock victim (40P01) is
    // written once more: the key then answers as stored.
    retryOnce: (err) => /^(40P01|40001)$/.test((err as { code?: string }).code ?? ''),
    // A conversation homed in another region fails the whole statement (its fence, RCH01): the
    // other sends of the batch are written without it.
    splitOn: (err) => (err as { code?: string }).code === HOME_FENCE_SQLSTATE,
    // The batch statement must not see one (sender, key) twice.
    key: (it) => `${it.s}\u0000${it.k}`,
  });

  const breaker = deps.breaker ?? null;
  /** While the database keeps failing, answer at once instead of each request waiting out its timeout. */
  function admit(): void {
    if (breaker && !breaker.allow())
      throw new AppError(
        'unavailable',
        'database unavailable (refused at once while it keeps failing), retry with the same idempotency key',
        {
          retryAfterS: 1,
        },
      );
  }
  /** Only "cannot reach the database" counts against it; a refused request is a database that answered. */
  function outcome(err?: unknown): void {
    if (!breaker) return;
    if (err !== undefined && isUnavailableError(err)) breaker.failure();
    else breaker.success();
  }

  type MemberOf = { conversation_id: string; last_seq: number; large: boolean };
  // Every hello reads its user's conversations: batched, a reconnect storm costs one query (and
  // one gate slot) per batch instead of one per connection (gateway/batched-reads.ts).
  const conversationsOfUsers = batchReads<string, MemberOf[]>(
    async (userIds) => {
      const rows = await run(
        'conversationsOf',
        () =>
          sql<(MemberOf & { user_id: string })[]>`
          SELECT m.user_id, m.conversation_id, c.last_seq, c.large FROM members m JOIN conversations c ON c.id = m.conversation_id
          WHERE m.user_id = ANY(${userIds}::uuid[])`,
      );
      const byUser = new Map<string, MemberOf[]>();
      for (const { user_id, ...r } of rows) {
        const list = byUser.get(user_id);
        if (list) list.push(r);
        else byUser.set(user_id, [r]);
      }
      return byUser;
    },
    () => [],
    {
      maxBatch: 500,
      maxInFlight: 2,
      maxWaiting: 20_000,
      onOverflow: () => new AppError('unavailable', 'server busy: too many connections starting; retry shortly', { retryAfterS: 1 }),
    },
  );

  const busy = (what: string) => () =>
    new AppError('unavailable', `server busy: too many ${what} waiting; retry shortly`, { retryAfterS: 1 });
  // A reconnect storm closes every connection of a node at once: each user's last close writes
  // last_seen_at, and one statement (and one gate slot) each overflowed the gate, so hellos arriving
  // meanwhile were refused `unavailable`. Batched like the hellos' reads (a write never joins a
  // batch already sent, so the stored time is never from before the close). Sorted, so two nodes'
  // batches lock the same users' rows in one order.
  const lastSeenWrites = batchReads<string, string | null>(
    async (userIds) => {
      const rows = await run(
        'recordLastSeen',
        () =>
          sql<{ id: string; t: Date }[]>`
          INSERT INTO users (id, last_seen_at)
          SELECT id, date_trunc('milliseconds', clock_timestamp()) FROM unnest(${userIds.sort()}::uuid[]) AS u(id)
          ON CONFLICT (id) DO UPDATE SET last_seen_at = GREATEST(users.last_seen_at, EXCLUDED.last_seen_at)
          RETURNING id, last_seen_at AS t`,
      );
      return new Map(rows.map((r) => [r.id, r.t.toISOString()]));
    },
    () => null,
    {
      maxBatch: 1000,
      maxInFlight: 1,
      maxWaiting: 20_000,
      onOverflow: busy('last-seen writes'),
    },
  );
  // The same storm's closes also record how far each connection got in each conversation: one
  // entry per (user, conversation, sequence), so two closes of one pair in a batch both count;
  // the batch writes the highest.
  const deliveredWrites = batchReads<string, true>(
    async (entries) => {
      const highest = new Map<string, number>();
      for (const e of entries) {
        const cut = e.lastIndexOf(' ');
        const pair = e.slice(0, cut);
        const seq = Number(e.slice(cut + 1));
        if (seq > (highest.get(pair) ?? -1)) highest.set(pair, seq);
      }
      const rows = [...highest]
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
        .map(([pair, s]) => {
          const [user_id, conversation_id] = pair.split(' ');
          return { user_id: user_id!, conversation_id: conversation_id!, last_delivered_sequence: s };
        });
      await run(
        'recordDelivered',
        () => sql`
          INSERT INTO user_conversation_state ${sql(rows)}
          ON CONFLICT (user_id, conversation_id) DO UPDATE
            SET last_delivered_sequence = GREATEST(user_conversation_state.last_delivered_sequence, EXCLUDED.last_delivered_sequence)`,
      );
      return new Map();
    },
    () => true,
    {
      maxBatch: 1000,
      maxInFlight: 1,
      maxWaiting: 50_000,
      onOverflow: busy('delivery positions'),
    },
  );
  type LastSeen = { lastSeenAt: string; ageMs: number };
  // The same storm, a grace period later: every user still away is looked up once more.
  const lastSeenReads = batchReads<string, LastSeen | null>(
    async (userIds) => {
      const rows = await run(
        'lastSeen',
        () =>
          sql<{ id: string; t: Date; age_ms: number }[]>`
          SELECT id, last_seen_at AS t, (extract(epoch FROM clock_timestamp() - last_seen_at) * 1000)::float8 AS age_ms
          FROM users WHERE id = ANY(${userIds}::uuid[]) AND last_seen_at IS NOT NULL`,
      );
      return new Map(rows.map((r) => [r.id, { lastSeenAt: r.t.toISOString(), ageMs: Number(r.age_ms) }]));
    },
    () => null,
    {
      maxBatch: 1000,
      maxInFlight: 2,
      maxWaiting: 20_000,
      onOverflow: busy('last-seen reads'),
    },
  );

  /**
   * Whether this region has any re-homing recorded: almost every deployment has none, and a
   * reconnect storm's hellos then cost no query for it. "None" is asked again after a second (a
   * failover's clients reconnect right after it), one ask shared by the hellos meanwhile; "some"
   * stays (re-homings are never deleted).
   */
  let failoversSeen = false;
  let lastAsk: { at: number; answer: Promise<boolean> } | null = null;
  function anyFailovers(): Promise<boolean> {
    if (failoversSeen) return Promise.resolve(true);
    const now = performance.now();
    if (!lastAsk || now - lastAsk.at > 1000) {
      const answer = run('anyFailovers', async () => {
        const [row] = await sql<{ any: boolean }[]>`SELECT EXISTS (SELECT 1 FROM region_failovers) AS any`;
        failoversSeen ||= row!.any;
        return failoversSeen;
      });
      // A failed ask is asked again next time.
      answer.catch(() => (lastAsk = null));
      lastAsk = { at: now, answer };
    }
    return lastAsk.answer;
  }

  async function run<T>(what: string, fn: () => Promise<T>): Promise<T> {
    admit();
    const slot = gate.tryAcquire();
    if (!slot) throw new OverloadError('server busy: too many database operations waiting; retry shortly');
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
    // On timeout a single query is cancelled on the server, so its gate slot frees at once (unless
    // it waits behind another on its connection: cancellableNow); transactions end at the server's
    // statement_timeout.
    const cancel = () => {
      abandoned = true;
      if (cancellableNow(inFlight)) cancelQuietly(inFlight);
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
  const timeline = createTimelineWrites(deps.outboxMode);
  /** Users whose token name this node already recorded (noteTokenName). */
  const namedByToken = new LruMap<string, string>(10_000);

  /**
   * A timeline write in its own transaction. Two requests of one (actor, key) in different
   * conversations can race past the stored-key check; the loser's insert then fails on the unique
   * key, and one more try answers it as stored (`conflict`).
   */
  function change<T>(what: string, fn: (tx: TxSql) => Promise<T>): Promise<T> {
    return run(what, async () => {
      const once = () => sql.begin(fn) as Promise<T>;
      try {
        return await once();
      } catch (err) {
        if ((err as { constraint_name?: string }).constraint_name !== 'messages_sender_idempotency') throw err;
        return once();
      }
    });
  }

  async function membership(userId: string, conversationId: string): Promise<Membership> {
    const rows = await sql<{ member: boolean }[]>`
      SELECT EXISTS (SELECT 1 FROM members m WHERE m.conversation_id = c.id AND m.user_id = ${userId}) AS member
      FROM conversations c WHERE c.id = ${conversationId}`;
    if (rows.length === 0) return 'not_found';
    return rows[0]!.member ? 'member' : 'not_member';
  }

  /**
   * Up to `limit` entries after a sequence, or (backwards) just below one, ascending either way,
   * also bounded in bytes: the page stops once the payloads (as stored) pass `maxPageBytes`,
   * counted from the bound (a backwards page keeps the entries nearest it), but always holds at
   * least one entry. `has_more`: entries beyond the page exist (after it, or before it).
   */
  async function selectPage(conversationId: string, from: PageFrom, limit: number, maxBytes = maxPageBytes): Promise<Page> {
    const backwards = 'before' in from;
    const bound = backwards ? sql`sequence < ${from.before}` : sql`sequence > ${from.after}`;
    const order = sql.unsafe(backwards ? 'sequence DESC' : 'sequence');
    const rows = await sql<(MessageRow & { fetched: number })[]>`
      SELECT ${sql.unsafe(ENTRY_COLUMNS)}, fetched FROM (
        SELECT w.*, sum(w.size) OVER (ORDER BY ${order}) AS running, count(*) OVER () AS fetched FROM (
          SELECT ${sql.unsafe(ENTRY_COLUMNS)},
                 COALESCE(payload_bytes, octet_length(payload::text)) + ${ENVELOPE_OVERHEAD_BYTES} AS size
          FROM messages WHERE conversation_id = ${conversationId} AND ${bound}
          ORDER BY ${order} LIMIT ${limit + 1}) w) p
      WHERE running - size < ${maxBytes}
      ORDER BY ${order}`;
    const fetched = rows[0]?.fetched ?? 0;
    const page = rows.slice(0, limit);
    if (backwards) page.reverse();
    return { messages: page.map(toEnvelope), has_more: fetched > page.length };
  }

  async function requireMember(userId: string, conversationId: string): Promise<void> {
    const m = await membership(userId, conversationId);
    if (m === 'not_found') throw new AppError('not_found', 'conversation not found');
    if (m === 'not_member') throw new AppError('forbidden', 'not a member of this conversation');
  }

  return {
    membership: (userId: string, conversationId: string) => run('membership', () => membership(userId, conversationId)),

    async createConversation(
      creator: string,
      memberIds: string[],
      title: string | null,
      traceId: string | null,
      key: string | null = null,
      home: string | null = null,
    ) {
      if (home !== null && home !== region) throw new HomeElsewhereError(home);
      const all = [...new Set([creator, ...memberIds])];
      if (all.length > maxRoomMembers) throw new AppError('conflict', `a conversation has at most ${maxRoomMembers} members`);
      const id = randomUUID();
      return run('createConversation', () =>
        sql.begin(async (tx) => {
          const large = all.length > largeRoomMembers;
          const [conv] = await tx<{ created_at: Date }[]>`
            INSERT INTO conversations (id, title, created_by, large, member_count, create_key)
            VALUES (${id}, ${title}, ${creator}, ${large}, ${all.length}, ${key})
            ON CONFLICT (created_by, create_key) WHERE create_key IS NOT NULL DO NOTHING
            RETURNING created_at`;
          if (!conv) {
            // The key created one already: answer it (its members and sequence as they are now).
            const [prior] = await tx<(Omit<ConversationCreated, 'created_at'> & { created_at: Date })[]>`
              SELECT c.id AS conversation_id, c.title, c.last_seq AS last_sequence, c.created_at, c.home_region, c.home_epoch,
                     ARRAY(SELECT m.user_id FROM members m WHERE m.conversation_id = c.id ORDER BY m.added_at, m.user_id LIMIT ${maxRoomMembers}) AS member_ids
              FROM conversations c WHERE c.created_by = ${creator} AND c.create_key = ${key}`;
            return { ...prior!, created_at: prior!.created_at.toISOString(), home_region: homeOf(prior!.home_region), duplicate: true };
          }
          const rows = all.map((u) => ({ conversation_id: id, user_id: u, role: u === creator ? 'owner' : 'member' }));
          await tx`INSERT INTO members ${tx(rows)}`;
          await tx`INSERT INTO user_conversation_state ${tx(all.map((u) => ({ conversation_id: id, user_id: u })))}`;
          const createdAt = conv.created_at.toISOString();
          const attributes = { title, created_by: creator, created_at: createdAt, who_can_add: 'members' as const, home_region: region };
          await insertEvent(tx, membersAddedEvent(id, all, creator, 0, large, attributes), traceId);
          return {
            conversation_id: id,
            title,
            member_ids: all,
            last_sequence: 0,
            created_at: createdAt,
            home_region: region,
            home_epoch: 0,
            duplicate: false,
          };
        }),
      );
    },

    async addMembers(actor: string, conversationId: string, userIds: string[], traceId: string | null, key: string | null = null) {
      const r = await change('addMembers', (tx) =>
        timeline.addMembers(tx, { conversationId, actor, userIds, key, maxRoomMembers, largeRoomMembers }, traceId),
      );
      return {
        conversation_id: r.conversation_id,
        added_user_ids: r.user_ids,
        member_count: r.member_count,
        last_sequence: r.last_sequence,
        duplicate: r.duplicate,
      };
    },

    removeMember(actor, conversationId, userId, traceId, key) {
      return change('removeMember', (tx) => timeline.removeMember(tx, { conversationId, actor, userId, key }, traceId));
    },

    setRole(actor, conversationId, userId, role, traceId, key) {
      return change('setRole', (tx) => timeline.setRole(tx, { conversationId, actor, userId, role, key }, traceId));
    },

    setWhoCanAdd(actor, conversationId, whoCanAdd) {
      return change('setWhoCanAdd', (tx) => timeline.setWhoCanAdd(tx, { conversationId, actor, whoCanAdd }));
    },

    editMessage(actor, conversationId, messageId, key, payload, payloadBytes, traceId) {
      return change('editMessage', (tx) => timeline.edit(tx, { conversationId, actor, messageId, key, payload, payloadBytes }, traceId));
    },

    deleteMessage(actor, conversationId, messageId, key, traceId) {
      return change('deleteMessage', (tx) => timeline.delete(tx, { conversationId, actor, messageId, key }, traceId));
    },

    listMembers(actor, conversationId, after, limit) {
      return run('listMembers', async () => {
        await requireMember(actor, conversationId);
        const rows = await sql<MemberSummary[]>`
          SELECT m.user_id, u.name, m.role, COALESCE(s.last_read_sequence, 0) AS read_sequence,
                 COALESCE(s.last_delivered_sequence, 0) AS delivered_sequence
          FROM members m
          LEFT JOIN users u ON u.id = m.user_id
          LEFT JOIN user_conversation_state s ON s.user_id = m.user_id AND s.conversation_id = m.conversation_id
          WHERE m.conversation_id = ${conversationId} ${after ? sql`AND m.user_id > ${after}` : sql``}
          ORDER BY m.user_id LIMIT ${limit + 1}`;
        return { members: rows.slice(0, limit).map((r) => ({ ...r })), has_more: rows.length > limit };
      });
    },

    async noteTokenName(id, name) {
      if (namedByToken.get(id) === name) return;
      try {
        await run(
          'noteTokenName',
          () =>
            sql`INSERT INTO users (id, name) VALUES (${id}, ${name}) ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name WHERE users.name IS NULL`,
        );
        namedByToken.set(id, name);
      } catch {
        // A name is cosmetic: the request it rides on goes on without it.
      }
    },

    setUserName(id, name) {
      return run('setUserName', async () => {
        await sql`INSERT INTO users (id, name) VALUES (${id}, ${name}) ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name`;
        return { user_id: id, name };
      });
    },

    getUser(id) {
      return run('getUser', async () => {
        const [u] = await sql<UserSummary[]>`SELECT id AS user_id, name FROM users WHERE id = ${id}`;
        if (!u) throw new AppError('not_found', 'user not found');
        return { ...u };
      });
    },

    searchUsers(query, limit) {
      // LIKE's own characters in the query match themselves.
      const prefix = `${query.toLowerCase().replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
      return run('searchUsers', async () =>
        (
          await sql<UserSummary[]>`
            SELECT id AS user_id, name FROM users WHERE lower(name) LIKE ${prefix}
            ORDER BY lower(name), id LIMIT ${limit}`
        ).map((u) => ({ ...u })),
      );
    },

    listConversations(userId: string, limit: number) {
      return run('listConversations', async () => {
        // unread: others' plain messages after the read mark, not deleted, counted up to UNREAD_CAP
        // (the (conversation_id, sequence) index walks exactly those entries).
        const rows = await sql<(Omit<ConversationSummary, 'home_region'> & { home_region: string | null; updated_at: Date })[]>`
          SELECT c.id AS conversation_id, c.title, c.last_seq AS last_sequence, m.role, c.home_region, c.home_epoch,
                 COALESCE(s.last_read_sequence, 0) AS read_sequence, c.updated_at,
                 (SELECT count(*)::int FROM (
                    SELECT 1 FROM messages x
                    WHERE x.conversation_id = c.id AND x.sequence > COALESCE(s.last_read_sequence, 0)
                      AND x.kind = 'message' AND x.sender_id <> m.user_id AND x.deleted_at IS NULL
                    LIMIT ${UNREAD_CAP}) u) AS unread
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
          unread: r.unread,
          role: r.role,
          home_region: homeOf(r.home_region),
          home_epoch: r.home_epoch,
        }));
        return { conversations, has_more };
      });
    },

    /** For hello: every conversation of the user with its current last sequence. */
    conversationsOf(userId: string) {
      return conversationsOfUsers.read(userId);
    },

    lastSequences(conversationIds: string[]) {
      return run(
        'lastSequences',
        () =>
          sql<{ conversation_id: string; last_seq: number }[]>`
          SELECT id AS conversation_id, last_seq FROM conversations WHERE id = ANY(${conversationIds}::uuid[])`,
      );
    },

    async failoverRewinds(positions: ReadonlyMap<string, number>, lastIds: ReadonlyMap<string, string>) {
      const convs = [...positions.keys()].filter((c) => lastIds.has(c) && positions.get(c)! > 0);
      if (convs.length === 0 || !(await anyFailovers())) return new Map<string, number>();
      const rows = await run(
        'failoverRewinds',
        () =>
          sql<{ conversation_id: string; takeover_seq: string }[]>`
          SELECT r.conv::text AS conversation_id, f.takeover_seq
          FROM unnest(${convs}::uuid[], ${convs.map((c) => positions.get(c)!)}::bigint[], ${convs.map((c) => lastIds.get(c)!)}::uuid[])
            AS r(conv, seq, id)
          JOIN LATERAL (
            SELECT takeover_seq FROM region_failovers WHERE conversation_id = r.conv ORDER BY home_epoch DESC LIMIT 1
          ) f ON r.seq > f.takeover_seq
          WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = r.conv AND m.sequence = r.seq AND m.id = r.id)`,
      );
      return new Map(rows.map((r) => [r.conversation_id, Number(r.takeover_seq)]));
    },

    /** No membership check: callers are the delivery path, which already routed by membership. */
    messagesAfter(conversationId: string, afterSequence: number, limit: number) {
      return run('messagesAfter', async () => (await selectPage(conversationId, { after: afterSequence }, limit)).messages);
    },

    async listMessages(userId: string, conversationId: string, from: PageFrom, limit: number, maxBytes = maxPageBytes) {
      return run('listMessages', async () => {
        await requireMember(userId, conversationId);
        return selectPage(conversationId, from, limit, maxBytes);
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
    async recordDelivered(userId: string, entries: Array<[conversationId: string, sequence: number]>) {
      await deliveredWrites.readMany(entries.map(([conversationId, seq]) => `${userId} ${conversationId} ${seq}`));
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

    sharedWith(userId, others) {
      if (others.length === 0) return Promise.resolve(new Set<string>());
      // Per asked user one EXISTS: the caller's conversations (members_by_user), then the primary
      // key for the other user in each; never a scan of a large room's member list.
      return run('sharedWith', async () => {
        const rows = await sql<{ id: string }[]>`
          SELECT u.id FROM unnest(${others as string[]}::uuid[]) AS u(id)
          WHERE u.id = ${userId}
             OR EXISTS (SELECT 1 FROM members a JOIN members b ON b.conversation_id = a.conversation_id AND b.user_id = u.id
                        WHERE a.user_id = ${userId})`;
        return new Set(rows.map((r) => r.id));
      });
    },

    async recordLastSeen(userId) {
      const t = await lastSeenWrites.read(userId);
      // An upsert returns every row it was given.
      if (t === null) throw new AppError('internal', 'last_seen_at not returned');
      return t;
    },

    async lastSeen(userIds) {
      const out = new Map<string, LastSeen>();
      const found = await lastSeenReads.readMany(userIds);
      userIds.forEach((id, i) => {
        if (found[i]) out.set(id, found[i]);
      });
      return out;
    },
  };
}
