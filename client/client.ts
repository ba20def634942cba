/**
 * RealChatClient: one logical connection to RealChat that survives network failures.
 *
 *  - connect + hello (session.ts); reconnect with exponential backoff and full jitter, honouring
 *    `reconnect.retry_after_ms` and close codes (4000-4499 reconnect, 4500+ stop): the rules are
 *    reconnect-policy.ts, this class applies its decisions;
 *  - resume from the last delivered sequence per conversation; gap detection (streams.ts) and
 *    `sync` to fill the gap (gap-fill.ts); dedup by sequence; `message` events in sequence order
 *    per conversation;
 *  - sends with an idempotency key each, retried with the same key, resolving with the ack (send-queue.ts);
 *  - typing, read receipts, connection state events; bounded queues and a timeout on every wait;
 *  - v1.1: typed timeline entries (entries.ts), edits and deletes over the socket (retried like
 *    sends), a local view of messages that applies them (view.ts), leaving and removing members,
 *    roles, member lists, history before a sequence and user lookups (REST, rest.ts). A removal of
 *    this user ends the conversation here: no resume, no gap fill, a `removed` event.
 */
import { PresenceSubscriptions } from './presence.js';
import { LruMap } from '../common/lru.js';
import { withTimeout } from '../common/timeout.js';
import { Emitter } from './emitter.js';
import { RealChatError } from './errors.js';
import { GapFill } from './gap-fill.js';
import {
  afterWelcome,
  decideAfterClose,
  decideNextAttempt,
  initialReconnectState,
  withRetryAfter,
  type Reconnect,
  type ReconnectPolicyOptions,
  type ReconnectState,
} from './reconnect-policy.js';
import { toEntry, type DeleteEntry, type EditEntry, type MembersRemovedEntry, type TimelineEntry } from './entries.js';
import { ConvRequests } from './requests.js';
import { RestClient, type MembersPage, type RemovedMembers, type RestOptions, type RoleSet } from './rest.js';
import { SendQueue, type WriteOp } from './send-queue.js';
import { Session } from './session.js';
import { ConversationStreams } from './streams.js';
import type {
  Ack,
  Envelope,
  MessagesPage,
  Receipt,
  Rewind,
  ServerFrame,
  Synced,
  Typing,
  UserSummary,
  Via,
  Welcome,
  WebSocketConstructor,
  Presence,
} from './types.js';
import { MessageView } from './view.js';

type Timer = ReturnType<typeof setTimeout>;

export type ConnectionState = 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'offline' | 'closed';

export interface StateChange {
  state: ConnectionState;
  /** Failed attempts since the last welcome. */
  attempt: number;
  /** Milliseconds until the next attempt, when one is scheduled. */
  retryInMs?: number;
  /** Why the connection was lost or closed. */
  reason?: string;
  /** Set when the client stopped for good (state 'closed' after a 4500+ close code). */
  error?: RealChatError;
}

/** How a message reached this client. */
export interface MessageInfo {
  /**
   * `live` from the event pipeline; `fill` read from the database because a sequence was skipped
   * (by the server's gap fill, or by this SDK's `sync`); `resume` the catch-up after a (re)connect.
   * Outside faults everything after the catch-up is `live`. Undefined with servers that predate it.
   */
  via: Via | undefined;
}

/** Why a `receipt` event was emitted. */
export interface ReceiptInfo {
  /**
   * True when derived from a plain message entry: a message from S at sequence N is also S's read
   * receipt at N (the server emits no separate receipt for a send). False for `receipt` frames.
   */
  derived: boolean;
}

/** The conversation ended for this user: it is no longer tracked (no resume, no gap fill). */
export interface Removal {
  conversation_id: string;
  /** `left` / `removed` (from the entry or leave()), or `forbidden` (the server says we are not a member). */
  reason: 'left' | 'removed' | 'forbidden' | (string & {});
  /** Who removed us, when known. */
  by?: string;
  /** The sequence of the removal, when known. */
  sequence_number?: number;
  entry?: MembersRemovedEntry;
}

