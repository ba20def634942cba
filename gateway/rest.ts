/** The v1 REST routes (docs/protocol.md). Each handler validates its input into typed values first. */
import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import { AppError } from '../common/errors.js';
import { Fields, checkPayload, isUuid } from '../common/validate.js';
import { MAX_IDEMPOTENCY_KEY_CHARS } from '../common/protocol.js';
import { regionFrom, type Config } from '../common/config.js';
import type { Rehoming } from '../common/rehome.js';
import type { Metrics } from '../common/metrics.js';
import type { Logger } from '../common/log.js';
import type { Authenticator } from './auth.js';
import type { ChatStore } from './chat-store.js';
import type { RequestContext, Reply } from './http.js';
import { jsonBody } from './http.js';
import { RateLimiter, admitEntryWrite } from './rate-limit.js';
import type { PresenceService } from './presence-watch.js';
import { noticeFrom, type PresenceNotice } from './presence-feed.js';
import { MAX_PRESENCE_QUERY } from './region-forwarder.js';
import { requireScope, type Scope } from './api-keys.js';
import { createAdminRoutes, type AdminDeps } from './admin-routes.js';
import { createPushRoutes } from './push-routes.js';
import type { PushStore } from './push-store.js';

export interface RestDeps {
  config: Config;
  store: ChatStore;
  auth: Authenticator;
  metrics: Metrics;
  log: Logger;
  sendLimiter: RateLimiter;
  /** Throws `unavailable` while sends must be refused (outbox backlog over its bound). */
  admitSend(): void;
  /** Ids for request logs and the events a request produces. */
  newTraceId(): string;
  /** Wakes the local relay after a commit that produced an event. */
  onEventCommitted(): void;
  ready(): Promise<boolean>;
  /** API keys, the admin token and the admin routes (gateway/admin-routes.ts). */
  admin: AdminDeps;
  /** Web Push: the subscriptions and mutes store, and the VAPID public key in use (null: push off). */
  push: { store: PushStore; vapidPublicKey: string | null };
  /** Presence for clients (GET /v1/users/{id}/presence, gateway/presence-watch.ts). */
  presence: Pick<PresenceService, 'status'>;
  /**
   * The store without forwarding (gateway/region-forwarder.ts): sends forwarded here by another
   * region are written here or refused, never forwarded again (no loop between regions).
   * Default: `store`.
   */
  localStore?: ChatStore;
  /** Conversations this region took over from another and still homes (gateway/region-catch-up.ts); absent: none. */
  failoversFrom?: (from: string, after: string | null, limit: number) => Promise<Rehoming[]>;
  /** A typing frame another region forwarded, to this region's connections (gateway/typing.ts); absent: refused. */
  typingFromRegion?: (conversationId: string, userId: string) => Promise<void>;
  /** Presence across regions (gateway/region-presence.ts); absent: both routes refused. */
  presenceFromRegion?: {
    /** Another region's change, for this region's watchers. */
    notice(n: PresenceNotice): Promise<unknown>;
    /** Which of these users hold a connection in this region (its own registry only). */
    online(userIds: readonly string[]): Promise<Set<string>>;
  };
}

function queryInt(q: URLSearchParams, name: string, dflt: number, min: number, max: number): number {
  const raw = q.get(name);
  if (raw === null) return dflt;
  if (!/^\d+$/.test(raw)) throw new AppError('invalid_request', `${name} must be an integer between ${min} and ${max}`);
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < min || n > max)
    throw new AppError('invalid_request', `${name} must be an integer between ${min} and ${max}`);
  return n;
}

function conversationParam(ctx: RequestContext): string {
  const id = ctx.params[0];
  if (!isUuid(id)) throw new AppError('not_found', 'conversation not found');
  return id.toLowerCase();
}

/** The second path parameter: a message or user id (`what` names it in the 404). */
function idParam(ctx: RequestContext, index: number, what: string): string {
  const id = ctx.params[index];
  if (!isUuid(id)) throw new AppError('not_found', `${what} not found`);
  return id.toLowerCase();
}

/**
 * The request's idempotency key: the body's `idempotency_key` or the Idempotency-Key header (every
 * REST write accepts the header; when both are given they must agree). Null when neither is.
 */
