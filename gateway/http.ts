/**
 * uWS request plumbing. uWS request objects are only valid synchronously inside the handler, so
 * everything needed is copied first; the response is only touched if the client has not aborted,
 * and always inside cork(). Nothing a request carries can throw out of a uWS callback: every step is
 * guarded and an unexpected error answers `internal`. Bodies are written with uWS backpressure
 * (tryEnd/onWritable), counted against a node-wide budget, and abandoned if the client stops reading.
 */
import type { HttpRequest, HttpResponse } from 'uWebSockets.js';
import { AppError, causeSummary, toAppError } from '../common/errors.js';
import type { LogLimiter } from '../common/log-limiter.js';
import type { Metrics } from '../common/metrics.js';
import type { EdgePolicy } from './edge.js';
import { parseTraceparent } from '../common/trace-id.js';
import { deadlineTimer } from '../common/timeout.js';

export const STATUS_TEXT: Record<number, string> = {
  200: 'OK',
  201: 'Created',
  204: 'No Content',
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  409: 'Conflict',
  413: 'Payload Too Large',
  421: 'Misdirected Request',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
};

/** On every API response: never cached, never sniffed, never leaks the URL as a referrer. */
export const API_HEADERS: Readonly<Record<string, string>> = {
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
};

/** Bodies up to this size go out with one end(); larger ones are streamed under backpressure. */
const SMALL_BODY_BYTES = 16 * 1024;

export interface RequestContext {
  method: string;
  url: string;
  query: URLSearchParams;
  params: string[];
  authorization: string;
  contentType: string;
  /** Idempotency-Key header ('' when absent). */
  idempotencyKey: string;
  body: Buffer | null;
  /** For logs: the W3C trace id (of the incoming `traceparent`, else a new one). */
  traceId: string;
  /** A valid incoming `traceparent` header, continued by the spans the request starts. */
  traceparent?: string;
  /** The client's address (the socket peer, or the proxy's X-Forwarded-For when trusted). */
  address: string;
  /** The request comes from an origin listed in REALCHAT_ALLOWED_ORIGINS (CORS applies). */
  corsAllowed: boolean;
}

export interface Reply {
  status: number;
  body?: unknown;
  /** Raw body with its content type (metrics, static files). */
  raw?: { contentType: string; data: string | Buffer };
  headers?: Record<string, string>;
}

export type Handler = (ctx: RequestContext) => Promise<Reply> | Reply;

export function jsonBody(ctx: RequestContext): Record<string, unknown> {
  if (!ctx.body || ctx.body.length === 0) throw new AppError('invalid_request', 'request body must be a JSON object');
  let v: unknown;
  try {
    v = JSON.parse(ctx.body.toString('utf8'));
  } catch {
    throw new AppError('invalid_request', 'request body is not valid JSON');
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new AppError('invalid_request', 'request body must be a JSON object');
  return v as Record<string, unknown>;
}

/** A malformed escape (`%zz`, a lone `%`) stays as written: it then fails validation like any bad id. */
function decodeParam(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw;
  }
}

/** Bytes of response bodies waiting for slow clients, node-wide. */
export class ResponseBudget {
  pending = 0;
  constructor(readonly max: number) {}
  get exhausted(): boolean {
    return this.pending >= this.max;
  }
}

export interface HttpDeps {
  metrics: Metrics;
  maxBodyBytes: number;
  newTraceId: () => string;
  edge: EdgePolicy;
  /** Access log for refused requests and auth failures, and unexpected errors: rate limited. */
  logs: LogLimiter;
  budget: ResponseBudget;
  /** A response that makes no progress this long is abandoned (the connection is closed). */
  stallMs: number;
  /**
   * True once the node drains: its listener is closed, but a client's kept-alive connection would
   * go on being served by a node about to stop. Requests are then refused `unavailable` (but
   * `/healthz`: the process is alive; readiness is refused with the rest) and every answer closes
   * its connection, so the client's next request opens one to another node.
   */
  closing?: () => boolean;
}

export function peerAddress(res: HttpResponse): string {
  return Buffer.from(res.getRemoteAddressAsText()).toString();
}