export interface ClientEvents {
  state(change: StateChange): void;
  welcome(w: Welcome): void;
  /**
   * Every timeline entry, in sequence order per conversation, each once (v1.0: every envelope; with a
   * v1.1 server this includes edits, deletes and membership entries: see `entry` for the typed form).
   */
  message(env: Envelope, info: MessageInfo): void;
  /** The typed form of each entry (after `message`); kinds this SDK does not know come as `unknown`. */
  entry(entry: TimelineEntry, info: MessageInfo): void;
  /** A message held in the local view changed: edited (`edited_at`, latest payload) or deleted (`deleted`, payload null). */
  update(message: Envelope, cause: EditEntry | DeleteEntry): void;
  /** This user left or was removed from a conversation (or the server said it is not a member). */
  removed(r: Removal): void;
  synced(s: Synced): void;
  /**
   * v1.4, after a regional failover: entries after `after_sequence` are numbered anew by the
   * conversation's new home; they come again (entries already shown, by message id, are not
   * delivered twice). An application that keys its own state by sequence number drops what it
   * holds above `after_sequence` for that conversation.
   */
  rewound(r: Rewind): void;
  receipt(r: Receipt, info: ReceiptInfo): void;
  typing(t: Typing): void;
  /** Every `presence` frame (client.presence.subscribe() is the per-user form). */
  presence(p: Presence): void;
  /** Errors that answer no pending call (refused resume, refused read or typing, ...). */
  error(err: RealChatError): void;
}

export interface ClientOptions {
  /** ws(s)://host/v1/ws */
  url: string;
  /** REST base URL (http(s)://host); defaults to the origin of `url`. */
  baseUrl?: string;
  /** fetch for the REST calls (defaults to globalThis.fetch). */
  fetch?: RestOptions['fetch'];
  /** Plain messages the local view keeps per conversation (the oldest by sequence are forgotten). */
  maxViewMessagesPerConversation?: number;
  /** Conversations the local view keeps (the least recently active is forgotten). */
  maxViewConversations?: number;
  /** A token, or a function returning one (called before every connection attempt). */
  token: string | (() => string | Promise<string>);
  /** Defaults to globalThis.WebSocket (browsers); pass the `ws` package's WebSocket in Node 20. */
  WebSocket?: WebSocketConstructor;
  reconnectBaseMs?: number;
  reconnectCapMs?: number;
  /** After this many failed attempts in a row the state is 'offline' (attempts go on). */
  offlineAfterAttempts?: number;
  openTimeoutMs?: number;
  welcomeTimeoutMs?: number;
  pongTimeoutMs?: number;
  /** Timeout of sync requests and of connect(). */
  requestTimeoutMs?: number;
  /** Overall deadline of one send, retries included. */
  sendTimeoutMs?: number;
  maxQueuedSends?: number;
  maxInFlightSends?: number;
  maxSendAttempts?: number;
  maxOpenSyncs?: number;
  maxBufferedPerConversation?: number;
  maxConversations?: number;
  maxResumeConversations?: number;
  syncPageSize?: number;
  typingThrottleMs?: number;
  maxPayloadBytes?: number;
  random?: () => number;
  randomUUID?: () => string;
  /** The clock (milliseconds since the epoch), like Date.now; tests may pass a fake. */
  now?: () => number;
}

type Required2<T> = { [K in keyof T]-?: T[K] };
type Resolved = Required2<Omit<ClientOptions, 'WebSocket' | 'fetch'>> & { WebSocket: WebSocketConstructor; fetch: RestOptions['fetch'] };

/** http(s)://host for ws(s)://host/... */
function restBaseOf(wsUrl: string): string {
  try {
    const u = new URL(wsUrl);
    return `${u.protocol === 'wss:' ? 'https:' : 'http:'}//${u.host}`;
  } catch {
    return '';
  }
}

/** The `sub` of a JWT (no verification: only to name ourselves before the first welcome). */
function subOf(token: string): string | null {
  try {
    const part = token.split('.')[1];
    if (!part) return null;
    const json = atob(
      part
        .replace(/-/g, '+')
        .replace(/_/g, '/')
        .padEnd(Math.ceil(part.length / 4) * 4, '='),
    );
    const sub = (JSON.parse(json) as { sub?: unknown }).sub;
    return typeof sub === 'string' ? sub : null;
  } catch {
    return null;
  }
}

