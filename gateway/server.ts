/** The gateway's uWS app: REST + WebSocket on one port. */
import uWS from 'uWebSockets.js';
import type { WebSocket } from 'uWebSockets.js';
import { randomBytes } from 'node:crypto';
import { encodeFrame, CloseCode } from '../common/protocol.js';
import type { Logger } from '../common/log.js';
import type { Metrics } from '../common/metrics.js';
import { createHttpHandler } from './http.js';
import { createRestRoutes, type RestDeps } from './rest.js';
import { createWsBehavior, type WsData, type WsDeps } from './ws-handler.js';
import { findWebRoot, serveStatic } from './static-files.js';

export interface GatewayServer {
  port: number;
  /** Stops accepting, tells every client to reconnect elsewhere (jittered), and closes them. */
  drain(opts: { retryAfterMs: number }): void;
  close(): void;
}

export type ServerDeps = RestDeps & Omit<WsDeps, 'sockets'> & { log: Logger; metrics: Metrics };

export async function startGatewayServer(deps: ServerDeps, host: string, port: number): Promise<GatewayServer> {
  const sockets = new Set<WebSocket<WsData>>();
  const app = uWS.App();
  const route = createHttpHandler({
    log: deps.log,
    metrics: deps.metrics,
    maxBodyBytes: deps.config.limits.maxHttpBodyBytes,
    newTraceId: () => randomBytes(8).toString('hex'),
  });
  const rest = createRestRoutes(deps);

  app.ws<WsData>('/v1/ws', createWsBehavior({ ...deps, sockets }));
  app.post('/v1/conversations', route('POST /v1/conversations', rest.createConversation));
  app.get('/v1/conversations', route('GET /v1/conversations', rest.listConversations));
  app.post('/v1/conversations/:id/members', route('POST /v1/conversations/:id/members', rest.addMembers, 1));
  app.get('/v1/conversations/:id/messages', route('GET /v1/conversations/:id/messages', rest.listMessages, 1));
  app.post('/v1/conversations/:id/messages', route('POST /v1/conversations/:id/messages', rest.sendMessage, 1));
  app.post('/v1/dev/token', route('POST /v1/dev/token', rest.devToken));
  app.get('/healthz', route('GET /healthz', rest.healthz));
  app.get('/readyz', route('GET /readyz', rest.readyz));
  app.get('/metrics', route('GET /metrics', rest.metrics));
  const web = serveStatic(app, findWebRoot());
  deps.log.info({ web_root: web.rootDir, files: web.files }, web.files > 0 ? 'serving the web app at /' : 'web app not built: run npm run build:web');
  app.any(
    '/*',
    route('unmatched', () => ({ status: 404, body: { error: { code: 'not_found', message: 'no such route' } } })),
  );

  const listenSocket = await new Promise<uWS.us_listen_socket>((resolve, reject) => {
    app.listen(host, port, (s) => (s ? resolve(s) : reject(new Error(`cannot listen on ${host}:${port}`))));
  });
  const boundPort = uWS.us_socket_local_port(listenSocket);
  let listening = true;

  function stopListening() {
    if (listening) {
      listening = false;
      uWS.us_listen_socket_close(listenSocket);
    }
  }

  return {
    port: boundPort,
    drain({ retryAfterMs }) {
      stopListening();
      for (const ws of [...sockets]) {
        const ud = ws.getUserData();
        if (ud.closed) continue;
        // Jitter spreads the reconnect wave over the remaining nodes.
        ud.port!.send(encodeFrame({ type: 'reconnect', reason: 'draining', retry_after_ms: Math.floor(Math.random() * retryAfterMs) }));
        ud.port!.end(CloseCode.draining, 'draining');
      }
    },
    close() {
      stopListening();
      for (const ws of [...sockets]) {
        const ud = ws.getUserData();
        if (!ud.closed) {
          ud.closed = true;
          ws.close();
        }
      }
    },
  };
}
