/** Starts RealChat in-process against PGlite or the run's real PostgreSQL (a fresh database each). */
import { randomBytes, randomUUID } from 'node:crypto';
import { inject } from 'vitest';
import postgres from 'postgres';
import { loadConfig, type Config } from '../../common/config.js';
import { startRealChat, type RealChat } from '../../standalone/realchat.js';
import { createAuthenticator } from '../../gateway/auth.js';
import { createLogger } from '../../common/log.js';

export type Backend = 'pglite' | 'postgres';
export const BACKENDS: Backend[] = ['pglite', 'postgres'];

export interface TestServer {
  app: RealChat;
  backend: Backend;
  http: string;
  wsUrl: string;
  databaseUrl: string | null;
  secret: string;
  token(userId?: string, ttlS?: number): Promise<{ userId: string; token: string }>;
  /** Runs SQL against the server's database (assertions on stored state). */
  query<T = Record<string, unknown>>(text: string, params?: unknown[]): Promise<T[]>;
  close(): Promise<void>;
}

/** Creates a new database on the shared test PostgreSQL and returns its URL. */
export async function freshDatabase(): Promise<string> {
  const base = inject('postgresUrl');
  const name = `rc_${randomBytes(6).toString('hex')}`;
  const admin = postgres(base, { max: 1, onnotice: () => {} });
  await admin.unsafe(`CREATE DATABASE ${name}`);
  await admin.end();
  return base.replace(/\/postgres$/, `/${name}`);
}

/** Collects the server's JSON log lines (for tests that assert what is, or is not, logged). */
export class LogSink {
  readonly lines: Array<Record<string, any>> = [];
  write(line: string): void {
    this.lines.push(JSON.parse(line));
  }
  find(pred: (l: Record<string, any>) => boolean): Array<Record<string, any>> {
    return this.lines.filter(pred);
  }
}

export async function startTestServer(
  backend: Backend,
  env: Record<string, string> = {},
  overrides: Partial<Config> = {},
  opts: { logs?: LogSink } = {},
): Promise<TestServer> {
  const secret = randomBytes(32).toString('hex');
  const databaseUrl = backend === 'postgres' ? (env.DATABASE_URL ?? (await freshDatabase())) : null;
  const config = loadConfig(
    {
      PORT: '0',
      REALCHAT_JWT_SECRET: secret,
      REALCHAT_DEV_AUTH: 'true',
      LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
      ...(databaseUrl ? { DATABASE_URL: databaseUrl } : {}),
      ...env,
    },
    overrides,
  );
  const logger = createLogger({
    level: opts.logs ? 'info' : config.logLevel,
    nodeId: config.nodeId,
    role: 'gateway',
    ...(opts.logs ? { destination: opts.logs } : {}),
  });
  const app = await startRealChat(config, { ephemeralEmbedded: true, logger });
  const auth = createAuthenticator({ secret });
  return {
    app,
    backend,
    http: `http://127.0.0.1:${app.port}`,
    wsUrl: `ws://127.0.0.1:${app.port}/v1/ws`,
    databaseUrl,
    secret,
    async token(userId = randomUUID(), ttlS?: number) {
      return { userId, token: await auth.issue(userId, ttlS === undefined ? {} : { ttlS }) };
    },
    async query<T>(text: string, params: unknown[] = []) {
      return (await app.sql.unsafe(text, params as never[])) as unknown as T[];
    },
    close: () => app.close(),
  };
}

export interface HttpResult<T = any> {
  status: number;
  body: T;
  headers: Headers;
}

export async function http<T = any>(
  server: TestServer,
  method: string,
  path: string,
  opts: { token?: string; body?: unknown; rawBody?: string; headers?: Record<string, string> } = {},
): Promise<HttpResult<T>> {
  const headers: Record<string, string> = { 'content-type': 'application/json', ...opts.headers };
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  const res = await fetch(server.http + path, {
    method,
    headers,
    body: opts.rawBody ?? (opts.body === undefined ? undefined : JSON.stringify(opts.body)),
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  let body: any = text;
  try {
    body = JSON.parse(text);
  } catch {
    /* non-JSON (metrics) */
  }
  return { status: res.status, body, headers: res.headers };
}

export async function createConversation(server: TestServer, token: string, memberIds: string[], title?: string): Promise<string> {
  const r = await http(server, 'POST', '/v1/conversations', { token, body: { member_ids: memberIds, ...(title ? { title } : {}) } });
  if (r.status !== 201) throw new Error(`create conversation failed: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.conversation_id;
}