function resolveOptions(o: ClientOptions): Resolved {
  const WS = o.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (!WS) throw new Error('no WebSocket implementation: pass options.WebSocket (e.g. the `ws` package in Node 20)');
  return {
    url: o.url,
    token: o.token,
    WebSocket: WS,
    baseUrl: o.baseUrl ?? restBaseOf(o.url),
    fetch: o.fetch,
    maxViewMessagesPerConversation: o.maxViewMessagesPerConversation ?? 1000,
    maxViewConversations: o.maxViewConversations ?? 200,
    reconnectBaseMs: o.reconnectBaseMs ?? 250,
    reconnectCapMs: o.reconnectCapMs ?? 30_000,
    offlineAfterAttempts: o.offlineAfterAttempts ?? 3,
    openTimeoutMs: o.openTimeoutMs ?? 10_000,
    welcomeTimeoutMs: o.welcomeTimeoutMs ?? 10_000,
    pongTimeoutMs: o.pongTimeoutMs ?? 10_000,
    requestTimeoutMs: o.requestTimeoutMs ?? 15_000,
    sendTimeoutMs: o.sendTimeoutMs ?? 60_000,
    maxQueuedSends: o.maxQueuedSends ?? 1000,
    maxInFlightSends: o.maxInFlightSends ?? 32,
    maxSendAttempts: o.maxSendAttempts ?? 10,
    maxOpenSyncs: o.maxOpenSyncs ?? 16,
    maxBufferedPerConversation: o.maxBufferedPerConversation ?? 1000,
    maxConversations: o.maxConversations ?? 10_000,
    maxResumeConversations: o.maxResumeConversations ?? 1000,
    syncPageSize: o.syncPageSize ?? 200,
    typingThrottleMs: o.typingThrottleMs ?? 2500,
    maxPayloadBytes: o.maxPayloadBytes ?? 64 * 1024,
    random: o.random ?? Math.random,
    randomUUID: o.randomUUID ?? (() => globalThis.crypto.randomUUID()),
    now: o.now ?? (() => Date.now()),
  };
}

export class RealChatClient {
  private readonly o: Resolved;
  private readonly policy: ReconnectPolicyOptions;
  // A throwing listener is the application's bug: reported, never allowed to break the client.
  private readonly events = new Emitter<ClientEvents>((err) => console.error('realchat: event listener threw', err));
  private readonly streams: ConversationStreams;
  private readonly sends: SendQueue;
  private readonly convRequests: ConvRequests;
  private readonly gapFill: GapFill;
  private session: Session | null = null;
  private state: ConnectionState = 'idle';
  private reconnect: ReconnectState = initialReconnectState;
  private reconnectTimer: Timer | null = null;
  private requestNo = 0;
  private welcome: Welcome | null = null;
  private readonly pendingReads: LruMap<string, number>;
  private readonly readsSent = new Map<string, number>();
  private readonly typingSentAt = new LruMap<string, number>(1000);
  private readonly view: MessageView;
  /** Conversations this user left or was removed from -> the sequence of that (entries up to it are ignored). */
  private readonly dropped = new LruMap<string, number>(1000);
  private restClient: RestClient | null = null;
  /** Presence for clients: `client.presence.subscribe(userIds, listener)` (client/presence.ts). */
  readonly presence: PresenceSubscriptions;

  constructor(options: ClientOptions) {
    this.o = resolveOptions(options);
    this.policy = {
      baseMs: this.o.reconnectBaseMs,
      capMs: this.o.reconnectCapMs,
      offlineAfterAttempts: this.o.offlineAfterAttempts,
      random: this.o.random,
    };
    this.pendingReads = new LruMap(this.o.maxConversations);
    this.streams = new ConversationStreams({
      maxBufferedPerConversation: this.o.maxBufferedPerConversation,
      maxConversations: this.o.maxConversations,
      deliver: (env, via) => this.onDelivered(env, via),
      requestFill: (conv, after) => this.gapFill.request(conv, after),
    });
    this.gapFill = new GapFill({
      streams: this.streams,
      connected: () => this.session?.isWelcomed ?? false,
      sync: (conv, after) => this.syncRequest(conv, { after }, this.o.syncPageSize),
      onError: (err) => this.events.emit('error', err),
      random: this.o.random,
      schedule: (fn, ms) => {
        const t = setTimeout(fn, ms);
        return () => clearTimeout(t);
      },
    });
    this.sends = new SendQueue({
      maxQueued: this.o.maxQueuedSends,
      maxInFlight: this.o.maxInFlightSends,
      maxAttempts: this.o.maxSendAttempts,
      timeoutMs: this.o.sendTimeoutMs,
      retryBaseMs: 200,
      retryCapMs: 5000,
      random: this.o.random,
      transmit: (conversation_id, idempotency_key, payload, op) =>
        this.transmit(
          op.type === 'send'
            ? { type: 'send', conversation_id, idempotency_key, payload }
            : op.type === 'edit'
              ? { type: 'edit', conversation_id, message_id: op.message_id, idempotency_key, payload }
              : { type: 'delete', conversation_id, message_id: op.message_id, idempotency_key },
        ),
    });
    this.view = new MessageView({
      maxMessagesPerConversation: this.o.maxViewMessagesPerConversation,
      maxConversations: this.o.maxViewConversations,
    });
    this.convRequests = new ConvRequests({ max: 256, silentTtlMs: this.o.requestTimeoutMs, now: this.o.now });
    this.presence = new PresenceSubscriptions({
      send: (frame) => this.transmit(frame) !== null,
      maxWatched: 1000,
      onListenerError: (err) => console.error('realchat: presence listener threw', err),
    });
  }

