/**
 * Sends to a conversation homed in another region (docs/multi-region.md) are forwarded to a
 * gateway of that region, which writes them as its own client's would be: same sender, same
 * idempotency key, so a retry in either region is still exactly-once (the key is unique per
 * sender in the home's database). The answer is the home's: the client's ack carries the home's
 * sequence. When the home does not answer in time the send is refused `unavailable`
 * (`home_unreachable`) at once: during a partition each side keeps serving its own conversations.
 */
import { AppError, ERROR_CODES, ERROR_REASONS, HomeElsewhereError, type ErrorCode, type ErrorReason } from '../common/errors.js';
import type { RegionsConfig } from '../common/config.js';
import type { ChatStore, SendResult } from './chat-store.js';
import type { Envelope } from '../common/protocol.js';

/** The home region's route for forwarded sends (gateway/rest.ts, forwardedSend). */
export const FORWARDED_SEND_PATH = '/v1/regions/messages';

/** A forwarded answer is one envelope or one error: far below this. */
const MAX_ANSWER_BYTES = 1024 * 1024;

export interface RegionForwarder {
  knows(region: string): boolean;
  send(home: string, senderId: string, conversationId: string, key: string, payload: unknown, traceId: string | null): Promise<SendResult>;
}

export function createRegionForwarder(opts: RegionsConfig & { fetch?: typeof fetch }): RegionForwarder | null {
  if (opts.peers.size === 0 || opts.secret === null) return null;
  const doFetch = opts.fetch ?? fetch;
  const unreachable = (home: string, cause: unknown) =>
    new AppError('unavailable', `the home region ${home} of this conversation is not reachable; retry with the same idempotency key`, {
      cause,
      retryAfterS: 1,
      reason: 'home_unreachable',
    });
  return {
    knows: (region) => opts.peers.has(region),
    async send(home, senderId, conversationId, key, payload, traceId) {
      const url = opts.peers.get(home);
      if (!url) throw new HomeElsewhereError(home);
      let res: Response;
      let text: string;
      try {
        res = await doFetch(url + FORWARDED_SEND_PATH, {
          method: 'POST',
          headers: {
            authorization: `Region ${opts.secret}`,
            'content-type': 'application/json',
            ...(traceId?.startsWith('00-') ? { traceparent: traceId } : {}),
          },
          body: JSON.stringify({ sender_id: senderId, conversation_id: conversationId, idempotency_key: key, payload }),
          signal: AbortSignal.timeout(opts.forwardTimeoutMs),
          redirect: 'error',
        });
        text = await boundedText(res, MAX_ANSWER_BYTES);
      } catch (err) {
        throw unreachable(home, err);
      }
      let body: unknown;
      try {
        body = JSON.parse(text);
      } catch (err) {
        throw unreachable(home, err);
      }
      if (res.status === 200 || res.status === 201) return { envelope: body as Envelope, duplicate: res.status === 200 };
      throw remoteError(home, res.status, body);
    },
  };
}

/** The home's refusal, as the home gave it (its code and reason are the contract's). */
function remoteError(home: string, status: number, body: unknown): AppError {
  const e = (body as { error?: { code?: unknown; message?: unknown; reason?: unknown } } | null)?.error;
  const code = typeof e?.code === 'string' && e.code in ERROR_CODES ? (e.code as ErrorCode) : null;
  if (!code)
    return new AppError('unavailable', `the home region ${home} answered ${status}`, { retryAfterS: 1, reason: 'home_unreachable' });
  const reason = typeof e?.reason === 'string' && e.reason in ERROR_REASONS ? (e.reason as ErrorReason) : undefined;
  const message = typeof e?.message === 'string' ? e.message.slice(0, 500) : code;
  return new AppError(code, message, reason ? { reason } : {});
}

async function boundedText(res: Response, max: number): Promise<string> {
  const reader = res.body?.getReader();
  if (!reader) return '';
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > max) {
      await reader.cancel();
      throw new Error(`answer larger than ${max} bytes`);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * The store with forwarding: a send refused by the home fence goes to the home region instead.
 * Only sends are forwarded for now; other writes to a conversation homed elsewhere stay refused
 * (`home_elsewhere`).
 */
export function withRegionForwarding(store: ChatStore, forwarder: RegionForwarder | null): ChatStore {
  if (!forwarder) return store;
  return {
    ...store,
    async sendMessage(senderId, conversationId, key, payload, payloadBytes, traceId) {
      try {
        return await store.sendMessage(senderId, conversationId, key, payload, payloadBytes, traceId);
      } catch (err) {
        if (!(err instanceof HomeElsewhereError) || !forwarder.knows(err.homeRegion)) throw err;
        return forwarder.send(err.homeRegion, senderId, conversationId, key, payload, traceId);
      }
    },
  };
}
