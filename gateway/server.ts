/** The gateway's uWS app: REST + WebSocket on one port, and the operators' internal port. */
import uWS from 'uWebSockets.js';
import type { WebSocket } from 'uWebSockets.js';
import { encodeFrame, CloseCode } from '../common/protocol.js';
import type { Logger } from '../common/log.js';
import { LogLimiter } from '../common/log-limiter.js';
import type { Metrics } from '../common/metrics.js';
import { startOpsServer } from '../common/ops-server.js';
import { createEdgePolicy } from './edge.js';
import { createHttpHandler, ResponseBudget } from './http.js';
import { loadOpenApiDocument } from './openapi.js';
import { createRestRoutes, type RestDeps, type RestRoutes } from './rest.js';
import { createWsBehavior, markClosing, type WsData, type WsDeps } from './ws-handler.js';
import { findWebRoot, serveStatic, webCsp } from './static-files.js';

export interface GatewayServer {
  port: number;
  /** The internal (operators') port, when REALCHAT_INTERNAL_PORT is set. */
  internalPort: number | null;
  /** Stops accepting, tells every client to reconnect elsewhere (jittered), and closes them. */
  drain(opts: { retryAfterMs: number }): void;
  close(): Promise<void>;
}

/** The REST routes (docs/openapi.yaml documents exactly these; tests/openapi-conformance.test.ts checks it). */
export const REST_ROUTES = [
  { method: 'POST', path: '/v1/conversations', handler: 'createConversation' },
  { method: 'GET', path: '/v1/conversations', handler: 'listConversations' },
  { method: 'PATCH', path: '/v1/conversations/:id', handler: 'updateConversation' },
  { method: 'GET', path: '/v1/conversations/:id/members', handler: 'listMembers' },
  { method: 'POST', path: '/v1/conversations/:id/members', handler: 'addMembers' },
  { method: 'DELETE', path: '/v1/conversations/:id/members/:user_id', handler: 'removeMember' },
  { method: 'PUT', path: '/v1/conversations/:id/members/:user_id/role', handler: 'setRole' },
  { method: 'GET', path: '/v1/conversations/:id/messages', handler: 'listMessages' },
  { method: 'POST', path: '/v1/conversations/:id/messages', handler: 'sendMessage' },
  { method: 'POST', path: '/v1/regions/messages', handler: 'forwardedSend' },
  { method: 'POST', path: '/v1/regions/writes', handler: 'forwardedWrite' },
  { method: 'GET', path: '/v1/regions/failovers', handler: 'regionFailovers' },
  { method: 'POST', path: '/v1/regions/typing', handler: 'forwardedTyping' },
  { method: 'POST', path: '/v1/regions/presence', handler: 'forwardedPresence' },
  { method: 'POST', path: '/v1/regions/presence/online', handler: 'presenceHere' },
  { method: 'PATCH', path: '/v1/conversations/:id/messages/:message_id', handler: 'editMessage' },
  { method: 'DELETE', path: '/v1/conversations/:id/messages/:message_id', handler: 'deleteMessage' },
  { method: 'PUT', path: '/v1/users/me', handler: 'setMyName' },
  { method: 'GET', path: '/v1/users', handler: 'searchUsers' },
  { method: 'GET', path: '/v1/users/:id', handler: 'getUser' },
  { method: 'GET', path: '/v1/users/:id/presence', handler: 'getPresence' },
  { method: 'PUT', path: '/v1/conversations/:id/notifications', handler: 'setNotifications' },
  { method: 'GET', path: '/v1/push/vapid-public-key', handler: 'vapidPublicKey' },
  { method: 'POST', path: '/v1/push/subscriptions', handler: 'subscribePush' },
  { method: 'DELETE', path: '/v1/push/subscriptions', handler: 'unsubscribePush' },
  { method: 'POST', path: '/v1/admin/api-keys', handler: 'createApiKey' },
  { method: 'GET', path: '/v1/admin/api-keys', handler: 'listApiKeys' },
  { method: 'DELETE', path: '/v1/admin/api-keys/:key_id', handler: 'revokeApiKey' },
  { method: 'POST', path: '/v1/admin/webhooks', handler: 'createWebhook' },
  { method: 'GET', path: '/v1/admin/webhooks', handler: 'listWebhooks' },
  { method: 'GET', path: '/v1/admin/webhooks/:webhook_id', handler: 'getWebhook' },
  { method: 'PATCH', path: '/v1/admin/webhooks/:webhook_id', handler: 'updateWebhook' },
  { method: 'DELETE', path: '/v1/admin/webhooks/:webhook_id', handler: 'deleteWebhook' },
  { method: 'GET', path: '/v1/admin/webhooks/:webhook_id/deliveries', handler: 'listWebhookDeliveries' },
  { method: 'POST', path: '/v1/dev/token', handler: 'devToken' },
  { method: 'GET', path: '/v1/openapi.json', handler: 'openapi' },
  { method: 'GET', path: '/healthz', handler: 'healthz' },
  { method: 'GET', path: '/readyz', handler: 'readyz' },
  { method: 'GET', path: '/metrics', handler: 'metrics' },
] as const satisfies ReadonlyArray<{ method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE'; path: string; handler: keyof RestRoutes }>;

export type ServerDeps = RestDeps & Omit<WsDeps, 'sockets' | 'edge' | 'logs'> & { log: Logger; metrics: Metrics };

export async function startGatewayServer(deps: ServerDeps, host: string, port: number): Promise<GatewayServer> {
  const { config } = deps;
  const sockets = new Set<WebSocket<WsData>>();
  const app = uWS.App();
  const edge = createEdgePolicy(config.edge);
  const logs = new LogLimiter(deps.log);
  let listening = true;
  const route = createHttpHandler({
    metrics: deps.metrics,
    maxBodyBytes: config.limits.maxHttpBodyBytes,
    newTraceId: deps.newTraceId,
    edge,
    logs,
    budget: new ResponseBudget(config.limits.maxPendingResponseBytes),
    stallMs: config.timeouts.responseStallMs,
    closing: () => !listening,
  });
  const rest = createRestRoutes({ ...deps, openapi: loadOpenApiDocument() });
  const internal = config.edge.internalPort !== null;

  app.ws<WsData>('/v1/ws', createWsBehavior({ ...deps, sockets, edge, logs }));
  for (const r of REST_ROUTES) {
    // With an internal port, operators' endpoints leave the public one (the production setting).
    if (r.path === '/metrics' && internal) continue;
    const params = (r.path.match(/:/g) ?? []).length;
    const h = route(`${r.method} ${r.path}`, rest[r.handler], params);
    if (r.method === 'POST') app.post(r.path, h);
    else if (r.method === 'PUT') app.put(r.path, h);
    else if (r.method === 'PATCH') app.patch(r.path, h);
    else if (r.method === 'DELETE') app.del(r.path, h);
    else {
      // GET routes answer HEAD too (the same headers, no body).
      app.get(r.path, h);
      app.head(r.path, h);
    }
  }
  app.options('/*', route('OPTIONS', rest.preflight));
  const web = serveStatic(app, findWebRoot(), { csp: webCsp(config.edge.allowedOrigins), edge, logs });
  deps.log.info(
    { web_root: web.rootDir, files: web.files },
    web.files > 0 ? 'serving the web app at /' : 'web app not built: run npm run build:web',
  );
  app.any(
    '/*',
    route('unmatched', () => ({ status: 404, body: { error: { code: 'not_found', message: 'no such route' } } })),
  );

  const listenSocket = await new Promise<uWS.us_listen_socket>((resolve, reject) => {
    app.listen(host, port, (s) => (s ? resolve(s) : reject(new Error(`cannot listen on ${host}:${port}`))));
  });
  const boundPort = uWS.us_socket_local_port(listenSocket);

  const ops = internal
    ? await startOpsServer({
        port: config.edge.internalPort!,
        host: config.edge.internalHost,
        registry: deps.metrics.registry,
        healthy: () => true,
        ready: deps.ready,
      })
    : null;

  function stopListening() {
    if (listening) {
      listening = false;
      uWS.us_listen_socket_close(listenSocket);
    }
  }

  return {
    port: boundPort,
    internalPort: ops?.port ?? null,
    drain({ retryAfterMs }) {
      stopListening();
      for (const ws of [...sockets]) {
        const ud = ws.getUserData();
        if (ud.session.phase === 'closing') continue;
        // Jitter spreads the reconnect wave over the remaining nodes.
        ud.port.send(encodeFrame({ type: 'reconnect', reason: 'draining', retry_after_ms: Math.floor(Math.random() * retryAfterMs) }));
        ud.port.end(CloseCode.draining, 'draining');
      }
    },
    async close() {
      stopListening();
      for (const ws of [...sockets]) {
        const ud = ws.getUserData();
        if (ud.session.phase !== 'closing') {
          markClosing(ud);
          ws.close();
        }
      }
      await ops?.close();
    },
  };
}
