/**
 * Presence across regions (docs/multi-region.md, "Presence and typing across regions"): best
 * effort and eventually consistent, like typing. A user is online when some region has a
 * connection of theirs. The region's own feed stays the transport for its nodes; this wraps it:
 * - `online` asks the region's feed, then every other region about the users not online here
 *   (one question per region for everything asked meanwhile, so a burst of grace-period decisions
 *   after a mass disconnect is a few requests, not one per user). A region that does not answer
 *   counts as having nobody online: a lost region's users go offline at the watchers' next recheck.
 * - `publish` tells the region's own watchers, then offers the change to every other region, which
 *   publishes it to its watchers and forwards it no further (`presenceFromOtherRegion`).
 * The node deciding `offline` after the grace period asks `online` first, so it publishes `offline`
 * only when no region answered that the user is connected there.
 */
import { AppError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { PresenceFeed, PresenceNotice } from './presence-feed.js';
import { MAX_PRESENCE_QUERY, type RegionForwarder } from './region-forwarder.js';

/** Users waiting for one region's answer; past it a question counts that region as nobody online. */
const MAX_WAITING_USERS = 20_000;
/** Questions to one region at once. */
const MAX_IN_FLIGHT = 2;

interface Question {
  users: readonly string[];
  resolve(online: Set<string>): void;
  reject(err: unknown): void;
}

/**
 * Questions to one region, coalesced: those asked while MAX_IN_FLIGHT are in flight wait and go
 * together in the next request (up to MAX_PRESENCE_QUERY users; one question is never split).
 * With nothing in flight a question goes at once.
 */
function regionQuestions(ask: (users: string[]) => Promise<Set<string>>): (users: readonly string[]) => Promise<Set<string>> {
  const queue: Question[] = [];
  let waiting = 0;
  let inFlight = 0;
  function pump(): void {
    while (inFlight < MAX_IN_FLIGHT && queue.length > 0) {
      const batch: Question[] = [];
      let size = 0;
      while (queue.length > 0 && (batch.length === 0 || size + queue[0]!.users.length <= MAX_PRESENCE_QUERY)) {
        const q = queue.shift()!;
        batch.push(q);
        size += q.users.length;
      }
      waiting -= size;
      inFlight++;
      ask([...new Set(batch.flatMap((q) => q.users))])
        .then(
          (online) => {
            for (const q of batch) q.resolve(new Set(q.users.filter((u) => online.has(u))));
          },
          (err: unknown) => {
            for (const q of batch) q.reject(err);
          },
        )
        .finally(() => {
          inFlight--;
          pump();
        });
    }
  }
  return (users) => {
    if (waiting + users.length > MAX_WAITING_USERS)
      return Promise.reject(new AppError('unavailable', 'too many presence questions waiting'));
    waiting += users.length;
    return new Promise<Set<string>>((resolve, reject) => {
      queue.push({ users, resolve, reject });
      pump();
    });
  };
}

export function withRegionPresence(
  local: PresenceFeed,
  peers: Pick<RegionForwarder, 'regions' | 'presenceOnline' | 'presenceNotice'>,
  log: Logger,
): PresenceFeed {
  const perRegion = new Map(peers.regions().map((region) => [region, regionQuestions((users) => peers.presenceOnline(region, users))]));

  async function onlineIn(
    region: string,
    ask: (users: readonly string[]) => Promise<Set<string>>,
    userIds: readonly string[],
  ): Promise<Set<string>> {
    try {
      const out = new Set<string>();
      for (let i = 0; i < userIds.length; i += MAX_PRESENCE_QUERY)
        for (const u of await ask(userIds.slice(i, i + MAX_PRESENCE_QUERY))) out.add(u);
      return out;
    } catch (err) {
      log.debug({ err, region }, 'presence: another region did not answer; its users count as offline');
      return new Set();
    }
  }

  return {
    async online(userIds) {
      const out = await local.online(userIds);
      const rest = userIds.filter((u) => !out.has(u));
      if (rest.length === 0) return out;
      const remote = await Promise.all([...perRegion].map(([region, ask]) => onlineIn(region, ask, rest)));
      for (const users of remote) for (const u of users) out.add(u);
      return out;
    },
    async publish(n) {
      await local.publish(n);
      peers.presenceNotice(n);
    },
    watch: (userId) => local.watch(userId),
    unwatch: (userId) => local.unwatch(userId),
    start: (handlers) => local.start(handlers),
    close: () => local.close(),
  };
}

/**
 * A change another region offered, for this region's watchers only. An `offline` for a user
 * connected here is stale or raced a reconnect here, and is dropped: this region's own nodes
 * decide when that user goes offline.
 */
export async function presenceFromOtherRegion(local: PresenceFeed, n: PresenceNotice): Promise<'published' | 'dropped'> {
  if (n.status === 'offline' && (await local.online([n.user_id])).has(n.user_id)) return 'dropped';
  await local.publish(n);
  return 'published';
}
