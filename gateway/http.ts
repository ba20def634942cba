/**
 * uWS request plumbing. uWS request objects are only valid synchronously inside the handler, so
 * everything needed is copied first; the response is only touched if the client has not aborted,
 * and always inside cork().
 */
import type { HttpRequest, HttpResponse } from 'uWebSockets.js';
import { AppError, toAppError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { Metrics } from '../common/metrics.js';

const STATUS_TEXT: Record<number, string> = {
  200: 'OK', 201: 'Created', 204: 'No Content', 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden',
  404: 'Not Found', 405: 'Method Not Allowed', 409: 'Conflict', 413: 'Payload Too Large', 429: 'Too Many Requests',
  500: 'Internal Server Error', 503: 'Service Unavailable',
};

export interface RequestContext {
  method: string;
  url: string;
  query: URLSearchParams;
  params: string[];
  authorization: string;
  contentType: string;
  body: Buffer | null;
  traceId: string;
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

export function createHttpHandler(deps: { log: Logger; metrics: Metrics; maxBodyBytes: number; newTraceId: () => string }) {
  const { log, metrics } = deps;

  function send(res: HttpResponse, state: { aborted: boolean }, route: string, reply: Reply): void {
    if (state.aborted) return;
    state.aborted = true; // a response is written at most once
    metrics.httpRequests.inc({ route, status: String(reply.status) });
    res.cork(() => {
      res.writeStatus(`${reply.status} ${STATUS_TEXT[reply.status] ?? ''}`);
      for (const [k, v] of Object.entries(reply.headers ?? {})) res.writeHeader(k, v);
      if (reply.raw) {
        res.writeHeader('content-type', reply.raw.contentType);
        res.end(reply.raw.data);
      } else if (reply.body !== undefined) {
        res.writeHeader('content-type', 'application/json');
        res.end(JSON.stringify(reply.body));
      } else {
        res.end();
      }
    });
  }

  function errorReply(err: unknown, traceId: string, route: string): Reply {
    const e = toAppError(err);
    if (e.code === 'internal') log.error({ err: e.cause ?? e, trace_id: traceId, route }, 'request failed');
    const headers: Record<string, string> = {};
    if (e.retryAfterS !== undefined) headers['retry-after'] = String(e.retryAfterS);
    return { status: e.status, body: { error: { code: e.code, message: e.message } }, headers };
  }

  /** Wraps a handler for app.get/post(...). `paramCount` path parameters are copied. */
  return function route(name: string, handler: Handler, paramCount = 0) {
    return (res: HttpResponse, req: HttpRequest) => {
      const state = { aborted: false };
      res.onAborted(() => {
        state.aborted = true;
      });
      const params: string[] = [];
      for (let i = 0; i < paramCount; i++) params.push(decodeURIComponent(req.getParameter(i) ?? ''));
      const ctx: RequestContext = {
        method: req.getMethod().toUpperCase(),
        url: req.getUrl(),
        query: new URLSearchParams(req.getQuery() ?? ''),
        params,
        authorization: req.getHeader('authorization'),
        contentType: req.getHeader('content-type'),
        body: null,
        traceId: deps.newTraceId(),
      };
      const dispatch = () => {
        Promise.resolve()
          .then(() => handler(ctx))
          .then(
            (reply) => send(res, state, name, reply),
            (err) => send(res, state, name, errorReply(err, ctx.traceId, name)),
          );
      };
      if (ctx.method === 'GET' || ctx.method === 'HEAD') {
        dispatch();
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      res.onData((chunk, isLast) => {
        if (state.aborted) return;
        size += chunk.byteLength;
        if (size > deps.maxBodyBytes) {
          send(res, state, name, errorReply(new AppError('payload_too_large', `request body exceeds ${deps.maxBodyBytes} bytes`), ctx.traceId, name));
          return;
        }
        chunks.push(Buffer.from(chunk.slice(0)));
        if (isLast) {
          ctx.body = Buffer.concat(chunks);
          dispatch();
        }
      });
    };
  };
}
