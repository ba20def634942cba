/**
 * Server-side API keys: a backend or a bot acts as a named user over REST with
 * `Authorization: Bearer rc_<id>_<secret>`. Only sha256(key) is stored; the id finds the row and the
 * hashes are compared in constant time. A key carries scopes (docs/protocol.md, "API keys"); a
 * user's JWT has every user scope and no admin scope; REALCHAT_ADMIN_TOKEN has every scope.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { AppError } from '../common/errors.js';
import { timedQuery, type Sql } from '../common/db.js';
import type { Authenticator } from './auth.js';
import { bearerToken } from './auth.js';

export const USER_SCOPES = [
  'messages:read',
  'messages:write',
  'conversations:read',
  'conversations:write',
  'users:read',
  'users:write',
] as const;
export const ADMIN_SCOPES = ['webhooks:admin', 'api_keys:admin'] as const;
export const SCOPES = [...USER_SCOPES, ...ADMIN_SCOPES] as const;
export type Scope = (typeof SCOPES)[number];

export function isScope(s: unknown): s is Scope {
  return typeof s === 'string' && (SCOPES as readonly string[]).includes(s);
}

/** Who a REST request acts for. `userId` is null for the admin token (it acts for no user). */
export interface Principal {
  via: 'jwt' | 'api_key' | 'admin_token';
  userId: string | null;
  scopes: ReadonlySet<Scope>;
  keyId?: string;
  /** A JWT's display name (recorded for the user), when it has one. */
  name?: string;
}

const KEY_FORMAT = /^rc_([0-9a-f]{24})_([A-Za-z0-9_-]{43})$/;

const sha256 = (s: string) => createHash('sha256').update(s).digest();

export interface ApiKeyRecord {
  key_id: string;
  user_id: string;
  name: string;
  scopes: Scope[];
  created_at: string;
  revoked_at: string | null;
}

interface KeyRow {
  id: string;
  user_id: string;
  name: string;
  scopes: string[];
  key_hash: Buffer;
  created_at: Date;
  revoked_at: Date | null;
}

const toRecord = (r: KeyRow): ApiKeyRecord => ({
  key_id: r.id,
  user_id: r.user_id,
  name: r.name,
  scopes: r.scopes.filter(isScope),
  created_at: r.created_at.toISOString(),
  revoked_at: r.revoked_at ? r.revoked_at.toISOString() : null,
});

export interface ApiKeyStore {
  /** Creates the user row when it does not exist (a bot is an ordinary user). Answers the key once. */
  create(userId: string, name: string, scopes: Scope[]): Promise<ApiKeyRecord & { key: string }>;
  /** Throws `unauthorized` for an unknown, malformed or revoked key. */
  verify(key: string): Promise<{ keyId: string; userId: string; scopes: ReadonlySet<Scope> }>;
  list(opts: { userId: string | null; after: string | null; limit: number }): Promise<{ api_keys: ApiKeyRecord[]; has_more: boolean }>;
  /** Idempotent: revoking a revoked key answers it unchanged. `not_found` for an unknown id. */
  revoke(keyId: string): Promise<ApiKeyRecord>;
}

export function createApiKeyStore(sql: Sql, queryTimeoutMs: number): ApiKeyStore {
  const run = <T>(what: string, fn: () => Promise<T>): Promise<T> => timedQuery(fn(), queryTimeoutMs, what);
  return {
    async create(userId, name, scopes) {
      const id = randomBytes(12).toString('hex');
      const key = `rc_${id}_${randomBytes(32).toString('base64url')}`;
      const rows = await run('createApiKey', () =>
        sql.begin(async (tx) => {
          await tx`INSERT INTO users (id) VALUES (${userId}) ON CONFLICT (id) DO NOTHING`;
          return tx<KeyRow[]>`
            INSERT INTO api_keys (id, user_id, name, scopes, key_hash)
            VALUES (${id}, ${userId}, ${name}, ${scopes}, ${sha256(key)})
            RETURNING *`;
        }),
      );
      return { ...toRecord(rows[0]!), key };
    },

    async verify(key) {
      const m = KEY_FORMAT.exec(key);
      if (!m) throw new AppError('unauthorized', 'invalid API key');
      const rows = await run('verifyApiKey', () => sql<KeyRow[]>`SELECT * FROM api_keys WHERE id = ${m[1]!}`);
      const row = rows[0];
      // Compared even when there is no row, so an unknown id costs the same as a wrong secret.
      const stored = row?.key_hash ?? Buffer.alloc(32);
      const ok = timingSafeEqual(sha256(key), stored) && row !== undefined;
      if (!ok) throw new AppError('unauthorized', 'invalid API key');
      if (row.revoked_at) throw new AppError('unauthorized', 'this API key was revoked');
      return { keyId: row.id, userId: row.user_id, scopes: new Set(row.scopes.filter(isScope)) };
    },

    async list({ userId, after, limit }) {
      const rows = await run(
        'listApiKeys',
        () => sql<KeyRow[]>`
          SELECT * FROM api_keys
          WHERE true ${userId ? sql`AND user_id = ${userId}` : sql``} ${after ? sql`AND id > ${after}` : sql``}
          ORDER BY id LIMIT ${limit + 1}`,
      );
      return { api_keys: rows.slice(0, limit).map(toRecord), has_more: rows.length > limit };
    },

    async revoke(keyId) {
      const rows = await run(
        'revokeApiKey',
        () => sql<KeyRow[]>`
          UPDATE api_keys SET revoked_at = COALESCE(revoked_at, date_trunc('milliseconds', clock_timestamp()))
          WHERE id = ${keyId} RETURNING *`,
      );
      if (!rows[0]) throw new AppError('not_found', 'API key not found');
      return toRecord(rows[0]);
    },
  };
}

/**
 * The REST authenticator: a JWT (as before), an API key (`rc_...`), or the admin token. Over the
 * WebSocket only JWTs are accepted (gateway/ws-handler.ts uses the JWT authenticator directly).
 */
export interface RestAuthenticator {
  authenticate(authorization: string): Promise<Principal>;
}

export function createRestAuthenticator(deps: { jwt: Authenticator; apiKeys: ApiKeyStore; adminToken: string | null }): RestAuthenticator {
  const adminHash = deps.adminToken ? sha256(deps.adminToken) : null;
  const everyScope: ReadonlySet<Scope> = new Set(SCOPES);
  const userScopes: ReadonlySet<Scope> = new Set(USER_SCOPES);
  return {
    async authenticate(authorization) {
      const token = bearerToken(authorization);
      // Hashing both sides makes the comparison constant-time whatever the lengths.
      if (adminHash && timingSafeEqual(sha256(token), adminHash)) return { via: 'admin_token', userId: null, scopes: everyScope };
      if (token.startsWith('rc_')) {
        const k = await deps.apiKeys.verify(token);
        return { via: 'api_key', userId: k.userId, scopes: k.scopes, keyId: k.keyId };
      }
      const t = await deps.jwt.verify(token);
      return { via: 'jwt', userId: t.userId, scopes: userScopes, ...(t.name ? { name: t.name } : {}) };
    },
  };
}

/** Refuses a principal without `scope` (403 forbidden names the scope). */
export function requireScope(p: Principal, scope: Scope): void {
  if (!p.scopes.has(scope)) throw new AppError('forbidden', `this credential lacks the ${scope} scope`);
}
