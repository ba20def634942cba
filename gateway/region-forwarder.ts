/**
 * Writes to a conversation homed in another region (docs/multi-region.md) are forwarded to a
 * gateway of that region, which does them as its own client's would be done: same actor, same
 * idempotency key, so a retry in either region is still exactly-once (the key is unique per
 * sender in the home's database). The answer is the home's: a send's ack carries the home's
 * sequence. When the home does not answer in time the write is refused `unavailable`
 * (`home_unreachable`): during a partition each side keeps serving its own conversations. After a
 * few such failures in a row a breaker per home refuses at once (one probe a second goes through),
 * so a partition costs each client one timeout, not one per send.
 */
import { AppError, ERROR_CODES, ERROR_REASONS, HomeElsewhereError, type ErrorCode, type ErrorReason } from '../common/errors.js';
import type { RegionsConfig } from '../common/config.js';
import type { ChatStore, SendResult } from './chat-store.js';
import type { Envelope } from '../common/protocol.js';
import { Semaphore } from '../common/semaphore.js';
import { CircuitBreaker, type BreakerSettings } from '../common/breaker.js';
import type { PresenceNotice } from './presence-feed.js';

/** The home region's route for forwarded sends (gateway/rest.ts, forwardedSend). */
export const FORWARDED_SEND_PATH = '/v1/regions/messages';
/** The home region's route for the other forwarded writes (gateway/rest.ts, forwardedWrite). */
export const FORWARDED_WRITE_PATH = '/v1/regions/writes';
/** Every other region's route for a typing frame (gateway/rest.ts, forwardedTyping). */
export const FORWARDED_TYPING_PATH = '/v1/regions/typing';
/** Every other region's route for a presence change of a user connected here (gateway/rest.ts, forwardedPresence). */
export const FORWARDED_PRESENCE_PATH = '/v1/regions/presence';
/** Every other region's route for who of some users is connected there (gateway/rest.ts, presenceHere). */
export const PRESENCE_HERE_PATH = '/v1/regions/presence/online';
/** Users per presence question to another region (the route's bound). */
export const MAX_PRESENCE_QUERY = 1000;

/** The writes besides sends a region forwards to a conversation's home, with their arguments. */
export type ForwardedWrite =
  | { op: 'create'; member_ids: string[]; title: string | null; idempotency_key: string | null }
  | { op: 'edit'; message_id: string; idempotency_key: string; payload: unknown }
  | { op: 'delete'; message_id: string; idempotency_key: string }
  | { op: 'add_members'; user_ids: string[]; idempotency_key: string | null }
  | { op: 'remove_member'; user_id: string; idempotency_key: string | null }
  | { op: 'set_role'; user_id: string; role: 'admin' | 'member'; idempotency_key: string | null }
  | { op: 'set_who_can_add'; who_can_add: 'members' | 'admins' };

/** A forwarded answer is one envelope or one error: far below this. */
const MAX_ANSWER_BYTES = 1024 * 1024;
/** Forwarded writes in flight per node, and waiting for a slot; beyond, refused `unavailable` at once. */
const MAX_IN_FLIGHT = 256;
const MAX_WAITING = 1024;
/** Typing frames and presence notices in flight to other regions per node; beyond, dropped (best effort, never queued). */
const MAX_OFFERS_IN_FLIGHT = 64;
/** Per home: three unanswered forwards within 10 s open it; one probe per second while open. */
const HOME_BREAKER: BreakerSettings = { failureThreshold: 3, windowMs: 10_000, openMs: 1000, halfOpenProbes: 1 };

export interface RegionForwarder {
  knows(region: string): boolean;
  /** Another write on the actor's behalf in the conversation's home region (null: a creation); the home's answer. */
  write(home: string, actorId: string, conversationId: string | null, write: ForwardedWrite, traceId: string | null): Promise<unknown>;
  send(home: string, senderId: string, conversationId: string, key: string, payload: unknown, traceId: string | null): Promise<SendResult>;
  /**
   * Offers a member's typing to every other region, for its members connected there: best effort.
   * Dropped while a region's breaker is not closed (its sends own it: typing neither probes nor
   * trips it) or past MAX_OFFERS_IN_FLIGHT; a refusal or no answer is dropped too.
   */
  typing(conversationId: string, userId: string): void;
  /** Every other region's name. */
  regions(): readonly string[];
  /** Offers a presence change of a user connected here to every other region: best effort, as typing. */
  presenceNotice(n: PresenceNotice): void;
  /**
   * Which of `userIds` (at most MAX_PRESENCE_QUERY) hold a connection in `region`. Rejects at once
   * while that region's breaker is not closed, and after the forward timeout; never trips or probes
   * the breaker (the sends own it).
   */
  presenceOnline(region: string, userIds: readonly string[]): Promise<Set<string>>;
}

