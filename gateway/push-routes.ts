/**
 * Web Push REST routes (docs/protocol.md, "Web Push"): the VAPID public key, a browser's
 * PushSubscription in and out, and muting a conversation. Subscriptions are validated strictly here:
 * the notifier later sends requests to whatever endpoint is stored (a server-side request on a
 * user's behalf), and a key of the wrong shape would only fail there.
 */
import { createPublicKey } from 'node:crypto';
import { isIP } from 'node:net';
import { AppError } from '../common/errors.js';
import { isPlainObject, isUuid } from '../common/validate.js';
import type { PushConfig } from '../common/config.js';
import type { ChatStore } from './chat-store.js';
import type { RequestContext, Reply } from './http.js';
import { jsonBody } from './http.js';
import type { PushStore, PushSubscriptionInput } from './push-store.js';

const MAX_ENDPOINT_CHARS = 2048;
const B64URL = /^[A-Za-z0-9_-]+$/;
const LOOPBACK_HOSTS = new Set(['127.0.0.1', '[::1]', 'localhost']);

export interface PushRouteDeps {
  config: PushConfig;
  /** The VAPID public key in use (configured, or the embedded default's); null: web push is off. */
  vapidPublicKey: string | null;
  push: PushStore;
  store: Pick<ChatStore, 'membership'>;
  /** Authenticates the request; the user id. */
  user(ctx: RequestContext): Promise<string>;
}

const bad = (message: string) => new AppError('invalid_request', message);

/** base64url (unpadded, as PushSubscription.toJSON() gives it) of exactly `bytes` bytes. */
function b64urlKey(v: unknown, name: string, bytes: number): Buffer {
  if (typeof v !== 'string' || !B64URL.test(v)) throw bad(`${name} must be unpadded base64url`);
  const buf = Buffer.from(v, 'base64url');
  if (buf.length !== bytes || buf.toString('base64url') !== v) throw bad(`${name} must encode exactly ${bytes} bytes`);
  return buf;
}

/** A P-256 point in uncompressed form that lies on the curve (createPublicKey checks it). */
function p256Point(buf: Buffer): void {
  if (buf[0] !== 4) throw bad('keys.p256dh must be an uncompressed P-256 point (65 bytes starting with 0x04)');
  try {
    createPublicKey({
      key: { kty: 'EC', crv: 'P-256', x: buf.subarray(1, 33).toString('base64url'), y: buf.subarray(33).toString('base64url') },
      format: 'jwk',
    });
  } catch {
    throw bad('keys.p256dh is not a point on P-256');
  }
}

export function validateEndpoint(v: unknown, allowHttpLoopback: boolean): string {
  if (typeof v !== 'string' || v.length === 0 || v.length > MAX_ENDPOINT_CHARS)
    throw bad(`endpoint must be a URL of 1-${MAX_ENDPOINT_CHARS} characters`);
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    throw bad('endpoint must be an absolute URL');
  }
  if (u.username || u.password || u.hash) throw bad('endpoint must not carry credentials or a fragment');
  const loopback = LOOPBACK_HOSTS.has(u.hostname);
  if (u.protocol === 'http:' && allowHttpLoopback && loopback) return u.href;
  if (u.protocol !== 'https:') throw bad('endpoint must be an https: URL');
  // Push services are public HTTPS hosts on the default port. IP literals, loopback names and other
  // ports would let a user aim the notifier's requests at the internal network.
  if (isIP(u.hostname.replace(/^\[|\]$/g, '')) !== 0 || loopback || !u.hostname.includes('.') || u.port !== '')
    throw bad('endpoint must name a push service by its DNS name on the default https port');
  return u.href;
}

export function validateSubscription(body: Record<string, unknown>, allowHttpLoopback: boolean): PushSubscriptionInput {
  for (const k of Object.keys(body))
    if (k !== 'endpoint' && k !== 'keys' && k !== 'expirationTime') throw bad(`unknown field ${JSON.stringify(k).slice(0, 80)}`);
  const endpoint = validateEndpoint(body.endpoint, allowHttpLoopback);
  const exp = body.expirationTime;
  if (exp !== undefined && exp !== null && !(typeof exp === 'number' && Number.isFinite(exp) && exp >= 0))
    throw bad('expirationTime must be null or a non-negative number');
  const keys = body.keys;
  if (!isPlainObject(keys)) throw bad('keys must be an object with p256dh and auth');
  for (const k of Object.keys(keys)) if (k !== 'p256dh' && k !== 'auth') throw bad(`unknown field keys.${k.slice(0, 80)}`);
  p256Point(b64urlKey(keys.p256dh, 'keys.p256dh', 65));
  b64urlKey(keys.auth, 'keys.auth', 16);
  return { endpoint, p256dh: keys.p256dh as string, auth: keys.auth as string };
}

export type PushRoutes = ReturnType<typeof createPushRoutes>;

export function createPushRoutes(deps: PushRouteDeps) {
  const { config, push, store } = deps;
  const requireKeys = () => {
    if (deps.vapidPublicKey === null)
      throw new AppError('not_found', 'web push is not configured on this server (REALCHAT_VAPID_PUBLIC_KEY / REALCHAT_VAPID_PRIVATE_KEY)');
    return deps.vapidPublicKey;
  };
  return {
    vapidPublicKey(): Reply {
      return { status: 200, body: { public_key: requireKeys() } };
    },

    async subscribePush(ctx: RequestContext): Promise<Reply> {
      const me = await deps.user(ctx);
      const sub = validateSubscription(jsonBody(ctx), config.allowHttpLoopback);
      requireKeys();
      const { created } = await push.subscribe(me, sub, config.maxSubscriptionsPerUser);
      return { status: created ? 201 : 200, body: { endpoint: sub.endpoint } };
    },

    async unsubscribePush(ctx: RequestContext): Promise<Reply> {
      const me = await deps.user(ctx);
      const body = jsonBody(ctx);
      for (const k of Object.keys(body)) if (k !== 'endpoint') throw bad(`unknown field ${JSON.stringify(k).slice(0, 80)}`);
      if (typeof body.endpoint !== 'string' || body.endpoint.length === 0 || body.endpoint.length > MAX_ENDPOINT_CHARS)
        throw bad(`endpoint must be a string of 1-${MAX_ENDPOINT_CHARS} characters`);
      let endpoint = body.endpoint;
      try {
        endpoint = new URL(endpoint).href;
      } catch {
        /* not a URL: matches nothing stored */
      }
      const removed = await push.unsubscribe(me, endpoint);
      return { status: 200, body: { endpoint, removed } };
    },

    async setNotifications(ctx: RequestContext): Promise<Reply> {
      const me = await deps.user(ctx);
      const id = ctx.params[0];
      if (!isUuid(id)) throw new AppError('not_found', 'conversation not found');
      const conversationId = id.toLowerCase();
      const body = jsonBody(ctx);
      for (const k of Object.keys(body)) if (k !== 'muted') throw bad(`unknown field ${JSON.stringify(k).slice(0, 80)}`);
      if (typeof body.muted !== 'boolean') throw bad('muted must be true or false');
      const m = await store.membership(me, conversationId);
      if (m === 'not_found') throw new AppError('not_found', 'conversation not found');
      if (m === 'not_member') throw new AppError('forbidden', 'not a member of this conversation');
      await push.setMuted(me, conversationId, body.muted);
      return { status: 200, body: { conversation_id: conversationId, muted: body.muted } };
    },
  };
}
