/**
 * The v1 WebSocket protocol on uWS. Frames are decoded at the edge; every failure is answered with an
 * `error` frame and never thrown into the event loop. Requests on one connection are processed in the
 * order they were sent (a bounded per-connection chain), so one sender's messages keep its send order.
 */
import { randomBytes } from 'node:crypto';
import uWS from 'uWebSockets.js';
import type { WebSocket, WebSocketBehavior } from 'uWebSockets.js';
import { AppError, toAppError } from '../common/errors.js';
import {
  CloseCode,
  decodeClientFrame,
  encodeFrame,
  frameRef,
  parseJsonFrame,
  PROTOCOL_VERSION,
  type ClientFrame,
  type ServerFrame,
} from '../common/protocol.js';
import type { Config } from '../common/config.js';
import type { Logger } from '../common/log.js';
import type { Metrics } from '../common/metrics.js';
import type { MembershipCache } from '../delivery/membership-cache.js';
import type { Authenticator } from './auth.js';
import type { ChatStore } from './chat-store.js';
import { Connection, type SocketPort } from './connection.js';
import type { ConnectionRegistry } from './registry.js';
import { TokenBucket, type RateLimiter } from './rate-limit.js';
import type { ClusterLink } from './cluster.js';

/** Requests queued on one connection beyond this are refused with rate_limited. */
const MAX_PENDING_REQUESTS = 64;

export interface WsData {
  conn: Connection | null;
  port: SocketPort | null;
  closed: boolean;
  authenticating: boolean;
  welcomed: boolean;
  helloTimer: NodeJS.Timeout | null;
  bucket: TokenBucket;
  chain: Promise<void>;
  pending: number;
}

export interface WsDeps {
  config: Config;
  store: ChatStore;
  auth: Authenticator;
  registry: ConnectionRegistry;
  membership: MembershipCache;
  log: Logger;
  metrics: Metrics;
  sendLimiter: RateLimiter;
  admitSend(): void;
  onEventCommitted(): void;
  /** Distributed mode: presence entries and typing for other nodes. */
  cluster: Pick<ClusterLink, 'connected' | 'disconnected' | 'publishEphemeral'> | null;
  /** All sockets, welcomed or not, for draining. */
  sockets: Set<WebSocket<WsData>>;
}

/**
 * Our limit is checked after each send; uWS' own maxBackpressure is set one frame (plus the close
 * frame) above it, so uWS never silently drops a frame and the 4002 close frame still fits.
 * A class, not an object of closures: methods on the prototype keep each connection smaller.
 */
class UwsSocketPort implements SocketPort {
  constructor(
    private readonly ws: WebSocket<WsData>,
    private readonly ud: WsData,
    private readonly maxBufferedBytes: number,
  ) {}

  send(text: string): boolean {
    if (this.ud.closed) return false;
    let result = 0;
    this.ws.cork(() => {
      result = this.ws.send(text, false, false);
    });
    return result !== 2 && this.ws.getBufferedAmount() <= this.maxBufferedBytes;
  }

  bufferedAmount(): number {
    return this.ud.closed ? 0 : this.ws.getBufferedAmount();
  }

  batch(fn: () => void): void {
    if (this.ud.closed) return;
    this.ws.cork(fn);
  }

  end(code: number, reason: string): void {
    if (this.ud.closed) return;
    this.ud.closed = true;
    this.ws.end(code, reason);
  }
}

