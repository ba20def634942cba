/**
 * RealChatClient: one logical connection to RealChat that survives network failures.
 *
 *  - connect + hello; reconnect with exponential backoff and full jitter, honouring
 *    `reconnect.retry_after_ms` and close codes (4000-4499 reconnect, 4500+ stop);
 *  - resume from the last delivered sequence per conversation; gap detection (`sync` fills the gap);
 *    dedup by sequence; `message` events in sequence order per conversation;
 *  - sends with an idempotency key each, retried with the same key, resolving with the ack;
 *  - typing, read receipts, connection state events; bounded queues and a timeout on every wait.
 */
import { backoffDelay } from './backoff.js';
import { Emitter } from './emitter.js';
import { RealChatError } from './errors.js';
import { ConvRequests } from './requests.js';
import { SendQueue } from './send-queue.js';
import { Session } from './session.js';
import { ConversationStreams } from './streams.js';
import { CloseCodes, isFatalClose, type Ack, type Envelope, type MessagesPage, type Receipt, type ServerFrame, type Synced, type Typing, type Welcome, type WebSocketConstructor } from './types.js';

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

export interface ClientEvents {
  state(change: StateChange): void;
  welcome(w: Welcome): void;
  /** In sequence order per conversation, each message once. */
  message(env: Envelope): void;
  synced(s: Synced): void;
  receipt(r: Receipt): void;
  typing(t: Typing): void;
  /** Errors that answer no pending call (refused resume, refused read or typing, ...). */
  error(err: RealChatError): void;
}

export interface ClientOptions {
  /** ws(s)://host/v1/ws */
  url: string;
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
}

type Required2<T> = { [K in keyof T]-?: T[K] };
type Resolved = Required2<Omit<ClientOptions, 'WebSocket'>> & { WebSocket: WebSocketConstructor };

function resolveOptions(o: ClientOptions): Resolved {
  const WS = o.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (!WS) throw new Error('no WebSocket implementation: pass options.WebSocket (e.g. the `ws` package in Node 20)');
  return {
    url: o.url,
    token: o.token,
    WebSocket: WS,
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
  };
}

export class RealChatClient {
  private readonly o: Resolved;
  // A throwing listener is the application's bug: reported, never allowed to break the client.
  private readonly events = new Emitter<ClientEvents>((err) => console.error('realchat: event listener threw', err));
  private readonly streams: ConversationStreams;
  private readonly sends: SendQueue;
  private readonly convRequests: ConvRequests;
  private session: Session | null = null;
  private state: ConnectionState = 'idle';
  private attempt = 0;
  private everWelcomed = false;
  private welcomedAt = 0;
  private reconnectTimer: Timer | null = null;
  private retryAfterMs: number | null = null;
  private networkDown = false;
  private unauthorizedOnce = false;
  private requestNo = 0;
  private welcome: Welcome | null = null;
  private readonly pendingReads = new Map<string, number>();
  private readonly readsSent = new Map<string, number>();
  private readonly typingSentAt = new Map<string, number>();
  private readonly fillRetry = new Map<string, Timer>();
  private readonly fillFailures = new Map<string, number>();

  constructor(options: ClientOptions) {
    this.o = resolveOptions(options);
    this.streams = new ConversationStreams({
      maxBufferedPerConversation: this.o.maxBufferedPerConversation,
      maxConversations: this.o.maxConversations,
      deliver: (env) => this.events.emit('message', env),
      requestFill: (conv, after) => this.fill(conv, after),
    });
    this.sends = new SendQueue({
      maxQueued: this.o.maxQueuedSends,
      maxInFlight: this.o.maxInFlightSends,
      maxAttempts: this.o.maxSendAttempts,
      timeoutMs: this.o.sendTimeoutMs,
      retryBaseMs: 200,
      retryCapMs: 5000,
      random: this.o.random,
      transmit: (conversation_id, idempotency_key, payload) => this.transmit({ type: 'send', conversation_id, idempotency_key, payload }),
    });
    this.convRequests = new ConvRequests({ max: 256, silentTtlMs: this.o.requestTimeoutMs, now: () => Date.now() });
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
    for (const t of this.fillRetry.values()) clearTimeout(t);
    this.fillRetry.clear();
    const s = this.session;
    this.session = null;
    s?.close('client closed');
    const err = new RealChatError('closed', 'client is closed');
    this.sends.failAll(err);
    this.convRequests.failAll(err);
    this.setState({ state: 'closed', attempt: this.attempt, reason: 'closed by the application' });
  }

