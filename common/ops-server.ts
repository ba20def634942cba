/**
 * The operators' port, on node:http: /metrics, /healthz and /readyz for the worker roles (relay,
 * delivery), and a gateway's REALCHAT_INTERNAL_PORT. Bound to loopback by default.
 */
import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';

export async function startOpsServer(opts: {
  port: number;
  host: string;
  registry: Registry;
  healthy(): boolean;
  /** /readyz: 200 when it resolves true (absent: /readyz follows /healthz). */
  ready?: () => Promise<boolean>;
}): Promise<{ port: number; close(): Promise<void> }> {
  const server: Server = createServer((req, res) => {
    if (req.url === '/metrics') {
      opts.registry.metrics().then(
        (text) => {
          res.writeHead(200, { 'content-type': opts.registry.contentType });
          res.end(text);
        },
        () => {
          res.writeHead(500);
          res.end();
        },
      );
      return;
    }
    if (req.url === '/readyz' && opts.ready) {
      opts.ready().then(
        (ok) => {
          res.writeHead(ok ? 200 : 503, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ status: ok ? 'ready' : 'not_ready' }));
        },
        () => {
          res.writeHead(503);
          res.end();
        },
      );
      return;
    }
    if (req.url === '/healthz' || req.url === '/readyz') {
      const ok = opts.healthy();
      res.writeHead(ok ? 200 : 503, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ status: ok ? 'ok' : 'unhealthy' }));
      return;
    }
    res.writeHead(404);
    res.end();
  });
  server.requestTimeout = 10_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, resolve);
  });
  return {
    port: (server.address() as { port: number }).port,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