export function createHttpHandler(deps: HttpDeps) {
  const { metrics, logs, budget } = deps;

  interface State {
    /** A response was started: nothing else may be written. */
    responded: boolean;
    /** The client went away or the response ended: stop streaming, release what is held. */
    finished: boolean;
    /** Body bytes counted against the node-wide budget while a slow client reads them. */
    held: number;
    timer: NodeJS.Timeout | null;
  }

  function finish(state: State): void {
    state.finished = true;
    budget.pending -= state.held;
    state.held = 0;
    if (state.timer) clearTimeout(state.timer);
    state.timer = null;
  }

  /** Streams a large body under backpressure; a client that stops reading for stallMs is dropped. */
  function stream(res: HttpResponse, state: State, data: Buffer): void {
    const start = res.getWriteOffset();
    const [ok, done] = res.tryEnd(data, data.length);
    if (done || ok) return;
    state.held = data.length;
    budget.pending += data.length;
    // A deadline timer: after a turn longer than stallMs, a client that went on reading has its
    // onWritable run (which re-arms) before the stall is judged, instead of being dropped.
    const arm = () => {
      if (state.timer) clearTimeout(state.timer);
      const timer = deadlineTimer(deps.stallMs, () => {
        if (state.finished || state.timer !== timer) return;
        finish(state);
        metrics.failedDeliveries.inc({ reason: 'http_response_stalled' });
        res.close();
      });
      state.timer = timer;
    };
    arm();
    res.onWritable((offset) => {
      if (state.finished) return true;
      let result: [boolean, boolean] = [false, false];
      res.cork(() => {
        result = res.tryEnd(data.subarray(offset - start), data.length);
      });
      if (result[1]) finish(state);
      else arm();
      return result[0];
    });
  }

  function send(res: HttpResponse, state: State, route: string, reply: Reply, extraHeaders: Record<string, string>, head = false): void {
    if (state.responded || state.finished) return;
    state.responded = true;
    metrics.httpRequests.inc({ route, status: String(reply.status) });
    let body: Buffer | string | null = null;
    let contentType: string | null = null;
    if (reply.raw) {
      body = reply.raw.data;
      contentType = reply.raw.contentType;
    } else if (reply.body !== undefined) {
      body = JSON.stringify(reply.body);
      contentType = 'application/json';
    }
    res.cork(() => {
      res.writeStatus(`${reply.status} ${STATUS_TEXT[reply.status] ?? ''}`);
      for (const [k, v] of Object.entries(API_HEADERS)) res.writeHeader(k, v);
      for (const [k, v] of Object.entries(extraHeaders)) res.writeHeader(k, v);
      for (const [k, v] of Object.entries(reply.headers ?? {})) res.writeHeader(k, v);
      if (contentType) res.writeHeader('content-type', contentType);
      const close = deps.closing?.() ?? false;
      if (body === null) res.end(undefined, close);
      else {
        const data = typeof body === 'string' ? Buffer.from(body) : body;
        if (head) res.endWithoutBody(data.length, close);
        else if (data.length <= SMALL_BODY_BYTES) res.end(data, close);
        else stream(res, state, data);
      }
    });
    if (state.held === 0) finish(state);
  }

  function errorReply(err: unknown, ctx: { traceId: string; address: string; method: string; url: string }, route: string): Reply {
    const e = toAppError(err);
    const fields = {
      trace_id: ctx.traceId,
      route,
      method: ctx.method,
      path: ctx.url.slice(0, 200),
      address: ctx.address,
      code: e.code,
      status: e.status,
    };
    if (e.code === 'internal') logs.write('error', `internal:${route}`, { ...fields, err: e.cause ?? e }, 'request failed');
    else if (e.status === 401 || e.status === 403 || e.status === 421 || e.status === 429)
      logs.write('warn', `refused:${e.code}`, fields, 'request refused');
    // Which bound refused it (write queue, database gate, breaker, outbox backlog, ...) is only in
    // the message; what tripped it (a timeout, a lost connection) in the cause.
    else if (e.code === 'unavailable')
      logs.write('warn', 'refused:unavailable', { ...fields, reason: e.message, cause: causeSummary(e) }, 'request refused');
    const headers: Record<string, string> = {};
    if (e.retryAfterS !== undefined) headers['retry-after'] = String(e.retryAfterS);
    const error = { code: e.code, message: e.message, ...(e.reason ? { reason: e.reason } : {}) };
    return { status: e.status, body: { error }, headers };
  }

  /** Wraps a handler for app.get/post(...). `paramCount` path parameters are copied. */
  return function route(name: string, handler: Handler, paramCount = 0) {
    return (res: HttpResponse, req: HttpRequest) => {
      const state: State = { responded: false, finished: false, held: 0, timer: null };
      const ctx: RequestContext = {
        method: '',
        url: '',
        query: new URLSearchParams(),
        params: [],
        authorization: '',
        contentType: '',
        idempotencyKey: '',
        body: null,
        traceId: deps.newTraceId(),
        address: '',
        corsAllowed: false,
      };
      const cors: Record<string, string> = {};
      try {
        res.onAborted(() => finish(state));
        ctx.method = req.getMethod().toUpperCase();
        ctx.url = req.getUrl();
        ctx.query = new URLSearchParams(req.getQuery() ?? '');
        for (let i = 0; i < paramCount; i++) ctx.params.push(decodeParam(req.getParameter(i) ?? ''));
        ctx.authorization = req.getHeader('authorization');
        ctx.contentType = req.getHeader('content-type');
        ctx.idempotencyKey = req.getHeader('idempotency-key');
        const traceparent = req.getHeader('traceparent');
        const parent = parseTraceparent(traceparent);
        if (parent) {
          ctx.traceparent = traceparent;
          ctx.traceId = parent.traceId;
        }
        ctx.address = deps.edge.clientAddress(peerAddress(res), req.getHeader('x-forwarded-for'));
        const host = req.getHeader('host');
        const origin = req.getHeader('origin');
        const allowed = deps.edge.corsOrigin(origin);
        if (allowed) {
          ctx.corsAllowed = true;
          Object.assign(cors, { 'access-control-allow-origin': allowed, vary: 'origin' });
        }
        deps.edge.checkHost(host);
        deps.edge.checkOrigin(origin, host);
        if (budget.exhausted)
          throw new AppError('unavailable', 'server busy: too many responses waiting for slow clients', { retryAfterS: 1 });
        if (deps.closing?.() && name !== 'GET /healthz')
          throw new AppError('unavailable', 'this node is shutting down: retry (another node answers)', { retryAfterS: 1 });
      } catch (err) {
        send(res, state, name, errorReply(err, ctx, name), cors);
        return;
      }
      const dispatch = () => {
        Promise.resolve()
          .then(() => handler(ctx))
          .then(
            (reply) => send(res, state, name, reply, cors, ctx.method === 'HEAD'),
            (err) => send(res, state, name, errorReply(err, ctx, name), cors, ctx.method === 'HEAD'),
          )
          // A failure while writing (a bug in a reply) must not become an unhandled rejection.
          .catch((err) => logs.write('error', `write:${name}`, { err, trace_id: ctx.traceId }, 'response write failed'));
      };
      if (ctx.method === 'GET' || ctx.method === 'HEAD' || ctx.method === 'OPTIONS') {
        dispatch();
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      res.onData((chunk, isLast) => {
        try {
          if (state.responded || state.finished) return;
          size += chunk.byteLength;
          if (size > deps.maxBodyBytes) {
            send(
              res,
              state,
              name,
              errorReply(new AppError('payload_too_large', `request body exceeds ${deps.maxBodyBytes} bytes`), ctx, name),
              cors,
            );
            return;
          }
          chunks.push(Buffer.from(chunk.slice(0)));
          if (isLast) {
            ctx.body = Buffer.concat(chunks);
            dispatch();
          }
        } catch (err) {
          send(res, state, name, errorReply(err, ctx, name), cors);
        }
      });
    };
  };
}