  // ---- public API ----------------------------------------------------------------------------

  on<K extends keyof ClientEvents>(event: K, fn: ClientEvents[K]): () => void {
    return this.events.on(event, fn);
  }

  get connectionState(): ConnectionState {
    return this.state;
  }

  /** The user id from the last welcome. */
  get userId(): string | null {
    return this.welcome?.user_id ?? null;
  }

  /** Last sequence delivered for a conversation (undefined when not tracked). */
  position(conversationId: string): number | undefined {
    return this.streams.position(conversationId);
  }

  get stats() {
    return { ...this.streams.stats, queuedSends: this.sends.size };
  }

  /**
   * Starts connecting (and reconnecting until close()). Resolves with the first welcome; rejects
   * after `requestTimeoutMs` (attempts go on) or when the server refuses for good.
   */
  connect(): Promise<Welcome> {
    if (this.state === 'closed') return Promise.reject(new RealChatError('closed', 'client is closed'));
    if (this.state === 'connected' && this.welcome) return Promise.resolve(this.welcome);
    const result = this.waitFor('connected', this.o.requestTimeoutMs).then(() => this.welcome!);
    if (this.state === 'idle') {
      this.setState({ state: 'connecting', attempt: 0 });
      void this.open();
    }
    return result;
  }

  /** Stops for good: closes the socket and fails every pending send with `closed`. */
  close(): void {
    if (this.state === 'closed') return;
    this.clearReconnect();
    this.gapFill.stop();
    const s = this.session;
    this.session = null;
    s?.close('client closed');
    const err = new RealChatError('closed', 'client is closed');
    this.sends.failAll(err);
    this.convRequests.failAll(err);
    this.setState({ state: 'closed', attempt: this.reconnect.attempt, reason: 'closed by the application' });
  }

  /**
   * Sends a message. Resolves with the server's ack (the message is stored); rejects with a
   * RealChatError (`forbidden`, `not_found`, `payload_too_large`, `queue_full`, `timeout`, ...).
   * Pass `idempotencyKey` to make a retry of your own safe.
   */
  send(conversationId: string, payload: unknown, opts: { idempotencyKey?: string } = {}): Promise<Ack> {
    return this.write(conversationId, payload, opts.idempotencyKey, { type: 'send' });
  }

  /**
   * v1.1: edits a message of yours. Sent over the socket with an idempotency key and retried like a
   * send; resolves with the ack of the edit entry (`forbidden` for someone else's message, `conflict`
   * for a deleted one, `not_found` for an unknown one).
   */
  edit(conversationId: string, messageId: string, payload: unknown, opts: { idempotencyKey?: string } = {}): Promise<Ack> {
    return this.write(conversationId, payload, opts.idempotencyKey, { type: 'edit', message_id: messageId });
  }

  /**
   * v1.1: deletes (erases) a message: yours, or anyone's as an owner or admin. Retried like a send;
   * resolves with the ack of the delete entry (of the existing one, `duplicate`, when it was deleted already).
   */
  delete(conversationId: string, messageId: string, opts: { idempotencyKey?: string } = {}): Promise<Ack> {
    const key = opts.idempotencyKey ?? this.o.randomUUID();
    if (this.state === 'closed') return Promise.reject(new RealChatError('closed', 'client is closed', key));
    return this.sends.enqueue(conversationId, null, key, { type: 'delete', message_id: messageId });
  }

  /** v1.1: leaves a conversation (REST). It is no longer tracked here; a `removed` event follows. */
  async leave(conversationId: string): Promise<RemovedMembers> {
    const me = await this.me();
    const r = await this.rest.removeMember(conversationId, me, this.o.randomUUID());
    this.drop(conversationId, { conversation_id: conversationId, reason: 'left', by: me, sequence_number: r.last_sequence });
    return r;
  }

  /** v1.1: removes a member (an owner or admin; the owner cannot be removed, an admin cannot remove an admin). Yourself: leave(). */
  async removeMember(conversationId: string, userId: string): Promise<RemovedMembers> {
    if (userId === (await this.me())) return this.leave(conversationId);
    return this.rest.removeMember(conversationId, userId, this.o.randomUUID());
  }