  /**
   * Sends a message. Resolves with the server's ack (the message is stored); rejects with a
   * RealChatError (`forbidden`, `not_found`, `payload_too_large`, `queue_full`, `timeout`, ...).
   * Pass `idempotencyKey` to make a retry of your own safe.
   */
  send(conversationId: string, payload: unknown, opts: { idempotencyKey?: string } = {}): Promise<Ack> {
    const key = opts.idempotencyKey ?? this.o.randomUUID();
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
      return Promise.reject(new RealChatError('payload_too_large', `payload is ${size} bytes; the limit is ${this.o.maxPayloadBytes}`, key));
    }
    return this.sends.enqueue(conversationId, payload, key);
  }

  /** Marks a conversation read up to `sequenceNumber` (monotonic; sent when connected). */
  markRead(conversationId: string, sequenceNumber: number): void {
    if ((this.readsSent.get(conversationId) ?? -1) >= sequenceNumber) return;
    if ((this.pendingReads.get(conversationId) ?? -1) >= sequenceNumber) return;
    this.pendingReads.delete(conversationId);
    this.pendingReads.set(conversationId, sequenceNumber);
    while (this.pendingReads.size > this.o.maxConversations) this.pendingReads.delete(this.pendingReads.keys().next().value as string);
    this.flushReads();
  }

  /** Tells the other members that the user is typing (throttled; dropped while disconnected). */
  typing(conversationId: string): void {
    const now = Date.now();
    if (now - (this.typingSentAt.get(conversationId) ?? 0) < this.o.typingThrottleMs) return;
    const n = this.transmit({ type: 'typing', conversation_id: conversationId });
    if (n === null) return;
    this.typingSentAt.delete(conversationId);
    this.typingSentAt.set(conversationId, now);
    while (this.typingSentAt.size > 1000) this.typingSentAt.delete(this.typingSentAt.keys().next().value as string);
    this.convRequests.add(n, 'typing', conversationId, null);
  }

  /**
   * Declares that the application has everything up to `afterSequence` (e.g. loaded over REST):
   * message events continue from there, gaps included, and reconnects resume from there.
   */
  track(conversationId: string, afterSequence: number): void {
    if (this.streams.track(conversationId, afterSequence) && this.session?.isWelcomed) this.streams.requestFrom(conversationId);
  }

  /** One page of history over the socket (does not affect message events). */
  fetchMessages(conversationId: string, afterSequence: number, limit = this.o.syncPageSize): Promise<MessagesPage> {
    return this.syncRequest(conversationId, afterSequence, limit);
  }

  /**
   * A hint from the environment (browser `online`/`offline` events): offline closes the socket
   * at once and waits; online reconnects at once.
   */
  setNetworkAvailable(available: boolean): void {
    if (this.state === 'closed' || this.state === 'idle') {
      this.networkDown = !available;
      return;
    }
    if (!available) {
      this.networkDown = true;
      this.session?.close('network went offline');
      return;
    }
    if (!this.networkDown) return;
    this.networkDown = false;
    if (!this.session) {
      this.attempt = 0;
      this.clearReconnect();
      this.setState({ state: this.everWelcomed ? 'reconnecting' : 'connecting', attempt: 0 });
      void this.open();
    }
  }

  // ---- connection lifecycle -----------------------------------------------------------------

  private async open(): Promise<void> {
    this.clearReconnect();
    if (this.state === 'closed' || this.session) return;
    let token: string;
    try {
      token = typeof this.o.token === 'function' ? await withTimeout(Promise.resolve(this.o.token()), this.o.requestTimeoutMs, 'token') : this.o.token;
    } catch (err) {
      this.scheduleReconnect(`could not get a token: ${String(err)}`);
      return;
    }
    if ((this.state as ConnectionState) === 'closed' || this.session) return;
    const session: Session = new Session({
      WebSocket: this.o.WebSocket,
      url: this.o.url,
      token,
      resume: this.streams.positions(this.o.maxResumeConversations),
      openTimeoutMs: this.o.openTimeoutMs,
      welcomeTimeoutMs: this.o.welcomeTimeoutMs,
      pongTimeoutMs: this.o.pongTimeoutMs,
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
    this.everWelcomed = true;
    this.welcomedAt = Date.now();
    this.unauthorizedOnce = false;
    this.retryAfterMs = null;
    this.attempt = 0;
    this.readsSent.clear();
    this.setState({ state: 'connected', attempt: 0 });
    this.events.emit('welcome', w);
    this.sends.pump();
    this.flushReads();
  }

  private onClosed(session: Session, code: number, reason: string): void {
    if (this.session !== session) return;
    this.session = null;
    const wasWelcomed = this.welcomedAt > 0;
    const livedMs = wasWelcomed ? Date.now() - this.welcomedAt : 0;
    this.welcomedAt = 0;
    this.sends.onDisconnect();
    this.convRequests.failAll(new RealChatError('network', `connection lost: ${reason}`));
    this.streams.resetFills();
    for (const t of this.fillRetry.values()) clearTimeout(t);
    this.fillRetry.clear();
    if (this.state === 'closed') return;
    const refreshable = typeof this.o.token === 'function';
    if (isFatalClose(code) && !(code === CloseCodes.tokenExpired && refreshable)) {
      // 4500 unauthorized: one more attempt only if the token can be refreshed. 4502 (the token
      // expired while connected) always reconnects with a fresh one when a provider is given.
      if (code === CloseCodes.unauthorized && refreshable && !this.unauthorizedOnce) {
        this.unauthorizedOnce = true;
      } else {
        const err = new RealChatError(code === CloseCodes.unauthorized || code === CloseCodes.tokenExpired ? 'unauthorized' : 'invalid_frame', `server closed the connection (${code} ${reason}); not reconnecting`);
        this.sends.failAll(err);
        this.setState({ state: 'closed', attempt: this.attempt, reason: `${code} ${reason}`, error: err });
        return;
      }
    }
    // A connection that dropped soon after welcome does not reset the backoff.
    if (wasWelcomed && livedMs < 5000) this.attempt = Math.max(this.attempt, 1);
    this.scheduleReconnect(`${code} ${reason}`);
  }

  private scheduleReconnect(reason: string): void {
    if (this.state === 'closed') return;
    const attempt = this.attempt++;
    let delay = backoffDelay(attempt, { baseMs: this.o.reconnectBaseMs, capMs: this.o.reconnectCapMs, random: this.o.random });
    if (this.retryAfterMs !== null) {
      delay = Math.max(delay, this.retryAfterMs);
      this.retryAfterMs = null;
    }
    if (this.networkDown) delay = this.o.reconnectCapMs;
    const offline = this.networkDown || this.attempt >= this.o.offlineAfterAttempts;
    const state: ConnectionState = offline ? 'offline' : this.everWelcomed ? 'reconnecting' : 'connecting';
    this.setState({ state, attempt: this.attempt, retryInMs: delay, reason });
    this.clearReconnect();
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      void this.open();
    }, delay);
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
    if (!s || !s.send(frame)) return null;
    return ++this.requestNo;
  }

  private onFrame(session: Session, f: ServerFrame): void {
    if (this.session !== session) return;
    switch (f.type) {
      case 'message':
        if (f.message && typeof f.message.sequence_number === 'number') this.streams.accept(f.message);
        return;
      case 'synced':
        this.events.emit('synced', f);
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
        this.events.emit('receipt', f);
        return;
      case 'typing':
        this.events.emit('typing', f);
        return;
      case 'reconnect':
        if (typeof f.retry_after_ms === 'number' && f.retry_after_ms >= 0) this.retryAfterMs = Math.min(f.retry_after_ms, 5 * 60_000);
        return;
      case 'error':
        this.onErrorFrame(f.code, f.message, f.ref);
        return;
      default:
        return; // pong and unknown frames
    }
  }

  private onErrorFrame(code: string, message: string, ref: string | undefined): void {
    const err = new RealChatError(code, message, ref);
    if (ref !== undefined && this.sends.onError(ref, code, message)) return;
    if (ref !== undefined) {
      const answered = this.convRequests.answerError(ref);
      if (answered?.waiter) {
        answered.waiter.reject(err);
        return;
      }
    }
    this.events.emit('error', err);
  }

  // ---- sync (gap fill) and reads ------------------------------------------------------------

  private syncRequest(conversationId: string, afterSequence: number, limit: number): Promise<MessagesPage> {
    if (this.convRequests.openSyncs() >= this.o.maxOpenSyncs) {
      return Promise.reject(new RealChatError('queue_full', `more than ${this.o.maxOpenSyncs} syncs in flight`, conversationId));
    }
    return new Promise<MessagesPage>((resolve, reject) => {
      const n = this.transmit({ type: 'sync', conversation_id: conversationId, after_sequence: afterSequence, limit });
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

  /** Gap fill requested by the streams: one sync page at a time, retried with backoff. */
  private fill(conv: string, after: number): void {
    if (!this.session?.isWelcomed) {
      // The resume after the reconnect covers it.
      this.streams.fillAborted(conv);
      return;
    }
    this.syncRequest(conv, after, this.o.syncPageSize).then(
      (page) => {
        const advanced = this.streams.fillDone(conv, page.messages);
        if (advanced) this.fillFailures.delete(conv);
        // More pages (or a gap that did not close): ask again, later if nothing moved.
        if (page.has_more && advanced) this.streams.requestFrom(conv);
        else if (!advanced && this.streams.hasGap(conv)) this.retryFill(conv);
      },
      (err: RealChatError) => {
        this.streams.fillAborted(conv);
        if (err.code === 'forbidden' || err.code === 'not_found') {
          this.events.emit('error', err);
          return;
        }
        this.retryFill(conv);
      },
    );
  }

  private retryFill(conv: string): void {
    if (this.fillRetry.has(conv) || !this.session?.isWelcomed) return;
    const failures = (this.fillFailures.get(conv) ?? 0) + 1;
    this.fillFailures.set(conv, failures);
    if (this.fillFailures.size > 1000) this.fillFailures.delete(this.fillFailures.keys().next().value as string);
    const delay = backoffDelay(failures, { baseMs: 200, capMs: 10_000, random: this.o.random });
    this.fillRetry.set(
      conv,
      setTimeout(() => {
        this.fillRetry.delete(conv);
        this.streams.refill(conv);
      }, delay),
    );
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

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: Timer;
  return Promise.race([
    p,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new RealChatError('timeout', `${what} not ready within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
