/**
 * One Web Push request: the `web-push` library builds it (VAPID JWT, RFC 8291 aes128gcm
 * encryption, TTL/Urgency/Topic headers); we send it with fetch and a deadline, so the transport,
 * its timeout and the classification of the answer are ours (web-push's own sender speaks https
 * only and has no overall deadline).
 */
import webpush from 'web-push';
import { UrlRefusedError, type UrlGuard } from '../../common/url-guard.js';

export interface SubscriptionKeys {
  endpoint: string;
  p256dh: string;
  auth: string;
}

export type PushOutcome =
  | { kind: 'accepted'; status: number }
  /** 404/410: the subscription is gone for good (RFC 8030 section 7.3); delete it. */
  | { kind: 'gone'; status: number }
  /** 429, 5xx, timeout, network: try again later (retryAfterMs: the service's Retry-After, if any). */
  | { kind: 'retry'; status: number | null; reason: string; retryAfterMs: number | null }
  /** Any other answer (400, 401/403 VAPID refused, 413): the same request would fail again. */
  | { kind: 'rejected'; status: number; reason: string };

export interface PushSenderOptions {
  vapid: { publicKey: string; privateKey: string; subject: string };
  ttlS: number;
  timeoutMs: number;
  /**
   * The SSRF guard (common/url-guard.ts): the endpoint's host must resolve to public addresses
   * only, checked before every request. An endpoint is a URL a user gave us; without the check a
   * subscription could aim the notifier at an internal service. (Endpoints are https: a name
   * re-pointed at an internal address between the check and the connection still has to present
   * that name's certificate.)
   */
  guard: UrlGuard;
}

export type PushSender = (sub: SubscriptionKeys, payload: string, topic: string) => Promise<PushOutcome>;

/** The Topic header for a conversation: at most 32 base64url characters (RFC 8030 section 5.4); a uuid's hex fits exactly. */
export function topicFor(conversationId: string): string {
  return conversationId.replace(/-/g, '').toLowerCase();
}

function retryAfterMs(h: string | null): number | null {
  if (!h) return null;
  const s = Number(h);
  if (Number.isFinite(s) && s >= 0) return s * 1000;
  const t = Date.parse(h);
  return Number.isNaN(t) ? null : Math.max(0, t - Date.now());
}

export function createPushSender(opts: PushSenderOptions): PushSender {
  return async (sub, payload, topic) => {
    const req = webpush.generateRequestDetails({ endpoint: sub.endpoint, keys: { p256dh: sub.p256dh, auth: sub.auth } }, payload, {
      vapidDetails: opts.vapid,
      TTL: opts.ttlS,
      urgency: 'normal',
      topic,
      contentEncoding: 'aes128gcm',
    });
    try {
      await opts.guard.resolve(new URL(req.endpoint));
    } catch (err) {
      if (err instanceof UrlRefusedError && err.kind === 'blocked') return { kind: 'rejected', status: 0, reason: 'blocked_address' };
      return { kind: 'retry', status: null, reason: 'dns', retryAfterMs: null };
    }
    let res: Response;
    try {
      res = await fetch(req.endpoint, {
        method: req.method,
        headers: req.headers as Record<string, string>,
        body: req.body as Buffer,
        redirect: 'manual',
        signal: AbortSignal.timeout(opts.timeoutMs),
      });
      // The body is not needed; reading it (bounded by the same deadline) frees the connection.
      await res.arrayBuffer().catch(() => {});
    } catch (err) {
      const timeout = (err as Error).name === 'TimeoutError' || (err as Error).name === 'AbortError';
      return { kind: 'retry', status: null, reason: timeout ? 'timeout' : 'network', retryAfterMs: null };
    }
    const s = res.status;
    if (s >= 200 && s < 300) return { kind: 'accepted', status: s };
    if (s === 404 || s === 410) return { kind: 'gone', status: s };
    if (s === 429 || s >= 500)
      return {
        kind: 'retry',
        status: s,
        reason: s === 429 ? 'status_429' : 'status_5xx',
        retryAfterMs: retryAfterMs(res.headers.get('retry-after')),
      };
    return { kind: 'rejected', status: s, reason: `status_${s}` };
  };
}

/** A new VAPID key pair (base64url), as `npx web-push generate-vapid-keys` prints it. */
export function generateVapidKeys(): { publicKey: string; privateKey: string } {
  return webpush.generateVAPIDKeys();
}