  /** v1.1: the owner makes a member an admin, or an admin a member again. */
  setRole(conversationId: string, userId: string, role: 'admin' | 'member'): Promise<RoleSet> {
    return this.rest.setRole(conversationId, userId, role, this.o.randomUUID());
  }

  /** v1.1: one page of members (ordered by user id), with role and read/delivered positions. */
  members(conversationId: string, opts: { limit?: number; after?: string } = {}): Promise<MembersPage> {
    return this.rest.listMembers(conversationId, opts);
  }

  /**
   * v1.1: the `limit` entries just below `before` (default: everything up to the current position,
   * i.e. the latest page), ascending, with `has_more` when older ones exist. Over the socket when
   * connected (a `sync` with `before_sequence`), else over REST. Plain messages come in their current
   * state (edited or deleted) and are added to the local view; message events are not affected.
   */
  async history(
    conversationId: string,
    opts: { before?: number; limit?: number } = {},
  ): Promise<{ messages: Envelope[]; has_more: boolean }> {
    const pos = this.streams.position(conversationId);
    const before = opts.before ?? (pos !== undefined ? pos + 1 : Number.MAX_SAFE_INTEGER);
    const limit = opts.limit ?? this.o.syncPageSize;
    let page: { messages: Envelope[]; has_more: boolean };
    if (this.session?.isWelcomed) {
      try {
        page = await this.syncRequest(conversationId, { before }, limit);
      } catch (err) {
        if (!(err instanceof RealChatError) || (err.code !== 'network' && err.code !== 'timeout')) throw err;
        page = await this.rest.listMessagesBefore(conversationId, before, limit);
      }
    } else {
      page = await this.rest.listMessagesBefore(conversationId, before, limit);
    }
    const messages = page.messages.map((m) => (toEntry(m).kind === 'message' ? this.view.put(m) : m));
    return { messages, has_more: page.has_more };
  }

  /** v1.1: the plain messages the local view holds for a conversation, in their current state, ascending. */
  messages(conversationId: string): Envelope[] {
    return this.view.list(conversationId);
  }

  /** v1.1: one message of the local view in its current state. */
  message(conversationId: string, messageId: string): Envelope | undefined {
    return this.view.get(conversationId, messageId);
  }

  /** v1.1: sets this user's display name. */
  setName(name: string): Promise<UserSummary> {
    return this.rest.setName(name);
  }

  /** v1.1: users whose name starts with `query` (case-insensitive). */
  searchUsers(query: string, opts: { limit?: number } = {}): Promise<UserSummary[]> {
    return this.rest.searchUsers(query, opts.limit);
  }

  /** v1.1: one user (null when unknown). */
  getUser(userId: string): Promise<UserSummary | null> {
    return this.rest.getUser(userId);
  }

  /** The REST client this client uses (same base URL and token). */
  get rest(): RestClient {
    return (this.restClient ??= new RestClient({
      baseUrl: this.o.baseUrl,
      token: this.o.token,
      ...(this.o.fetch ? { fetch: this.o.fetch } : {}),
      timeoutMs: this.o.requestTimeoutMs,
    }));
  }

  private async me(): Promise<string> {
    if (this.welcome) return this.welcome.user_id;
    const token = typeof this.o.token === 'function' ? await this.o.token() : this.o.token;
    const sub = subOf(token);
    if (!sub) throw new RealChatError('unauthorized', 'cannot tell the user id from the token');
    return sub;
  }

  private write(conversationId: string, payload: unknown, idempotencyKey: string | undefined, op: WriteOp): Promise<Ack> {
    const key = idempotencyKey ?? this.o.randomUUID();
    if (this.state === 'closed') return Promise.reject(new RealChatError('closed', 'client is closed', key));
    let size: number;
    try {
      const text = JSON.stringify(payload);
      if (text === undefined) throw new Error('undefined');
      size = new TextEncoder().encode(text).length;
    } catch {
      return Promise.reject(new RealChatError('invalid_frame', 'payload must be a JSON value', key));
    }
    if (size > this.o.maxPayloadBytes) {
      return Promise.reject(
        new RealChatError('payload_too_large', `payload is ${size} bytes; the limit is ${this.o.maxPayloadBytes}`, key),
      );
    }
    return this.sends.enqueue(conversationId, payload, key, op);
  }

