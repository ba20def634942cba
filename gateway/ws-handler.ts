/**
 * The v1 WebSocket protocol on uWS: the connection lifecycle and the uWS glue. A socket is in one
 * phase at a time:
 *
 *   awaiting_hello ──hello──▶ authenticating ──welcome──▶ open ──▶ closing
 *          └───────────────── (bad first frame, timeout, refusal) ─────┘
 *
 * Frames are decoded at the edge; every failure is answered with an `error` frame and never thrown
 * into the event loop (every uWS callback is guarded). Requests on one open connection run in the
 * order they were sent (a bounded per-connection chain), each by its handler in ws-commands.ts.
 */
import uWS from 'uWebSockets.js';
import type { HttpRequest, HttpResponse, WebSocket, WebSocketBehavior, us_socket_context_t } from 'uWebSockets.js';
import { AppError, causeSummary, toAppError } from '../common/errors.js';
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
import type { LogLimiter } from '../common/log-limiter.js';
import type { Metrics } from '../common/metrics.js';
import type { MembershipCache } from '../common/membership.js';
import type { Authenticator } from './auth.js';
import type { ChatStore } from './chat-store.js';
import { Connection } from './connection.js';
import { shareConcurrentReads } from './shared-reads.js';
import { AddressCounter, type EdgePolicy } from './edge.js';
import { peerAddress, STATUS_TEXT } from './http.js';
import type { ConnectionRegistry } from './registry.js';
import { TokenBucket, type RateLimiter } from './rate-limit.js';
import type { ClusterPorts } from './pipeline.js';
import type { PresenceService } from './presence-watch.js';
import { createCommandHandlers, runCommand, type RequestFrame } from './ws-commands.js';
import { UwsSocketPort, WriteCoalescer, type PortLifecycle } from './socket-port.js';
import type { SendTicket } from './send-fence.js';

/** Requests queued on one connection beyond this are refused with rate_limited. */
const MAX_PENDING_REQUESTS = 64;
/** How often open sockets are checked for an expired token. */
const EXPIRY_SWEEP_MS = 1000;

/** The lifecycle state; the connection exists from the moment the token is verified. */
export type Session =
  | { readonly phase: 'awaiting_hello' }
  | { readonly phase: 'authenticating'; readonly conn: Connection | null }
  | { readonly phase: 'open'; readonly conn: Connection }
  | { readonly phase: 'closing'; readonly conn: Connection | null };
export type Phase = Session['phase'];

const connOf = (s: Session): Connection | null => (s.phase === 'awaiting_hello' ? null : s.conn);
/** Read through a function: after an await the phase may have changed (TypeScript would keep it narrowed). */
const closing = (ud: WsData): boolean => ud.session.phase === 'closing';
/** Ends the lifecycle (idempotent): nothing more is written to this socket. */
export const markClosing = (ud: WsData): void => {
  if (ud.session.phase !== 'closing') ud.session = { phase: 'closing', conn: connOf(ud.session) };
};

export interface WsData {
  session: Session;
  port: UwsSocketPort;
  /** The client address this socket counts against (per-address cap). */
  address: string;
  helloTimer: NodeJS.Timeout | null;
  bucket: TokenBucket;
  chain: Promise<void>;
  pending: number;
  /** When the token presented at hello expires (the socket is closed then). */
  expiresAtMs: number;
}

export interface WsDeps {
  config: Config;
  store: ChatStore;
  auth: Authenticator;
  registry: ConnectionRegistry;
  /** This node's presence registration may have lapsed: a gap is part of its catch-up. */
  registrationLapsed?(): boolean;
  membership: MembershipCache;
  log: Logger;
  logs: LogLimiter;
  metrics: Metrics;
  edge: EdgePolicy;
  sendLimiter: RateLimiter;
  admitSend(): void;
  newTraceId(): string;
  onEventCommitted(): void;
  /** Distributed mode: presence entries and typing for other nodes. */
  cluster: ClusterPorts | null;
  /** Typing offered to the other regions (best effort); absent: one region. */
  regionTyping?: (conversationId: string, userId: string) => void;
  /** Presence for clients (announces this node's users, serves presence_subscribe). */
  presence: PresenceService;
  /** All sockets, in any phase, for draining. */
  sockets: Set<WebSocket<WsData>>;
}