export function createWsBehavior(deps: WsDeps): WebSocketBehavior<WsData> {
  const { config, store, auth, registry, membership, log, metrics } = deps;
  const connDeps = {
    history: store,
    log,
    metrics,
    fillBatch: 500,
    // Catch-up pauses with room left for one more maximal message frame below the hard limit.
    highWaterBytes: config.limits.maxConnectionBufferBytes - (config.limits.maxPayloadBytes + 4096),
    drainTimeoutMs: 30_000,
  };

  // Every connection's request chain starts from this one settled promise instead of its own.
  const idle = Promise.resolve();

  function reply(ud: WsData, frame: ServerFrame): void {
    if (!ud.closed) ud.port!.send(encodeFrame(frame));
  }

  function replyError(ud: WsData, err: unknown, ref: string | undefined): void {
    const e = toAppError(err);
    if (e.code === 'internal') log.error({ err: e.cause ?? e, user_id: ud.conn?.userId }, 'frame handling failed');
    metrics.wsErrors.inc({ code: e.code });
    const frame: ServerFrame = { type: 'error', code: e.code, message: e.message };
    if (ref !== undefined) frame.ref = ref;
    reply(ud, frame);
  }

  async function hello(ud: WsData, frame: Extract<ClientFrame, { type: 'hello' }>): Promise<void> {
    ud.authenticating = true;
    let userId: string;
    try {
      userId = await auth.verify(frame.token);
    } catch (err) {
      replyError(ud, err, undefined);
      ud.port!.end(CloseCode.unauthorized, 'unauthorized');
      return;
    }
    if (ud.closed) return;
    const conn = new Connection(userId, ud.port!, connDeps);
    ud.conn = conn;
    // Registered before reading the user's conversations, so a message committed after that read
    // is seen live (or as a gap) and never missed.
    registry.add(conn);
    await deps.cluster?.connected(userId);
    let conversations: Array<{ conversation_id: string; last_seq: number }>;
    try {
      conversations = await store.conversationsOf(userId);
    } catch (err) {
      replyError(ud, err, undefined);
      ud.port!.end(CloseCode.resyncFailed, 'unavailable');
      return;
    }
    if (ud.closed) return;
    const known = new Map(conversations.map((c) => [c.conversation_id, c.last_seq] as const));
    const resume = new Map<string, number>();
    const rejected: string[] = [];
    for (const [conv, seq] of frame.resume) (known.has(conv) ? resume.set(conv, seq) : rejected.push(conv));
    if (ud.helloTimer) clearTimeout(ud.helloTimer);
    ud.helloTimer = null;
    ud.authenticating = false;
    ud.welcomed = true;
    metrics.activeConnections.inc();
    reply(ud, {
      type: 'welcome',
      user_id: userId,
      session_id: conn.sessionId,
      node_id: config.nodeId,
      heartbeat_interval_ms: config.timeouts.heartbeatIntervalMs,
      protocol_version: PROTOCOL_VERSION,
    });
    for (const conv of rejected) {
      const status = await store.membership(userId, conv).catch(() => 'not_member' as const);
      replyError(ud, status === 'not_found' ? new AppError('not_found', 'conversation not found') : new AppError('forbidden', 'not a member of this conversation'), conv);
    }
    conn.activate(known, resume);
  }

  async function request(ud: WsData, frame: ClientFrame): Promise<void> {
    const conn = ud.conn!;
    const me = conn.userId;
    switch (frame.type) {
      case 'send': {
        if (!deps.sendLimiter.take(me)) throw new AppError('rate_limited', 'too many messages; slow down', { retryAfterS: 1 });
        deps.admitSend();
        const timer = metrics.dbWriteSeconds.startTimer();
        const traceId = randomBytes(8).toString('hex');
        const { envelope, duplicate } = await store.sendMessage(me, frame.conversation_id, frame.idempotency_key, frame.payload, traceId);
        timer();
        log.debug({ trace_id: traceId, conversation_id: envelope.conversation_id, message_id: envelope.message_id, sequence: envelope.sequence_number, duplicate }, 'message accepted');
        if (duplicate) metrics.duplicateSends.inc();
        else {
          metrics.messagesAccepted.inc({ via: 'ws' });
          deps.onEventCommitted();
        }
        reply(ud, {
          type: 'ack',
          idempotency_key: envelope.idempotency_key,
          conversation_id: envelope.conversation_id,
          message_id: envelope.message_id,
          sequence_number: envelope.sequence_number,
          created_at: envelope.created_at,
          duplicate,
        });
        return;
      }
      case 'sync': {
        const page = await store.listMessages(me, frame.conversation_id, frame.after_sequence, frame.limit);
        reply(ud, { type: 'messages', conversation_id: frame.conversation_id, messages: page.messages, has_more: page.has_more });
        return;
      }
      case 'read': {
        const r = await store.markRead(me, frame.conversation_id, frame.sequence_number, null);
        if (r.advanced) deps.onEventCommitted();
        return;
      }
      case 'typing': {
        const members = await membership.isMember(frame.conversation_id, me);
        if (members.size === 0) throw new AppError('not_found', 'conversation not found');
        if (!members.has(me)) throw new AppError('forbidden', 'not a member of this conversation');
        const typing = { type: 'typing', conversation_id: frame.conversation_id, user_id: me } as const;
        registry.deliverFrame(members, encodeFrame(typing), { exceptUser: me, conversationId: frame.conversation_id });
        deps.cluster?.publishEphemeral(frame.conversation_id, me, members, typing);
        return;
      }
      case 'ping':
      case 'hello':
        return;
    }
  }

  function onMessage(ws: WebSocket<WsData>, message: ArrayBuffer, isBinary: boolean): void {
    const ud = ws.getUserData();
    if (ud.closed) return;
    let raw: unknown;
    let frame: ClientFrame;
    try {
      if (isBinary) throw new AppError('invalid_frame', 'only JSON text frames are accepted');
      if (!ud.bucket.take()) throw new AppError('rate_limited', 'too many frames; slow down', { retryAfterS: 1 });
      raw = parseJsonFrame(Buffer.from(message).toString('utf8'));
      frame = decodeClientFrame(raw, config.limits);
    } catch (err) {
      replyError(ud, err, frameRef(raw));
      if (!ud.welcomed && !ud.authenticating) ud.port!.end(CloseCode.protocolViolation, 'hello expected');
      return;
    }
    if (frame.type === 'ping') {
      reply(ud, { type: 'pong' });
      return;
    }
    if (!ud.welcomed) {
      if (frame.type === 'hello' && !ud.authenticating) {
        void hello(ud, frame).catch((err) => replyError(ud, err, undefined));
      } else if (ud.authenticating) {
        replyError(ud, new AppError('invalid_frame', 'wait for welcome before sending requests'), frameRef(raw));
      } else {
        replyError(ud, new AppError('unauthorized', 'the first frame must be hello'), frameRef(raw));
        ud.port!.end(CloseCode.protocolViolation, 'hello expected');
      }
      return;
    }
    if (frame.type === 'hello') {
      replyError(ud, new AppError('invalid_frame', 'already said hello'), undefined);
      return;
    }
    const ref = frameRef(raw);
    if (ud.pending >= MAX_PENDING_REQUESTS) {
      replyError(ud, new AppError('rate_limited', `more than ${MAX_PENDING_REQUESTS} requests in flight`, { retryAfterS: 1 }), ref);
      return;
    }
    ud.pending++;
    ud.chain = ud.chain
      .then(() => (ud.closed ? undefined : request(ud, frame)))
      .catch((err) => replyError(ud, err, ref))
      .finally(() => {
        ud.pending--;
      });
  }

  return {
    maxPayloadLength: config.limits.maxFrameBytes,
    maxBackpressure: config.limits.maxConnectionBufferBytes + config.limits.maxFrameBytes + 1024,
    closeOnBackpressureLimit: 0,
    idleTimeout: config.timeouts.idleS,
    sendPingsAutomatically: true,
    compression: uWS.DISABLED,
    upgrade(res, req, context) {
      const ud: WsData = {
        conn: null,
        port: null,
        closed: false,
        authenticating: false,
        welcomed: false,
        helloTimer: null,
        bucket: new TokenBucket(config.limits.framesPerSecond, config.limits.frameBurst),
        chain: idle,
        pending: 0,
      };
      res.upgrade(ud, req.getHeader('sec-websocket-key'), req.getHeader('sec-websocket-protocol'), req.getHeader('sec-websocket-extensions'), context);
    },
    open(ws) {
      const ud = ws.getUserData();
      ud.port = new UwsSocketPort(ws, ud, config.limits.maxConnectionBufferBytes);
      deps.sockets.add(ws);
      ud.helloTimer = setTimeout(() => {
        if (ud.welcomed || ud.closed) return;
        replyError(ud, new AppError('unauthorized', `no hello within ${config.timeouts.helloMs} ms`), undefined);
        ud.port!.end(CloseCode.helloTimeout, 'hello timeout');
      }, config.timeouts.helloMs);
      ud.helloTimer.unref();
    },
    message: onMessage,
    drain(ws) {
      ws.getUserData().conn?.onDrain();
    },
    close(ws) {
      const ud = ws.getUserData();
      ud.closed = true;
      deps.sockets.delete(ws);
      if (ud.helloTimer) clearTimeout(ud.helloTimer);
      const conn = ud.conn;
      if (!conn) return;
      registry.remove(conn);
      deps.cluster?.disconnected(conn.userId);
      const positions = conn.onClose();
      if (ud.welcomed) metrics.activeConnections.dec();
      store.recordDelivered(conn.userId, positions).catch((err) => log.debug({ err }, 'could not record delivery positions'));
    },
  };
}