  /** Marks a conversation read up to `sequenceNumber` (monotonic; sent when connected). */
  markRead(conversationId: string, sequenceNumber: number): void {
    if ((this.readsSent.get(conversationId) ?? -1) >= sequenceNumber) return;
    if ((this.pendingReads.peek(conversationId) ?? -1) >= sequenceNumber) return;
    this.pendingReads.set(conversationId, sequenceNumber);
    this.flushReads();
  }

  /** Tells the other members that the user is typing (throttled; dropped while disconnected). */
  typing(conversationId: string): void {
    const now = this.o.now();
    if (now - (this.typingSentAt.peek(conversationId) ?? 0) < this.o.typingThrottleMs) return;
    const n = this.transmit({ type: 'typing', conversation_id: conversationId });
    if (n === null) return;
    this.typingSentAt.set(conversationId, now);
    this.convRequests.add(n, 'typing', conversationId, null);
  }

  /**
   * Declares that the application has everything up to `afterSequence` (e.g. loaded over REST):
   * message events continue from there, gaps included, and reconnects resume from there.
   */
  track(conversationId: string, afterSequence: number): void {
    const dropped = this.dropped.peek(conversationId);
    if (dropped !== undefined && afterSequence >= dropped) this.dropped.delete(conversationId);
    if (this.streams.track(conversationId, afterSequence) && this.session?.isWelcomed) this.streams.requestFrom(conversationId);
  }

  /** One page of history over the socket (does not affect message events). */
  fetchMessages(conversationId: string, afterSequence: number, limit = this.o.syncPageSize): Promise<MessagesPage> {
    return this.syncRequest(conversationId, { after: afterSequence }, limit);
  }

  /**
   * A hint from the environment (browser `online`/`offline` events): offline closes the socket
   * at once and waits; online reconnects at once.
   */
  setNetworkAvailable(available: boolean): void {
    if (this.state === 'closed' || this.state === 'idle') {
      this.reconnect = { ...this.reconnect, networkDown: !available };
      return;
    }
    if (!available) {
      this.reconnect = { ...this.reconnect, networkDown: true };
      this.session?.close('network went offline');
      return;
    }
    if (!this.reconnect.networkDown) return;
    this.reconnect = { ...this.reconnect, networkDown: false };
    if (!this.session) {
      this.reconnect = { ...this.reconnect, attempt: 0 };
      this.clearReconnect();
      this.setState({ state: this.reconnect.everWelcomed ? 'reconnecting' : 'connecting', attempt: 0 });
      void this.open();
    }
  }

  // ---- connection lifecycle -----------------------------------------------------------------

  private async open(): Promise<void> {
    this.clearReconnect();
    if (this.state === 'closed' || this.session) return;
    let token: string;
    try {
      token =
        typeof this.o.token === 'function'
          ? await withTimeout(Promise.resolve(this.o.token()), this.o.requestTimeoutMs, 'token')
          : this.o.token;
    } catch (err) {
      // close() may have run while the token was awaited.
      if ((this.state as ConnectionState) !== 'closed')
        this.scheduleReconnect(decideNextAttempt(this.reconnect, `could not get a token: ${String(err)}`, this.policy));
      return;
    }
    if ((this.state as ConnectionState) === 'closed' || this.session) return;
    const session: Session = new Session({
      WebSocket: this.o.WebSocket,
      url: this.o.url,
      token,
      resume: this.streams.positions(this.o.maxResumeConversations),
      resumeLastIds: this.streams.lastIds(this.o.maxResumeConversations),
      openTimeoutMs: this.o.openTimeoutMs,
      welcomeTimeoutMs: this.o.welcomeTimeoutMs,
      pongTimeoutMs: this.o.pongTimeoutMs,
      now: this.o.now,
      onWelcome: (w) => this.onWelcome(session, w),
      onFrame: (f) => this.onFrame(session, f),
      onClosed: (code, reason) => this.onClosed(session, code, reason),
    });
    this.session = session;
    session.start();
  }

  private onWelcome(session: Session, w: Welcome): void {
    if (this.session !== session) return;
    this.welcome = w;
    this.reconnect = afterWelcome(this.reconnect);
    this.readsSent.clear();
    this.setState({ state: 'connected', attempt: 0 });
    this.events.emit('welcome', w);
    this.sends.pump();
    this.flushReads();
    this.presence.resubscribe();
  }

