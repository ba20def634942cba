/**
 * Serves the built web app (web/dist) at `/` from memory. Files are read once at start (bounded
 * size), so a request never touches the disk and no path can escape the root. Unknown paths without
 * a file extension get index.html (client-side routes); /v1/*, /healthz, /readyz and /metrics are
 * never answered here (the handler yields to the API routes).
 *
 * Wiring (gateway/server.ts), before the catch-all `app.any('/*', ...)`:
 *   serveStatic(app, findWebRoot());
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { dirname, extname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { HttpRequest, HttpResponse, TemplatedApp } from 'uWebSockets.js';
import type { LogLimiter } from '../common/log-limiter.js';
import type { EdgePolicy } from './edge.js';
import { peerAddress } from './http.js';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.map': 'application/json',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.ico': 'image/x-icon',
  '.webp': 'image/webp',
  '.woff2': 'font/woff2',
  '.txt': 'text/plain; charset=utf-8',
};

const API_PREFIXES = ['/v1/', '/healthz', '/readyz', '/metrics'];
const MAX_TOTAL_BYTES = 50 * 1024 * 1024;
/**
 * Content-Security-Policy of the app's HTML: same-origin scripts, styles and API/WebSocket ('self'
 * covers ws:/wss: of the same host in CSP Level 3), plus the configured allowed origins.
 */
export function webCsp(allowedOrigins: readonly string[] = []): string {
  const extra = allowedOrigins.flatMap((o) => [o, o.replace(/^http/, 'ws')]).join(' ');
  return `default-src 'self'; connect-src 'self'${extra ? ' ' + extra : ''}; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'`;
}

interface StaticFile {
  data: Buffer;
  type: string;
  etag: string;
  cacheControl: string;
}

export interface StaticSite {
  rootDir: string;
  /** Number of files served (0: the web app is not built). */
  files: number;
}

/**
 * The web app's build output: $REALCHAT_WEB_DIR, else the first web/dist/index.html found walking up
 * from this module (works from gateway/*.ts and from dist/gateway/*.js).
 */
export function findWebRoot(env: Record<string, string | undefined> = process.env): string {
  if (env.REALCHAT_WEB_DIR) return resolve(env.REALCHAT_WEB_DIR);
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    const candidate = join(dir, 'web', 'dist');
    if (existsSync(join(candidate, 'index.html'))) return candidate;
    dir = dirname(dir);
  }
  return resolve('web/dist');
}

function loadFiles(rootDir: string): Map<string, StaticFile> {
  const files = new Map<string, StaticFile>();
  if (!existsSync(join(rootDir, 'index.html'))) return files;
  let total = 0;
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const full = join(dir, name);
      const st = statSync(full);
      if (st.isDirectory()) {
        walk(full);
        continue;
      }
      if (!st.isFile()) continue;
      total += st.size;
      if (total > MAX_TOTAL_BYTES) throw new Error(`web app in ${rootDir} exceeds ${MAX_TOTAL_BYTES} bytes`);
      const data = readFileSync(full);
      const urlPath = '/' + relative(rootDir, full).split(sep).join('/');
      files.set(urlPath, {
        data,
        type: TYPES[extname(name).toLowerCase()] ?? 'application/octet-stream',
        etag: `"${createHash('sha1').update(data).digest('base64url').slice(0, 16)}"`,
        // Vite puts content-hashed files under /assets/: cache forever; everything else revalidates.
        cacheControl: urlPath.startsWith('/assets/') ? 'public, max-age=31536000, immutable' : 'no-cache',
      });
    }
  };
  walk(rootDir);
  return files;
}

/** Registers GET /* for the web app. Call before the catch-all 404 route. */
export function serveStatic(app: TemplatedApp, rootDir: string, opts: { csp: string; edge: EdgePolicy; logs: LogLimiter }): StaticSite {
  const files = loadFiles(rootDir);
  const index = files.get('/index.html');

  function send(res: HttpResponse, status: string, file: StaticFile | null, ifNoneMatch: string, body?: string): void {
    res.cork(() => {
      if (file && ifNoneMatch === file.etag) {
        res.writeStatus('304 Not Modified');
        res.writeHeader('etag', file.etag);
        res.endWithoutBody();
        return;
      }
      res.writeStatus(status);
      res.writeHeader('x-content-type-options', 'nosniff');
      res.writeHeader('referrer-policy', 'no-referrer');
      if (file) {
        res.writeHeader('content-type', file.type);
        res.writeHeader('cache-control', file.cacheControl);
        res.writeHeader('etag', file.etag);
        if (file.type.startsWith('text/html')) res.writeHeader('content-security-policy', opts.csp);
        res.end(file.data);
      } else {
        res.writeHeader('content-type', 'text/plain; charset=utf-8');
        res.end(body ?? '');
      }
    });
  }

  app.get('/*', (res: HttpResponse, req: HttpRequest) => {
    try {
      handle(res, req);
    } catch (err) {
      opts.logs.write('error', 'internal:static', { err }, 'static request failed');
      try {
        send(res, '500 Internal Server Error', null, '', 'internal error\n');
      } catch {
        /* the response is gone */
      }
    }
  });

  function handle(res: HttpResponse, req: HttpRequest): void {
    const url = req.getUrl();
    if (API_PREFIXES.some((p) => url === p || url.startsWith(p))) {
      req.setYield(true); // not ours: the API routes (or their 404) answer
      return;
    }
    const ifNoneMatch = req.getHeader('if-none-match');
    try {
      opts.edge.checkHost(req.getHeader('host'));
    } catch {
      opts.logs.write('warn', 'refused:host_not_allowed', { address: peerAddress(res), path: url.slice(0, 200) }, 'request refused');
      send(res, '421 Misdirected Request', null, '', 'unknown host name\n');
      return;
    }
    let path: string;
    try {
      path = decodeURIComponent(url);
    } catch {
      send(res, '400 Bad Request', null, '', 'bad path\n');
      return;
    }
    const file = files.get(path === '/' ? '/index.html' : path);
    if (file) {
      send(res, '200 OK', file, ifNoneMatch);
      return;
    }
    if (!index) {
      send(res, '404 Not Found', null, '', 'The web app is not built: run `npm run build:web`.\n');
      return;
    }
    // Client-side routes get the app; missing assets are a plain 404.
    if (extname(path) === '') send(res, '200 OK', index, ifNoneMatch);
    else send(res, '404 Not Found', null, '', 'not found\n');
  }

  return { rootDir, files: files.size };
}