function idempotencyKey(ctx: RequestContext, f: Fields | null): string | null {
  const fromBody = f?.optionalString('idempotency_key', 1, MAX_IDEMPOTENCY_KEY_CHARS) ?? null;
  const header = ctx.idempotencyKey;
  if (header !== '' && (header.length > MAX_IDEMPOTENCY_KEY_CHARS || !/^[\x21-\x7e]+$/.test(header)))
    throw new AppError('invalid_request', `Idempotency-Key must be 1-${MAX_IDEMPOTENCY_KEY_CHARS} visible ASCII characters`);
  if (fromBody !== null && header !== '' && header !== fromBody)
    throw new AppError('invalid_request', 'idempotency_key and the Idempotency-Key header differ');
  return fromBody ?? (header === '' ? null : header);
}

function requireKey(key: string | null): string {
  if (key === null) throw new AppError('invalid_request', 'idempotency_key (or an Idempotency-Key header) is required');
  return key;
}

/** Compares a presented credential with the expected one in constant time. */
function sameSecret(presented: string, expected: string): boolean {
  const a = createHash('sha256').update(presented).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

export type RestRoutes = ReturnType<typeof createRestRoutes>;

/** `role` of a body: what a member's role may be set to (the client route and a forwarded write). */
function roleField(f: Fields): 'admin' | 'member' {
  const role = f.string('role', 1, 16);
  if (role !== 'admin' && role !== 'member') throw new AppError('invalid_request', 'role must be "admin" or "member"');
  return role;
}

/** `who_can_add` of a body (the client route and a forwarded write). */
function whoCanAddField(f: Fields): 'members' | 'admins' {
  const whoCanAdd = f.string('who_can_add', 1, 16);
  if (whoCanAdd !== 'members' && whoCanAdd !== 'admins') throw new AppError('invalid_request', 'who_can_add must be "members" or "admins"');
  return whoCanAdd;
}

/** A creation's members and title (the client route and a creation forwarded by another region). */
function creationFields(f: Fields, maxMembersPerRequest: number): { memberIds: string[]; title: string | null } {
  return { memberIds: f.uuidList('member_ids', 0, maxMembersPerRequest), title: f.optionalString('title', 0, 200) ?? null };
}

export function createRestRoutes(deps: RestDeps & { openapi: Record<string, unknown> }) {
  const { config, store, auth, metrics } = deps;
  const limits = config.limits;

  /**
   * The user a request acts for: a JWT's, or an API key's holding `scope` (docs/protocol.md, "API
   * keys"). Without a scope the route takes JWTs only. The admin token acts for no user.
   */
  const user = async (ctx: RequestContext, scope?: Scope) => {
    const p = await deps.admin.auth.authenticate(ctx.authorization);
    if (p.via !== 'jwt' && (scope === undefined || p.userId === null))
      throw new AppError(
        'forbidden',
        p.userId === null ? 'the admin token acts for no user: use an API key' : 'API keys cannot use this route',
      );
    if (scope !== undefined) requireScope(p, scope);
    if (p.name) await store.noteTokenName(p.userId!, p.name);
    return p.userId!;
  };
  // Writes a stranger could repeat to fill the database: per-minute buckets (per node).
  const perMinute = (n: number) => new RateLimiter(n / 60, n);
  /** A request forwarded by another region's gateway: it shows the regions' shared secret. */
  const fromRegion = (ctx: RequestContext) => {
    const secret = config.regions.secret;
    if (secret === null || !sameSecret(ctx.authorization, `Region ${secret}`))
      throw new AppError('unauthorized', "forwarded writes need the regions' secret (REALCHAT_REGION_SECRET)");
  };
  const creates = perMinute(limits.conversationCreatesPerMin);
  const memberAdds = perMinute(limits.memberAddsPerMin);
  const devTokens = perMinute(limits.devTokensPerMin);
  const take = (bucket: RateLimiter, key: string, what: string) => {
    if (!bucket.take(key)) throw new AppError('rate_limited', `too many ${what}; slow down`, { retryAfterS: 5 });
  };

  const pushRoutes = createPushRoutes({
    config: config.push,
    vapidPublicKey: deps.push.vapidPublicKey,
    push: deps.push.store,
    store,
    user,
  });

  return {
    ...pushRoutes,
    ...createAdminRoutes(deps.admin),

    async createConversation(ctx: RequestContext): Promise<Reply> {
      const me = await user(ctx, 'conversations:write');
      const f = new Fields(jsonBody(ctx), 'invalid_request');
      const { memberIds, title } = creationFields(f, limits.maxMembersPerRequest);
      const home = f.stringIfPresent('home_region', 1, 32);
      // Homed in another region: created there (forwarded, docs/multi-region.md); this region's
      // copy follows through the mirror.
      if (home !== undefined && home !== config.region && !config.regions.peers.has(home))
        throw new AppError(
          'invalid_request',
          `home_region must be this region ("${config.region}") or one it knows (REALCHAT_REGION_PEERS), got "${home}"`,
        );
      const key = idempotencyKey(ctx, null);
      take(creates, me, 'conversations created');
      const { duplicate, ...conv } = await store.createConversation(me, memberIds, title, ctx.traceId, key, home ?? null);
      if (duplicate) return { status: 200, body: conv };
      deps.onEventCommitted();
      return { status: 201, body: conv };
    },

    async updateConversation(ctx: RequestContext): Promise<Reply> {
      const me = await user(ctx, 'conversations:write');
      const conversationId = conversationParam(ctx);
      const whoCanAdd = whoCanAddField(new Fields(jsonBody(ctx), 'invalid_request'));
      await store.setWhoCanAdd(me, conversationId, whoCanAdd);
      return { status: 200, body: { conversation_id: conversationId, who_can_add: whoCanAdd } };
    },

    async addMembers(ctx: RequestContext): Promise<Reply> {
      const me = await user(ctx, 'conversations:write');
      const conversationId = conversationParam(ctx);
      const f = new Fields(jsonBody(ctx), 'invalid_request');
      const userIds = f.uuidList('user_ids', 1, limits.maxMembersPerRequest);
      const key = idempotencyKey(ctx, null);
      take(memberAdds, me, 'member additions');
      deps.admitSend();
      const { duplicate, ...result } = await store.addMembers(me, conversationId, userIds, ctx.traceId, key);
      if (!duplicate && result.added_user_ids.length > 0) deps.onEventCommitted();
      return { status: 200, body: result };
    },

    async removeMember(ctx: RequestContext): Promise<Reply> {
      const me = await user(ctx, 'conversations:write');
      const conversationId = conversationParam(ctx);
      const userId = idParam(ctx, 1, 'member');
      const key = idempotencyKey(ctx, null);
      take(memberAdds, me, 'member changes');
      deps.admitSend();
      const r = await store.removeMember(me, conversationId, userId, ctx.traceparent ?? ctx.traceId, key);
      if (!r.duplicate) deps.onEventCommitted();
      return {
        status: 200,
        body: {
          conversation_id: r.conversation_id,
          removed_user_ids: r.user_ids,
          member_count: r.member_count,
          last_sequence: r.last_sequence,
        },
      };
    },

    async setRole(ctx: RequestContext): Promise<Reply> {
      const me = await user(ctx, 'conversations:write');
      const conversationId = conversationParam(ctx);
      const userId = idParam(ctx, 1, 'member');
      const role = roleField(new Fields(jsonBody(ctx), 'invalid_request'));
      const key = idempotencyKey(ctx, null);
      take(memberAdds, me, 'member changes');
      deps.admitSend();
      const { duplicate, ...r } = await store.setRole(me, conversationId, userId, role, ctx.traceparent ?? ctx.traceId, key);
      if (!duplicate) deps.onEventCommitted();
      return { status: 200, body: r };
    },

    async listMembers(ctx: RequestContext): Promise<Reply> {
      const me = await user(ctx, 'conversations:read');
      const conversationId = conversationParam(ctx);
      const limit = queryInt(ctx.query, 'limit', 100, 1, limits.maxMembersPerRequest);
      const after = ctx.query.get('after');
      if (after !== null && !isUuid(after)) throw new AppError('invalid_request', 'after must be a user id');
      return { status: 200, body: await store.listMembers(me, conversationId, after?.toLowerCase() ?? null, limit) };
    },

    async editMessage(ctx: RequestContext): Promise<Reply> {
      const me = await user(ctx, 'messages:write');
      const conversationId = conversationParam(ctx);
      const messageId = idParam(ctx, 1, 'message');
      const f = new Fields(jsonBody(ctx), 'invalid_request');
      const key = requireKey(idempotencyKey(ctx, f));
      const payload = f.present('payload');
      const { storedBytes } = checkPayload(payload, limits, 'invalid_request');
      admitEntryWrite(deps, me);
      const r = await store.editMessage(me, conversationId, messageId, key, payload, storedBytes, ctx.traceparent ?? ctx.traceId);
      if (r.duplicate) return { status: 200, body: r.envelope };
      deps.onEventCommitted();
      return { status: 201, body: r.envelope };
    },

    async deleteMessage(ctx: RequestContext): Promise<Reply> {
      const me = await user(ctx, 'messages:write');
      const conversationId = conversationParam(ctx);
      const messageId = idParam(ctx, 1, 'message');
      // Without a key a repeat still answers the same: deleting a deleted message answers its delete entry.
      const key = idempotencyKey(ctx, null) ?? `delete:${randomUUID()}`;
      admitEntryWrite(deps, me);
      const r = await store.deleteMessage(me, conversationId, messageId, key, ctx.traceparent ?? ctx.traceId);
      if (r.duplicate) return { status: 200, body: r.envelope };
      deps.onEventCommitted();
      return { status: 201, body: r.envelope };
    },

    async setMyName(ctx: RequestContext): Promise<Reply> {
      const me = await user(ctx, 'users:write');
      const f = new Fields(jsonBody(ctx), 'invalid_request');
      const name = f.string('name', 1, 100).trim();
      if (name === '') throw new AppError('invalid_request', 'name must not be blank');
      take(memberAdds, me, 'profile changes');
      return { status: 200, body: await store.setUserName(me, name) };
    },

    async getUser(ctx: RequestContext): Promise<Reply> {
      await user(ctx, 'users:read');
      return { status: 200, body: await store.getUser(idParam(ctx, 0, 'user')) };
    },

    async getPresence(ctx: RequestContext): Promise<Reply> {
      const me = await user(ctx, 'users:read');
      return { status: 200, body: await deps.presence.status(me, idParam(ctx, 0, 'user')) };
    },

    async searchUsers(ctx: RequestContext): Promise<Reply> {
      await user(ctx, 'users:read');
      const query = ctx.query.get('query') ?? '';
      if (query.length < 1 || query.length > 100) throw new AppError('invalid_request', 'query must be 1-100 characters');
      const limit = queryInt(ctx.query, 'limit', 20, 1, 100);
      return { status: 200, body: { users: await store.searchUsers(query, limit) } };
    },

    async listConversations(ctx: RequestContext): Promise<Reply> {
      const me = await user(ctx, 'conversations:read');
      const limit = queryInt(ctx.query, 'limit', 200, 1, limits.maxConversationsListed);
      return { status: 200, body: await store.listConversations(me, limit) };
    },

    async listMessages(ctx: RequestContext): Promise<Reply> {
      const me = await user(ctx, 'messages:read');
      const conversationId = conversationParam(ctx);
      const limit = queryInt(ctx.query, 'limit', 100, 1, limits.maxPageMessages);
      if (ctx.query.has('before_sequence')) {
        if (ctx.query.has('after_sequence')) throw new AppError('invalid_request', 'give after_sequence or before_sequence, not both');
        const before = queryInt(ctx.query, 'before_sequence', 1, 1, Number.MAX_SAFE_INTEGER);
        return { status: 200, body: await store.listMessages(me, conversationId, { before }, limit) };
      }
      const after = queryInt(ctx.query, 'after_sequence', 0, 0, Number.MAX_SAFE_INTEGER);
      return { status: 200, body: await store.listMessages(me, conversationId, { after }, limit) };
    },

    /**
     * A send forwarded by another region's gateway for one of its clients (docs/multi-region.md):
     * authenticated by the regions' shared secret, the sender named by the forwarding region.
     */
    async forwardedSend(ctx: RequestContext): Promise<Reply> {
      fromRegion(ctx);
      const f = new Fields(jsonBody(ctx), 'invalid_request');
      const sender = f.uuid('sender_id');
      const conversationId = f.uuid('conversation_id');
      const key = f.string('idempotency_key', 1, MAX_IDEMPOTENCY_KEY_CHARS);
      const payload = f.present('payload');
      const { storedBytes } = checkPayload(payload, limits, 'invalid_request');
      deps.admitSend();
      const result = await (deps.localStore ?? store).sendMessage(
        sender,
        conversationId,
        key,
        payload,
        storedBytes,
        ctx.traceparent ?? ctx.traceId,
      );
      if (result.duplicate) return { status: 200, body: result.envelope };
      metrics.messagesAccepted.inc({ via: 'region' });
      deps.onEventCommitted();
      return { status: 201, body: result.envelope };
    },

    /**
     * For a region coming back (gateway/region-catch-up.ts): the conversations this region took
     * over from `from` and still homes, by id after `after`, at most `limit` (default 500).
     */
    async regionFailovers(ctx: RequestContext): Promise<Reply> {
      fromRegion(ctx);
      let from: string;
      try {
        if (!ctx.query.get('from')) throw new Error('from (the region asking) is required');
        from = regionFrom(ctx.query.get('from')!, 'from');
      } catch (err) {
        throw new AppError('invalid_request', err instanceof Error ? err.message : 'from must be a region name');
      }
      const afterRaw = ctx.query.get('after');
      if (afterRaw !== null && !isUuid(afterRaw)) throw new AppError('invalid_request', 'after must be a conversation UUID');
      const limit = queryInt(ctx.query, 'limit', 500, 1, 1000);
      return { status: 200, body: { failovers: (await deps.failoversFrom?.(from, afterRaw, limit)) ?? [] } };
    },

    /**
     * Another forwarded write (an edit, a delete, a membership or role change, who may add), as
     * `{op, actor_id, conversation_id, args}`; answered `{result}` with what the local route's
     * store call returns, or refused as the local route would be.
     */
    async forwardedWrite(ctx: RequestContext): Promise<Reply> {
      fromRegion(ctx);
      const f = new Fields(jsonBody(ctx), 'invalid_request');
      const op = f.string('op', 1, 32);
      const actor = f.uuid('actor_id');
      const raw = f.present('args');
      if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new AppError('invalid_request', 'args must be an object');
      const a = new Fields(raw as Record<string, unknown>, 'invalid_request');
      const key = () => a.string('idempotency_key', 1, MAX_IDEMPOTENCY_KEY_CHARS);
      const optionalKey = () => a.optionalString('idempotency_key', 1, MAX_IDEMPOTENCY_KEY_CHARS) ?? null;
      const home = deps.localStore ?? store;
      const trace = ctx.traceparent ?? ctx.traceId;
      if (op === 'create') {
        // A conversation created here for a client of another region: homed here.
        const { memberIds, title } = creationFields(a, limits.maxMembersPerRequest);
        take(creates, actor, 'conversations created');
        const created = await home.createConversation(actor, memberIds, title, trace, optionalKey());
        deps.onEventCommitted();
        return { status: 200, body: { result: created } };
      }
      const conversationId = f.uuid('conversation_id');
      let result: unknown;
      switch (op) {
        case 'edit': {
          const payload = a.present('payload');
          const { storedBytes } = checkPayload(payload, limits, 'invalid_request');
          deps.admitSend();
          result = await home.editMessage(actor, conversationId, a.uuid('message_id'), key(), payload, storedBytes, trace);
          break;
        }
        case 'delete':
          deps.admitSend();
          result = await home.deleteMessage(actor, conversationId, a.uuid('message_id'), key(), trace);
          break;
        case 'add_members':
          deps.admitSend();
          result = await home.addMembers(
            actor,
            conversationId,
            a.uuidList('user_ids', 1, limits.maxMembersPerRequest),
            trace,
            optionalKey(),
          );
          break;
        case 'remove_member':
          deps.admitSend();
          result = await home.removeMember(actor, conversationId, a.uuid('user_id'), trace, optionalKey());
          break;
        case 'set_role': {
          const role = roleField(a);
          deps.admitSend();
          result = await home.setRole(actor, conversationId, a.uuid('user_id'), role, trace, optionalKey());
          break;
        }
        case 'set_who_can_add':
          await home.setWhoCanAdd(actor, conversationId, whoCanAddField(a));
          result = {};
          break;
        default:
          throw new AppError(
            'invalid_request',
            `op must be one of create, edit, delete, add_members, remove_member, set_role, set_who_can_add`,
          );
      }
      deps.onEventCommitted();
      return { status: 200, body: { result } };
    },

    /** `{conversation_id, user_id}`: a member typing in another region; delivered here, forwarded no further. */
    async forwardedTyping(ctx: RequestContext): Promise<Reply> {
      fromRegion(ctx);
      const f = new Fields(jsonBody(ctx), 'invalid_request');
      const conversationId = f.uuid('conversation_id');
      const userId = f.uuid('user_id');
      if (!deps.typingFromRegion) throw new AppError('unavailable', 'this gateway does not take typing from other regions');
      await deps.typingFromRegion(conversationId, userId);
      return { status: 200, body: {} };
    },

    /** `{user_id, status, last_seen_at}`: a presence change in another region; published here, forwarded no further. */
    async forwardedPresence(ctx: RequestContext): Promise<Reply> {
      fromRegion(ctx);
      const n = noticeFrom(jsonBody(ctx));
      if (!n)
        throw new AppError(
          'invalid_request',
          'a presence notice needs user_id (UUID), status (online|offline) and last_seen_at (ISO 8601 or null)',
        );
      if (!deps.presenceFromRegion) throw new AppError('unavailable', 'this gateway does not take presence from other regions');
      await deps.presenceFromRegion.notice(n);
      return { status: 200, body: {} };
    },

    /** `{user_ids}`: which of them hold a connection in this region (asked by another region's presence). */
    async presenceHere(ctx: RequestContext): Promise<Reply> {
      fromRegion(ctx);
      const userIds = new Fields(jsonBody(ctx), 'invalid_request').uuidList('user_ids', 1, MAX_PRESENCE_QUERY);
      if (!deps.presenceFromRegion) throw new AppError('unavailable', 'this gateway does not answer presence for other regions');
      return { status: 200, body: { online: [...(await deps.presenceFromRegion.online(userIds))] } };
    },

    async sendMessage(ctx: RequestContext): Promise<Reply> {
      const me = await user(ctx, 'messages:write');
      const conversationId = conversationParam(ctx);
      const f = new Fields(jsonBody(ctx), 'invalid_request');
      const key = requireKey(idempotencyKey(ctx, f));
      const payload = f.present('payload');
      const { storedBytes } = checkPayload(payload, limits, 'invalid_request');
      admitEntryWrite(deps, me);
      const timer = metrics.dbWriteSeconds.startTimer();
      const result = await store.sendMessage(me, conversationId, key, payload, storedBytes, ctx.traceparent ?? ctx.traceId);
      timer();
      deps.log.debug(
        { trace_id: ctx.traceId, conversation_id: conversationId, message_id: result.envelope.message_id, duplicate: result.duplicate },
        'message accepted',
      );
      if (result.duplicate) {
        metrics.duplicateSends.inc();
        return { status: 200, body: result.envelope };
      }
      metrics.messagesAccepted.inc({ via: 'rest' });
      deps.onEventCommitted();
      return { status: 201, body: result.envelope };
    },

    async devToken(ctx: RequestContext): Promise<Reply> {
      if (!config.devAuth) throw new AppError('not_found', 'dev auth is off');
      take(devTokens, ctx.address, 'dev tokens from this address');
      const body = ctx.body && ctx.body.length > 0 ? jsonBody(ctx) : {};
      const f = new Fields(body, 'invalid_request');
      const userId = f.optionalUuid('user_id') ?? randomUUID();
      const name = f.optionalString('name', 1, 100) ?? null;
      await store.upsertUser(userId, name);
      const token = await auth.issue(userId, name ? { name } : {});
      return { status: 200, body: { user_id: userId, token } };
    },

    /** CORS preflight: answered for origins in REALCHAT_ALLOWED_ORIGINS (http.ts adds the allow-origin header). */
    preflight(ctx: RequestContext): Reply {
      if (!ctx.corsAllowed)
        throw new AppError('origin_not_allowed', 'cross-origin requests are allowed only from REALCHAT_ALLOWED_ORIGINS');
      return {
        status: 204,
        headers: {
          'access-control-allow-methods': 'GET, POST, PUT, PATCH, DELETE',
          'access-control-allow-headers': 'authorization, content-type, idempotency-key, traceparent',
          'access-control-max-age': '600',
        },
      };
    },

    openapi(): Reply {
      return { status: 200, body: deps.openapi };
    },

    healthz(): Reply {
      return { status: 200, body: { status: 'ok' } };
    },

    async readyz(): Promise<Reply> {
      const ok = await deps.ready();
      return ok
        ? { status: 200, body: { status: 'ready' } }
        : {
            status: 503,
            body: { error: { code: 'unavailable', message: 'a dependency is not reachable' } },
            headers: { 'retry-after': '1' },
          };
    },

    async metrics(): Promise<Reply> {
      return { status: 200, raw: { contentType: metrics.registry.contentType, data: await metrics.registry.metrics() } };
    },
  };
}