/** The socket's side of its port: the lifecycle lives in WsData (one object per socket, methods on the prototype). */
class WsPortLifecycle implements PortLifecycle {
  constructor(
    private readonly ud: WsData,
    private readonly onOverflow: (ud: WsData) => void,
  ) {}
  closing(): boolean {
    return closing(this.ud);
  }
  markClosing(): void {
    markClosing(this.ud);
  }
  flushed(): void {
    connOf(this.ud.session)?.onDrain();
  }
  overflowed(): void {
    this.onOverflow(this.ud);
  }
}

export function createWsBehavior(deps: WsDeps): WebSocketBehavior<WsData> {
  const { config, store, auth, registry, log, logs, metrics } = deps;
  const limits = config.limits;
  const coalescer = new WriteCoalescer(
    (frames) => {
      metrics.wsWrites.inc();
      metrics.wsFramesWritten.inc(frames);
    },
    (err) => {
      metrics.internalErrors.inc({ where: 'ws-flush' });
      log.error({ err }, 'writing to a socket failed (a bug)');
    },
  );
  const onOverflow = (ud: WsData) => {
    metrics.failedDeliveries.inc({ reason: 'slow_consumer' });
    const conn = connOf(ud.session);
    log.info({ user_id: conn?.userId, session_id: conn?.sessionId }, 'closing slow consumer (a write over the buffer bound)');
  };
  const connDeps = {
    history: shareConcurrentReads(store),
    log,
    metrics,
    fillBatch: 500,
    // Catch-up pauses with room left for one more maximal message frame below the hard limit.
    highWaterBytes: limits.maxConnectionBufferBytes - (limits.maxPayloadBytes + 4096),
    drainTimeoutMs: config.timeouts.slowReaderMs,
    onLeft: (conn: Connection, conversationId: string) => registry.leaveRoom(conn, conversationId),
    reorder: { windowMs: limits.reorderWindowMs, maxHeld: limits.reorderMaxHeld },
    registrationLapsed: () => deps.registrationLapsed?.() ?? false,
  };
  // A `messages` reply is at most a quarter of the buffer bound, sent only once the buffer is below
  // half of it: a reply can never push a connection past its bound, and a client that does not
  // read stalls its own request chain (then is closed as slow) instead of growing server memory.
  const maxSyncPageBytes = Math.min(limits.maxPageBytes, Math.floor(limits.maxConnectionBufferBytes / 4));
  const admitBelowBytes = Math.floor(limits.maxConnectionBufferBytes / 2);
  const addresses = new AddressCounter();
  const commands = createCommandHandlers({ ...deps, maxSyncPageBytes });

  // Every connection's request chain starts from this one settled promise instead of its own.
  const idle = Promise.resolve();

  function reply(ud: WsData, frame: ServerFrame): void {
    if (closing(ud)) return;
    // Replies obey the same buffer bound as deliveries.
    if (!ud.port.send(encodeFrame(frame))) {
      metrics.failedDeliveries.inc({ reason: 'slow_consumer' });
      ud.port.end(CloseCode.slowConsumer, 'slow consumer: reconnect and resume');
    }
  }

  function replyError(ud: WsData, err: unknown, ref: string | undefined): void {
    const e = toAppError(err);
    const fields = { user_id: connOf(ud.session)?.userId, address: ud.address, code: e.code };
    if (e.code === 'internal') logs.write('error', 'internal:ws', { ...fields, err: e.cause ?? e }, 'frame handling failed');
    else if (e.code === 'unauthorized' || e.code === 'too_many_connections' || e.code === 'unavailable')
      logs.write('warn', `refused:${e.code}`, { ...fields, reason: e.message, cause: causeSummary(e) }, 'websocket refused');
    metrics.wsErrors.inc({ code: e.code });
    const frame: ServerFrame = { type: 'error', code: e.code, message: e.message };
    if (ref !== undefined) frame.ref = ref;
    if (e.reason !== undefined) frame.reason = e.reason;
    if (e.userIds !== undefined) frame.user_ids = e.userIds;
    reply(ud, frame);
  }

  function refuse(ud: WsData, err: AppError, code: number, reason: string): void {
    replyError(ud, err, undefined);
    ud.port.end(code, reason);
  }

  async function hello(ud: WsData, frame: Extract<ClientFrame, { type: 'hello' }>): Promise<void> {
    ud.session = { phase: 'authenticating', conn: null };
    let userId: string;
    try {
      const token = await auth.verify(frame.token);
      userId = token.userId;
      ud.expiresAtMs = token.expiresAtMs;
      // Not awaited: a display name never delays a connection.
      if (token.name) void store.noteTokenName(userId, token.name);
    } catch (err) {
      const e = toAppError(err);
      refuse(
        ud,
        e,
        e.code === 'unavailable' ? CloseCode.resyncFailed : CloseCode.unauthorized,
        e.code === 'unavailable' ? 'unavailable' : 'unauthorized',
      );
      return;
    }
    if (closing(ud)) return;
    if (registry.countOf(userId) >= limits.maxConnectionsPerUser) {
      refuse(
        ud,
        new AppError('too_many_connections', `this user already holds ${limits.maxConnectionsPerUser} connections on this node`, {
          retryAfterS: 5,
        }),
        CloseCode.tooManyConnections,
        'too many connections',
      );
      return;
    }
    const conn = new Connection(userId, ud.port, connDeps);
    ud.session = { phase: 'authenticating', conn };
    metrics.activeConnections.inc();
    // Registered before reading the user's conversations, so a message committed after that read
    // is seen live (or as a gap) and never missed.
    registry.add(conn);
    await deps.cluster?.connected(userId);
    // After the registry knows it (another node deciding "offline" sees it); never for a socket that
    // already closed (its close would not be undone).
    if (!closing(ud)) deps.presence.connected(conn);
    let conversations: Array<{ conversation_id: string; last_seq: number; large: boolean }>;
    try {
      conversations = await store.conversationsOf(userId);
    } catch (err) {
      refuse(ud, toAppError(err), CloseCode.resyncFailed, 'unavailable');
      return;
    }
    if (closing(ud)) return;
    const large = conversations.filter((c) => c.large).map((c) => c.conversation_id);
    if (large.length > 0) {
      // Large rooms are delivered by room interest, not to this user: enter them, wait until this
      // node is known to want them, then read their sequences again. Anything committed between
      // the two reads was not routed here; it is noted like live traffic during hello (a fill).
      await Promise.all(large.map((c) => registry.enterRoom(conn, c)));
      try {
        for (const r of await store.lastSequences(large)) conn.noteLive(r.conversation_id, r.last_seq);
      } catch (err) {
        refuse(ud, toAppError(err), CloseCode.resyncFailed, 'unavailable');
        return;
      }
      if (closing(ud)) return;
    }
    const known = new Map(conversations.map((c) => [c.conversation_id, c.last_seq] as const));
    const resume = new Map<string, number>();
    const rejected: string[] = [];
    for (const [conv, seq] of frame.resume) known.has(conv) ? resume.set(conv, seq) : rejected.push(conv);
    // Positions of a lost home's numbering (a regional failover): resumed from the takeover point.
    // Best effort: without the answer, positions are taken as they are (as before v1.4).
    const rewinds = frame.resumeLastIds.size > 0 ? await store.failoverRewinds(resume, frame.resumeLastIds).catch(() => null) : null;
    if (closing(ud)) return;
    if (ud.helloTimer) clearTimeout(ud.helloTimer);
    ud.helloTimer = null;
    ud.session = { phase: 'open', conn };
    reply(ud, {
      type: 'welcome',
      user_id: userId,
      session_id: conn.sessionId,
      node_id: config.nodeId,
      heartbeat_interval_ms: config.timeouts.heartbeatIntervalMs,
      protocol_version: PROTOCOL_VERSION,
    });
    for (const [conv, takeover] of rewinds ?? []) {
      reply(ud, { type: 'rewind', conversation_id: conv, after_sequence: takeover, reason: 'rehomed' });
      resume.set(conv, takeover);
    }
    for (const conv of rejected) {
      const status = await store.membership(userId, conv).catch(() => 'not_member' as const);
      replyError(
        ud,
        status === 'not_found'
          ? new AppError('not_found', 'conversation not found')
          : new AppError('forbidden', 'not a member of this conversation'),
        conv,
      );
    }
    conn.activate(known, resume);
  }

  /** Runs one request of an open connection, after the socket has room for its answer. */
  async function request(ud: WsData, conn: Connection, frame: RequestFrame, ticket: SendTicket | null): Promise<void> {
    if (!(await conn.whenWritable(admitBelowBytes))) {
      metrics.failedDeliveries.inc({ reason: 'slow_consumer' });
      conn.end(CloseCode.slowConsumer, 'slow consumer: reconnect and resume');
      return;
    }
    if (ud.session.phase !== 'open') return;
    if (ticket) conn.fences.admit(ticket);
    await runCommand(commands, frame, {
      userId: conn.userId,
      reply: (f) => reply(ud, f),
      subscribed: (c) => conn.isSubscribed(c),
      watcher: conn,
    });
  }

  function onMessage(ud: WsData, message: ArrayBuffer, isBinary: boolean): void {
    if (closing(ud)) return;
    let raw: unknown;
    let frame: ClientFrame;
    try {
      if (isBinary) throw new AppError('invalid_frame', 'only JSON text frames are accepted');
      if (!ud.bucket.take()) throw new AppError('rate_limited', 'too many frames; slow down', { retryAfterS: 1 });
      raw = parseJsonFrame(Buffer.from(message).toString('utf8'));
      frame = decodeClientFrame(raw, limits);
    } catch (err) {
      replyError(ud, err, frameRef(raw));
      if (ud.session.phase === 'awaiting_hello') ud.port.end(CloseCode.protocolViolation, 'hello expected');
      return;
    }
    const session = ud.session;
    switch (session.phase) {
      case 'awaiting_hello':
        if (frame.type === 'hello') {
          hello(ud, frame).catch((err) => refuse(ud, toAppError(err), CloseCode.resyncFailed, 'hello failed'));
        } else {
          refuse(ud, new AppError('unauthorized', 'the first frame must be hello'), CloseCode.protocolViolation, 'hello expected');
        }
        return;
      case 'authenticating':
        if (frame.type === 'ping') reply(ud, { type: 'pong' });
        else replyError(ud, new AppError('invalid_frame', 'wait for welcome before sending requests'), frameRef(raw));
        return;
      case 'closing':
        return;
      case 'open':
        break;
    }
    if (frame.type === 'ping') {
      reply(ud, { type: 'pong' });
      return;
    }
    if (frame.type === 'hello') {
      replyError(ud, new AppError('invalid_frame', 'already said hello'), undefined);
      return;
    }
    const ref = frameRef(raw);
    const conn = session.conn;
    const req = frame;
    // Stamped at arrival: a refusal fences only the sends that arrived after it (gateway/send-fence.ts).
    const ticket = req.type === 'send' ? conn.fences.ticket(req.conversation_id, req.idempotency_key) : null;
    const refused = (err: unknown) => {
      if (ticket) conn.fences.refused(ticket, err);
      replyError(ud, err, ref);
    };
    if (ud.pending >= MAX_PENDING_REQUESTS) {
      refused(new AppError('rate_limited', `more than ${MAX_PENDING_REQUESTS} requests in flight`, { retryAfterS: 1 }));
      return;
    }
    ud.pending++;
    ud.chain = ud.chain
      .then(() => (ud.session.phase === 'open' ? request(ud, conn, req, ticket) : undefined))
      .catch(refused)
      .finally(() => {
        ud.pending--;
      });
  }

  /**
   * Wraps a uWS callback: an exception must never reach uWS (it would end the process). What
   * escapes is logged (rate limited) and answered by `onError` where the callback can answer.
   */
  function guard<A extends unknown[]>(kind: string, fn: (...args: A) => void, onError?: (...args: A) => void): (...args: A) => void {
    return (...args: A) => {
      try {
        fn(...args);
      } catch (err) {
        metrics.internalErrors.inc({ where: `ws_${kind}` });
        logs.write('error', `internal:ws_${kind}`, { err }, 'websocket callback failed');
        try {
          onError?.(...args);
        } catch {
          /* nothing more can be done for this socket */
        }
      }
    };
  }

  function refuseUpgrade(res: HttpResponse, err: AppError, address: string): void {
    logs.write('warn', `refused:${err.code}`, { address, code: err.code }, 'websocket upgrade refused');
    res.cork(() => {
      res.writeStatus(`${err.status} ${STATUS_TEXT[err.status] ?? ''}`);
      res.writeHeader('content-type', 'application/json');
      res.writeHeader('cache-control', 'no-store');
      if (err.retryAfterS !== undefined) res.writeHeader('retry-after', String(err.retryAfterS));
      res.end(JSON.stringify({ error: { code: err.code, message: err.message } }));
    });
  }

  const sweep = setInterval(() => {
    const now = Date.now();
    for (const ws of deps.sockets) {
      const ud = ws.getUserData();
      if (ud.session.phase === 'open' && ud.expiresAtMs <= now) {
        refuse(ud, new AppError('unauthorized', 'token expired: reconnect with a fresh token'), CloseCode.tokenExpired, 'token expired');
      }
    }
  }, EXPIRY_SWEEP_MS);
  sweep.unref();

  return {
    maxPayloadLength: limits.maxFrameBytes,
    maxBackpressure: limits.maxConnectionBufferBytes + limits.maxFrameBytes + 1024,
    closeOnBackpressureLimit: 0,
    idleTimeout: config.timeouts.idleS,
    sendPingsAutomatically: true,
    compression: uWS.DISABLED,
    upgrade: guard(
      'upgrade',
      (res: HttpResponse, req: HttpRequest, context: us_socket_context_t) => {
        const key = req.getHeader('sec-websocket-key');
        const protocol = req.getHeader('sec-websocket-protocol');
        const extensions = req.getHeader('sec-websocket-extensions');
        const host = req.getHeader('host');
        const origin = req.getHeader('origin');
        const address = deps.edge.clientAddress(peerAddress(res), req.getHeader('x-forwarded-for'));
        try {
          deps.edge.checkHost(host);
          deps.edge.checkOrigin(origin, host);
          if (addresses.count(address) >= limits.maxConnectionsPerAddress) {
            throw new AppError(
              'too_many_connections',
              `this address already holds ${limits.maxConnectionsPerAddress} connections on this node`,
              { retryAfterS: 5 },
            );
          }
        } catch (err) {
          refuseUpgrade(res, toAppError(err), address);
          return;
        }
        const ud = {
          session: { phase: 'awaiting_hello' },
          address,
          helloTimer: null,
          bucket: new TokenBucket(limits.framesPerSecond, limits.frameBurst),
          chain: idle,
          pending: 0,
          expiresAtMs: Infinity,
        } as Omit<WsData, 'port'> as WsData;
        // The port is made at open: uWS copies this object's fields into the socket's own user data.
        res.upgrade(ud, key, protocol, extensions, context);
      },
      (res) => res.cork(() => res.writeStatus('500 Internal Server Error').end()),
    ),
    open: guard(
      'open',
      (ws: WebSocket<WsData>) => {
        const ud = ws.getUserData();
        ud.port = new UwsSocketPort(
          new WsPortLifecycle(ud, onOverflow),
          limits.maxConnectionBufferBytes,
          coalescer,
          limits.wsCoalesceBytes,
        );
        ud.port.attach(ws);
        ud.address = addresses.add(ud.address);
        deps.sockets.add(ws);
        ud.helloTimer = setTimeout(() => {
          if (ud.session.phase !== 'awaiting_hello' && ud.session.phase !== 'authenticating') return;
          refuse(
            ud,
            new AppError('unauthorized', `no hello within ${config.timeouts.helloMs} ms`),
            CloseCode.helloTimeout,
            'hello timeout',
          );
        }, config.timeouts.helloMs);
        ud.helloTimer.unref();
      },
      (ws) => ws.end(CloseCode.resyncFailed, 'internal error'),
    ),
    message: guard(
      'message',
      (ws: WebSocket<WsData>, message: ArrayBuffer, isBinary: boolean) => onMessage(ws.getUserData(), message, isBinary),
      (ws) => replyError(ws.getUserData(), new AppError('internal', 'internal error'), undefined),
    ),
    drain: guard('drain', (ws: WebSocket<WsData>) => connOf(ws.getUserData().session)?.onDrain()),
    close: guard('close', (ws: WebSocket<WsData>) => {
      const ud = ws.getUserData();
      markClosing(ud);
      if (deps.sockets.delete(ws)) addresses.remove(ud.address);
      if (ud.helloTimer) clearTimeout(ud.helloTimer);
      const conn = connOf(ud.session);
      if (!conn) return;
      registry.remove(conn);
      deps.cluster?.disconnected(conn.userId);
      deps.presence.disconnected(conn);
      const positions = conn.onClose();
      metrics.activeConnections.dec();
      store.recordDelivered(conn.userId, positions).catch((err) => log.debug({ err }, 'could not record delivery positions'));
    }),
  };
}
