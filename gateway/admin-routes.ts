/**
 * The admin REST routes (docs/protocol.md, "API keys" and "Webhooks"): API keys and webhooks.
 * Allowed for REALCHAT_ADMIN_TOKEN (every scope) and API keys holding the route's admin scope;
 * a user's JWT has no admin scope. Without REALCHAT_ADMIN_TOKEN the routes answer 404: nobody can
 * be an admin, not even a key minted before the token was removed.
 */
import { AppError } from '../common/errors.js';
import { Fields, isUuid } from '../common/validate.js';
import type { Config } from '../common/config.js';
import type { Sql } from '../common/db.js';
import { UrlRefusedError, createUrlGuard, type UrlGuard } from '../common/url-guard.js';
import { generateWebhookSecret, webhookSecretKey } from '../common/webhook-signature.js';
import type { Authenticator } from './auth.js';
import {
  createApiKeyStore,
  createRestAuthenticator,
  isScope,
  requireScope,
  type ApiKeyStore,
  type RestAuthenticator,
  type Scope,
} from './api-keys.js';
import {
  DELIVERY_STATUSES,
  WEBHOOK_EVENT_TYPES,
  createWebhookStore,
  type DeliveryStatus,
  type WebhookChanges,
  type WebhookStore,
} from './webhook-store.js';
import type { RequestContext, Reply } from './http.js';
import { jsonBody } from './http.js';

export interface AdminDeps {
  /** REALCHAT_ADMIN_TOKEN is set (else every admin route is 404). */
  enabled: boolean;
  auth: RestAuthenticator;
  apiKeys: ApiKeyStore;
  webhooks: WebhookStore;
  /** Checks webhook URLs when they are set (the dispatcher checks again before each request). */
  urls: UrlGuard;
}

const MAX_EVENT_TYPES = WEBHOOK_EVENT_TYPES.length;

function intParam(q: URLSearchParams, name: string, dflt: number, min: number, max: number): number {
  const raw = q.get(name);
  if (raw === null) return dflt;
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || !Number.isSafeInteger(n) || n < min || n > max)
    throw new AppError('invalid_request', `${name} must be an integer between ${min} and ${max}`);
  return n;
}

function pathId(ctx: RequestContext, what: string, valid: (s: string) => boolean): string {
  const id = ctx.params[0] ?? '';
  if (!valid(id)) throw new AppError('not_found', `${what} not found`);
  return id.toLowerCase();
}

const isKeyId = (s: string) => /^[0-9a-fA-F]{24}$/.test(s);

function eventTypes(body: Record<string, unknown>): string[] | undefined {
  const v = body.event_types;
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || v.length > MAX_EVENT_TYPES || !v.every((t) => (WEBHOOK_EVENT_TYPES as readonly unknown[]).includes(t)))
    throw new AppError('invalid_request', `event_types must be a list of: ${WEBHOOK_EVENT_TYPES.join(', ')} (empty or absent: all)`);
  return [...new Set(v as string[])];
}

function secretField(body: Record<string, unknown>): string | undefined {
  const v = body.secret;
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string' || webhookSecretKey(v) === null)
    throw new AppError('invalid_request', 'secret must be whsec_ followed by the base64 of 24-64 random bytes');
  return v;
}