export function createRegionForwarder(
  opts: RegionsConfig & { fetch?: typeof fetch; maxInFlight?: number; maxWaiting?: number; breaker?: BreakerSettings },
): RegionForwarder | null {
  if (opts.peers.size === 0 || opts.secret === null) return null;
  const doFetch = opts.fetch ?? fetch;
  const breakers = new Map([...opts.peers.keys()].map((home) => [home, new CircuitBreaker(opts.breaker ?? HOME_BREAKER)]));
  // A home that slows down must not gather an unbounded number of requests here.
  const slots = new Semaphore(opts.maxInFlight ?? MAX_IN_FLIGHT, opts.maxWaiting ?? MAX_WAITING);
  const unreachable = (home: string, cause: unknown) =>
    new AppError('unavailable', `the home region ${home} of this conversation is not reachable; retry with the same idempotency key`, {
      cause,
      retryAfterS: 1,
      reason: 'home_unreachable',
    });
  /** POSTs to the home; its 2xx answer (status, parsed body) or its refusal as an AppError. */
  async function post(home: string, path: string, body: unknown, traceId: string | null): Promise<{ status: number; body: unknown }> {
    const url = opts.peers.get(home);
    if (!url) throw new HomeElsewhereError(home);
    const breaker = breakers.get(home)!;
    if (!breaker.allow()) throw unreachable(home, new Error(`${home} did not answer the last forwarded writes; probing it once a second`));
    const slot = slots.tryAcquire();
    if (!slot)
      throw new AppError('unavailable', 'too many writes forwarded to other regions; retry shortly', {
        retryAfterS: 1,
        reason: 'home_unreachable',
      });
    const release = await slot;
    try {
      const answer = await postNow(home, url, path, body, traceId);
      breaker.success();
      return answer;
    } catch (err) {
      // A refusal of the home's own says it is reachable; no answer, or one that is not the home's
      // (a proxy's 502), does not.
      if (err instanceof AppError && err.reason === 'home_unreachable') breaker.failure();
      else breaker.success();
      throw err;
    } finally {
      release();
    }
  }

  async function postNow(
    home: string,
    url: string,
    path: string,
    body: unknown,
    traceId: string | null,
  ): Promise<{ status: number; body: unknown }> {
    let res: Response;
    let text: string;
    try {
      res = await doFetch(url + path, {
        method: 'POST',
        headers: {
          authorization: `Region ${opts.secret}`,
          'content-type': 'application/json',
          ...(traceId?.startsWith('00-') ? { traceparent: traceId } : {}),
        },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(opts.forwardTimeoutMs),
        redirect: 'error',
      });
      text = await boundedText(res, MAX_ANSWER_BYTES);
    } catch (err) {
      throw unreachable(home, err);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw unreachable(home, err);
    }
    if (res.status >= 200 && res.status < 300) return { status: res.status, body: parsed };
    throw remoteError(home, res.status, parsed);
  }
  let offersInFlight = 0;
  /** One best-effort POST to every other region whose breaker is closed; nothing waits for it. */
  function offer(path: string, body: unknown): void {
    for (const [region, url] of opts.peers) {
      if (breakers.get(region)!.state !== 'closed' || offersInFlight >= MAX_OFFERS_IN_FLIGHT) continue;
      offersInFlight++;
      postNow(region, url, path, body, null)
        .catch(() => {})
        .finally(() => offersInFlight--);
    }
  }
  const regionNames = [...opts.peers.keys()];
  return {
    knows: (region) => opts.peers.has(region),
    regions: () => regionNames,
    typing(conversationId, userId) {
      offer(FORWARDED_TYPING_PATH, { conversation_id: conversationId, user_id: userId });
    },
    presenceNotice(n) {
      offer(FORWARDED_PRESENCE_PATH, n);
    },
    async presenceOnline(region, userIds) {
      const url = opts.peers.get(region);
      if (!url) throw new HomeElsewhereError(region);
      if (breakers.get(region)!.state !== 'closed') throw unreachable(region, new Error(`${region} is not answering forwarded writes`));
      const r = await postNow(region, url, PRESENCE_HERE_PATH, { user_ids: userIds }, null);
      const online = (r.body as { online?: unknown } | null)?.online;
      if (!Array.isArray(online)) throw unreachable(region, new Error('presence answer without online'));
      const asked = new Set(userIds);
      // Only what was asked: another region's answer is not trusted to name anyone else.
      return new Set(online.filter((u): u is string => typeof u === 'string' && asked.has(u)));
    },
    async send(home, senderId, conversationId, key, payload, traceId) {
      const r = await post(
        home,
        FORWARDED_SEND_PATH,
        { sender_id: senderId, conversation_id: conversationId, idempotency_key: key, payload },
        traceId,
      );
      return { envelope: r.body as Envelope, duplicate: r.status === 200 };
    },
    async write(home, actorId, conversationId, write, traceId) {
      const { op, ...args } = write;
      const r = await post(
        home,
        FORWARDED_WRITE_PATH,
        { op, actor_id: actorId, ...(conversationId ? { conversation_id: conversationId } : {}), args },
        traceId,
      );
      return (r.body as { result?: unknown }).result;
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
 * The store with forwarding: a write refused by the home fence (the conversation is a copy here)
 * goes to the home region instead. Reads are served here, from the copy.
 */
export function withRegionForwarding(store: ChatStore, forwarder: RegionForwarder | null): ChatStore {
  if (!forwarder) return store;
  async function homeOr<T>(local: () => Promise<T>, remote: (home: string) => Promise<unknown>): Promise<T> {
    try {
      return await local();
    } catch (err) {
      if (!(err instanceof HomeElsewhereError) || !forwarder!.knows(err.homeRegion)) throw err;
      return (await remote(err.homeRegion)) as T;
    }
  }
  const f = forwarder;
  return {
    ...store,
    createConversation: (creator, memberIds, title, traceId, key = null, home = null) =>
      homeOr(
        () => store.createConversation(creator, memberIds, title, traceId, key, home),
        (h) => f.write(h, creator, null, { op: 'create', member_ids: memberIds, title, idempotency_key: key }, traceId),
      ),
    sendMessage: (senderId, conversationId, key, payload, payloadBytes, traceId) =>
      homeOr(
        () => store.sendMessage(senderId, conversationId, key, payload, payloadBytes, traceId),
        (home) => f.send(home, senderId, conversationId, key, payload, traceId),
      ),
    editMessage: (actor, conversationId, messageId, key, payload, payloadBytes, traceId) =>
      homeOr(
        () => store.editMessage(actor, conversationId, messageId, key, payload, payloadBytes, traceId),
        (home) => f.write(home, actor, conversationId, { op: 'edit', message_id: messageId, idempotency_key: key, payload }, traceId),
      ),
    deleteMessage: (actor, conversationId, messageId, key, traceId) =>
      homeOr(
        () => store.deleteMessage(actor, conversationId, messageId, key, traceId),
        (home) => f.write(home, actor, conversationId, { op: 'delete', message_id: messageId, idempotency_key: key }, traceId),
      ),
    addMembers: (actor, conversationId, userIds, traceId, key = null) =>
      homeOr(
        () => store.addMembers(actor, conversationId, userIds, traceId, key),
        (home) => f.write(home, actor, conversationId, { op: 'add_members', user_ids: userIds, idempotency_key: key }, traceId),
      ),
    removeMember: (actor, conversationId, userId, traceId, key) =>
      homeOr(
        () => store.removeMember(actor, conversationId, userId, traceId, key),
        (home) => f.write(home, actor, conversationId, { op: 'remove_member', user_id: userId, idempotency_key: key }, traceId),
      ),
    setRole: (actor, conversationId, userId, role, traceId, key) =>
      homeOr(
        () => store.setRole(actor, conversationId, userId, role, traceId, key),
        (home) => f.write(home, actor, conversationId, { op: 'set_role', user_id: userId, role, idempotency_key: key }, traceId),
      ),
    setWhoCanAdd: (actor, conversationId, whoCanAdd) =>
      homeOr(
        () => store.setWhoCanAdd(actor, conversationId, whoCanAdd),
        (home) => f.write(home, actor, conversationId, { op: 'set_who_can_add', who_can_add: whoCanAdd }, null),
      ),
  };
}
