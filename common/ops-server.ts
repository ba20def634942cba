/**
 * The operators' port, on node:http: /metrics, /healthz and /readyz for the worker roles (relay,
 * delivery), and a gateway's REALCHAT_INTERNAL_PORT. Bound to loopback by default.
 *
 * /healthz is liveness: the process answers (a supervisor restarts it when it does not).
 * /readyz is readiness: the role can do its job now. 503 names the dependency that fails, so an
 * operator (or infra/stack.sh) sees what to look at without reading logs.
 */
import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';
import { withTimeout } from './timeout.js';

export interface DependencyCheck {
  ok: boolean;
  /** Why it fails (an error message), or what state it is in. */
  detail?: string;
}

export interface Readiness {
  ready: boolean;
  /** One entry per dependency the role needs, e.g. postgres, kafka, redis. */
  checks: Record<string, DependencyCheck>;
  /** Role-specific state worth showing (e.g. the relay's leader/standby). */
  info?: Record<string, unknown>;
}

/** Runs a dependency probe with a deadline; a rejection or timeout is a failing check carrying its message. */
export async function probe(what: string, timeoutMs: number, fn: () => Promise<unknown>): Promise<DependencyCheck> {
  try {
    await withTimeout(fn(), timeoutMs, what);
    return { ok: true };
  } catch (err) {
    return { ok: false, detail: err instanceof Error ? err.message : String(err) };
  }
}

/** Ready when every check passes. */
export function readiness(checks: Record<string, DependencyCheck>, info?: Record<string, unknown>): Readiness {
  return { ready: Object.values(checks).every((c) => c.ok), checks, ...(info ? { info } : {}) };
}

export function readinessBody(r: Readiness): Record<string, unknown> {
  return {
    status: r.ready ? 'ready' : 'not_ready',
    ...(r.ready ? {} : { failing: Object.keys(r.checks).filter((k) => !r.checks[k]!.ok) }),
    checks: r.checks,
    ...r.info,
  };
}

export async function startOpsServer(opts: {
  port: number;
  host: string;
  registry: Registry;
  healthy(): boolean;
  /** /readyz: 200 when ready (absent: /readyz follows /healthz). A boolean carries no detail. */
  ready?: () => Promise<boolean | Readiness>;
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
        (r) => {
          const body = typeof r === 'boolean' ? { status: r ? 'ready' : 'not_ready' } : readinessBody(r);
          const ok = typeof r === 'boolean' ? r : r.ready;
          res.writeHead(ok ? 200 : 503, { 'content-type': 'application/json' });
          res.end(JSON.stringify(body));
        },
        (err: unknown) => {
          res.writeHead(503, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ status: 'not_ready', error: err instanceof Error ? err.message : String(err) }));
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