export function createAdminRoutes(deps: AdminDeps) {
  const admin = async (ctx: RequestContext, scope: Scope) => {
    if (!deps.enabled) throw new AppError('not_found', 'the admin API is off (set REALCHAT_ADMIN_TOKEN)');
    const p = await deps.auth.authenticate(ctx.authorization);
    requireScope(p, scope);
    return p;
  };

  /** Parsed and checked now (syntax, then DNS and the address ranges). */
  const checkedUrl = async (raw: string): Promise<string> => {
    try {
      const url = deps.urls.parse(raw);
      await deps.urls.resolve(url);
      return url.href;
    } catch (err) {
      if (err instanceof UrlRefusedError) {
        if (err.kind === 'dns_timeout') throw new AppError('unavailable', `url: ${err.message}; retry shortly`, { retryAfterS: 1 });
        throw new AppError('invalid_request', `url: ${err.message}`);
      }
      throw err;
    }
  };

  return {
    async createApiKey(ctx: RequestContext): Promise<Reply> {
      await admin(ctx, 'api_keys:admin');
      const body = jsonBody(ctx);
      const f = new Fields(body, 'invalid_request');
      const userId = f.uuid('user_id');
      const name = f.string('name', 1, 100).trim();
      if (name === '') throw new AppError('invalid_request', 'name must not be blank');
      const scopes = body.scopes;
      if (!Array.isArray(scopes) || scopes.length === 0 || scopes.length > 20 || !scopes.every(isScope))
        throw new AppError('invalid_request', 'scopes must be a non-empty list of known scopes (docs/protocol.md, "API keys")');
      const created = await deps.apiKeys.create(userId, name, [...new Set(scopes)]);
      return { status: 201, body: created };
    },

    async listApiKeys(ctx: RequestContext): Promise<Reply> {
      await admin(ctx, 'api_keys:admin');
      const userId = ctx.query.get('user_id');
      if (userId !== null && !isUuid(userId)) throw new AppError('invalid_request', 'user_id must be a UUID');
      const after = ctx.query.get('after');
      if (after !== null && !isKeyId(after)) throw new AppError('invalid_request', 'after must be a key id');
      const limit = intParam(ctx.query, 'limit', 100, 1, 500);
      return {
        status: 200,
        body: await deps.apiKeys.list({ userId: userId?.toLowerCase() ?? null, after: after?.toLowerCase() ?? null, limit }),
      };
    },

    async revokeApiKey(ctx: RequestContext): Promise<Reply> {
      await admin(ctx, 'api_keys:admin');
      return { status: 200, body: await deps.apiKeys.revoke(pathId(ctx, 'API key', isKeyId)) };
    },

    async createWebhook(ctx: RequestContext): Promise<Reply> {
      await admin(ctx, 'webhooks:admin');
      const body = jsonBody(ctx);
      const f = new Fields(body, 'invalid_request');
      const rawUrl = f.string('url', 1, 2048);
      const types = eventTypes(body) ?? [];
      const secret = secretField(body) ?? generateWebhookSecret();
      const url = await checkedUrl(rawUrl);
      const hook = await deps.webhooks.create(url, types, secret);
      return { status: 201, body: { ...hook, secret } };
    },

    async listWebhooks(ctx: RequestContext): Promise<Reply> {
      await admin(ctx, 'webhooks:admin');
      const after = ctx.query.get('after');
      if (after !== null && !isUuid(after)) throw new AppError('invalid_request', 'after must be a webhook id');
      const limit = intParam(ctx.query, 'limit', 100, 1, 500);
      return { status: 200, body: await deps.webhooks.list(after?.toLowerCase() ?? null, limit) };
    },

    async getWebhook(ctx: RequestContext): Promise<Reply> {
      await admin(ctx, 'webhooks:admin');
      return { status: 200, body: await deps.webhooks.get(pathId(ctx, 'webhook', isUuid)) };
    },

    async updateWebhook(ctx: RequestContext): Promise<Reply> {
      await admin(ctx, 'webhooks:admin');
      const id = pathId(ctx, 'webhook', isUuid);
      const body = jsonBody(ctx);
      const f = new Fields(body, 'invalid_request');
      const changes: WebhookChanges = {};
      const rawUrl = f.optionalString('url', 1, 2048);
      const types = eventTypes(body);
      if (types !== undefined) changes.eventTypes = types;
      if (body.enabled !== undefined) {
        if (typeof body.enabled !== 'boolean') throw new AppError('invalid_request', 'enabled must be true or false');
        changes.enabled = body.enabled;
      }
      const secret = secretField(body);
      if (secret !== undefined) changes.secret = secret;
      if (rawUrl !== undefined) changes.url = await checkedUrl(rawUrl);
      if (Object.keys(changes).length === 0)
        throw new AppError('invalid_request', 'give at least one of url, event_types, enabled, secret');
      return { status: 200, body: await deps.webhooks.update(id, changes) };
    },

    async deleteWebhook(ctx: RequestContext): Promise<Reply> {
      await admin(ctx, 'webhooks:admin');
      const id = pathId(ctx, 'webhook', isUuid);
      await deps.webhooks.remove(id);
      return { status: 200, body: { webhook_id: id, deleted: true } };
    },

    async listWebhookDeliveries(ctx: RequestContext): Promise<Reply> {
      await admin(ctx, 'webhooks:admin');
      const id = pathId(ctx, 'webhook', isUuid);
      const status = ctx.query.get('status');
      if (status !== null && !(DELIVERY_STATUSES as readonly string[]).includes(status))
        throw new AppError('invalid_request', `status must be one of ${DELIVERY_STATUSES.join(', ')}`);
      const before = ctx.query.has('before') ? intParam(ctx.query, 'before', 0, 1, Number.MAX_SAFE_INTEGER) : null;
      const limit = intParam(ctx.query, 'limit', 100, 1, 500);
      return { status: 200, body: await deps.webhooks.deliveries(id, { status: status as DeliveryStatus | null, before, limit }) };
    },
  };
}

/** The admin routes' dependencies over the node's database and JWT authenticator. */
export function createAdminDeps(opts: { config: Config; sql: Sql; jwt: Authenticator }): AdminDeps {
  const { config, sql } = opts;
  const apiKeys = createApiKeyStore(sql, config.timeouts.dbQueryMs);
  return {
    enabled: config.webhooks.adminToken !== null,
    auth: createRestAuthenticator({ jwt: opts.jwt, apiKeys, adminToken: config.webhooks.adminToken }),
    apiKeys,
    webhooks: createWebhookStore(sql, config.timeouts.dbQueryMs),
    urls: createUrlGuard({ allowPrivate: config.webhooks.allowPrivate, dnsTimeoutMs: config.webhooks.dnsTimeoutMs }),
  };
}