  private onClosed(session: Session, code: number, reason: string): void {
    if (this.session !== session) return;
    this.session = null;
    const welcomedAt = session.welcomedAt;
    this.sends.onDisconnect();
    this.convRequests.failAll(new RealChatError('network', `connection lost: ${reason}`));
    this.gapFill.connectionLost();
    if (this.state === 'closed') return;
    const decision = decideAfterClose(
      this.reconnect,
      {
        code,
        reason,
        tokenIsProvider: typeof this.o.token === 'function',
        welcomedForMs: welcomedAt === null ? null : this.o.now() - welcomedAt,
      },
      this.policy,
    );
    if (decision.action === 'reconnect') {
      this.scheduleReconnect(decision);
      return;
    }
    this.reconnect = decision.next;
    const err = new RealChatError(decision.error.code, decision.error.message);
    this.sends.failAll(err);
    this.setState({ state: 'closed', attempt: this.reconnect.attempt, reason: decision.reason, error: err });
  }

  private scheduleReconnect(decision: Reconnect): void {
    this.reconnect = decision.next;
    this.setState({
      state: decision.connectionState,
      attempt: this.reconnect.attempt,
      retryInMs: decision.delayMs,
      reason: decision.reason,
    });
    this.clearReconnect();
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      void this.open();
    }, decision.delayMs);
  }

  private clearReconnect(): void {
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
  }

  private setState(change: StateChange): void {
    const changed = change.state !== this.state;
    this.state = change.state;
    if (changed || change.state !== 'connected') this.events.emit('state', change);
  }

  /** Resolves when the state becomes `target`; rejects on timeout or when the client closes. */
  private waitFor(target: ConnectionState, timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new RealChatError('timeout', `not ${target} within ${timeoutMs} ms (still trying)`));
      }, timeoutMs);
      const off = this.events.on('state', (c) => {
        if (c.state === target) {
          clearTimeout(timer);
          off();
          resolve();
        } else if (c.state === 'closed') {
          clearTimeout(timer);
          off();
          reject(c.error ?? new RealChatError('closed', 'client is closed'));
        }
      });
    });
  }

  // ---- frames -------------------------------------------------------------------------------

  /** Writes a request on the welcomed session; returns its request number or null. */
  private transmit(frame: Parameters<Session['send']>[0]): number | null {
    const s = this.session;
    if (!s?.send(frame)) return null;
    return ++this.requestNo;
  }

  private onFrame(session: Session, f: ServerFrame): void {
    if (this.session !== session) return;
    switch (f.type) {
      case 'message': {
        const env = f.message;
        if (!env || typeof env.sequence_number !== 'number' || typeof env.conversation_id !== 'string') return;
        const dropped = this.dropped.peek(env.conversation_id);
        if (dropped !== undefined) {
          // Entries up to our removal are over for us; a later one (we were added again) starts afresh.
          if (env.sequence_number <= dropped) return;
          this.dropped.delete(env.conversation_id);
        }
        this.streams.accept(env, knownVia(f.via));
        return;
      }
      case 'synced':
        this.events.emit('synced', f);
        return;
      case 'rewind':
        if (typeof f.conversation_id !== 'string' || !Number.isSafeInteger(f.after_sequence)) return;
        if (this.streams.rewind(f.conversation_id, f.after_sequence)) this.events.emit('rewound', f);
        return;
      case 'ack': {
        const n = this.sends.onAck(f);
        // Silent requests sent before this send have been processed.
        if (n !== null) this.convRequests.settleBefore(n);
        return;
      }
      case 'messages': {
        const waiter = this.convRequests.answerSync(f.conversation_id);
        waiter?.resolve(f);
        return;
      }
      case 'receipt':
        this.events.emit('receipt', f, { derived: false });
        return;
      case 'typing':
        this.events.emit('typing', f);
        return;
      case 'presence':
        if (typeof f.user_id !== 'string' || (f.status !== 'online' && f.status !== 'offline')) return;
        this.presence.accept(f);
        this.events.emit('presence', f);
        return;
      case 'reconnect':
        this.reconnect = withRetryAfter(this.reconnect, f.retry_after_ms);
        return;
      case 'error':
        if (f.code === 'forbidden' && Array.isArray(f.user_ids)) this.presence.refused(f.user_ids);
        this.onErrorFrame(f.code, f.message, f.ref, f.reason);
        return;
      default:
        return; // pong and unknown frames
    }
  }

  private onErrorFrame(code: string, message: string, ref: string | undefined, reason: string | undefined): void {
    const err = new RealChatError(code, message, ref, undefined, reason);
    if (ref !== undefined && this.sends.onError(ref, code, message, reason)) return;
    // `forbidden` naming a conversation (a refused resume, sync, read or typing): we are not a member
    // (any more). Stop tracking it, so it is not resumed or filled again.
    if (ref !== undefined && code === 'forbidden' && this.streams.position(ref) !== undefined) {
      this.drop(ref, { conversation_id: ref, reason: 'forbidden' });
    }
    if (ref !== undefined) {
      const answered = this.convRequests.answerError(ref);
      if (answered?.waiter) {
        answered.waiter.reject(err);
        return;
      }
    }
    this.events.emit('error', err);
  }

  // ---- sync and reads -----------------------------------------------------------------------

  private syncRequest(conversationId: string, from: { after: number } | { before: number }, limit: number): Promise<MessagesPage> {
    if (this.convRequests.openSyncs() >= this.o.maxOpenSyncs) {
      return Promise.reject(new RealChatError('queue_full', `more than ${this.o.maxOpenSyncs} syncs in flight`, conversationId));
    }
    return new Promise<MessagesPage>((resolve, reject) => {
      const n = this.transmit(
        'before' in from
          ? { type: 'sync', conversation_id: conversationId, before_sequence: from.before, limit }
          : { type: 'sync', conversation_id: conversationId, after_sequence: from.after, limit },
      );
      if (n === null) {
        reject(new RealChatError('network', 'not connected', conversationId));
        return;
      }
      let done = false;
      // On timeout the entry stays registered, so a late answer is still matched to this request.
      const timer = setTimeout(() => {
        done = true;
        reject(new RealChatError('timeout', `no answer to sync within ${this.o.requestTimeoutMs} ms`, conversationId));
      }, this.o.requestTimeoutMs);
      this.convRequests.add(n, 'sync', conversationId, {
        resolve: (page) => {
          clearTimeout(timer);
          if (!done) resolve(page);
        },
        reject: (e) => {
          clearTimeout(timer);
          if (!done) reject(e);
        },
      });
    });
  }

  // ---- entries --------------------------------------------------------------------------------

  /** An entry handed over by the streams: in sequence order, once. */
  private onDelivered(env: Envelope, via: Via | undefined): void {
    const info = { via };
    const entry = toEntry(env);
    // The view first, so listeners of `message`/`entry` already read the current state.
    const state =
      entry.kind === 'message' ? this.view.put(env) : entry.kind === 'edit' || entry.kind === 'delete' ? this.view.apply(entry) : null;
    this.events.emit('message', env, info);
    this.events.emit('entry', entry, info);
    switch (entry.kind) {
      case 'message':
        // A message from S at N is also S's read receipt at N.
        this.events.emit(
          'receipt',
          { type: 'receipt', conversation_id: env.conversation_id, user_id: env.sender_id, read_sequence: env.sequence_number },
          { derived: true },
        );
        return;
      case 'edit':
      case 'delete':
        if (state) this.events.emit('update', state, entry);
        return;
      case 'members_removed': {
        const me = this.welcome?.user_id;
        if (me !== undefined && entry.user_ids.includes(me))
          this.drop(entry.conversation_id, {
            conversation_id: entry.conversation_id,
            reason: entry.reason,
            by: entry.by,
            sequence_number: entry.sequence_number,
            entry,
          });
        return;
      }
      default:
        return;
    }
  }

  /** The conversation ended for this user: forget it everywhere (once per removal). */
  private drop(conv: string, removal: Removal): void {
    const seq = removal.sequence_number ?? this.streams.position(conv) ?? 0;
    const prior = this.dropped.peek(conv);
    if (prior !== undefined && prior >= seq) return;
    this.dropped.set(conv, seq);
    this.streams.untrack(conv);
    this.gapFill.forget(conv);
    this.view.drop(conv);
    this.pendingReads.delete(conv);
    this.readsSent.delete(conv);
    this.events.emit('removed', removal);
  }

  private flushReads(): void {
    if (!this.session?.isWelcomed) return;
    for (const [conv, seq] of [...this.pendingReads]) {
      const n = this.transmit({ type: 'read', conversation_id: conv, sequence_number: seq });
      if (n === null) return;
      this.pendingReads.delete(conv);
      this.readsSent.set(conv, seq);
      this.convRequests.add(n, 'read', conv, null);
    }
  }
}

const VIAS: ReadonlySet<unknown> = new Set<Via>(['live', 'fill', 'resume']);
/** A value this SDK does not know (a later server's) is reported as undefined, not passed on unchecked. */
function knownVia(v: unknown): Via | undefined {
  return VIAS.has(v) ? (v as Via) : undefined;
}
