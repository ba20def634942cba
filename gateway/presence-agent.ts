/**
 * Keeps this node's entries in the presence registry: heartbeats, one entry per connection, and a
 * full re-sync after the registry was unreachable or says it may have lost this node's entries (a
 * Redis failover to a replica that lacked the latest writes, a primary back empty: heartbeat()
 * resolves false), so a Redis failover or restart heals by itself (finding 8 in docs/chaos.md).
 *
 * While this node is out of the registry (its heartbeat expired, its entries lost), delivery workers
 * that can reach Redis route its users' messages to no node at all: nothing fails, so nothing falls
 * back to broadcast. That is a lapse (finding 16): the node suspects one from the moment it may have
 * begun (no heartbeat landed for most of a TTL, or the registry reports its entries gone) and, once
 * registered again, catches every connection up from the database, so a quiet conversation does not
 * keep a missed message from a connected member.
 */
import type { PresenceRegistry } from '../common/presence.js';
import type { Logger } from '../common/log.js';

/** What the node does about a lapse in its registration (gateway/node.ts). */
export interface LapseHandler {
  /** Deliveries to this node's users may be going nowhere from now on. */
  suspect(): void;
  /** Registered again: catch every connection up from the database, then the suspicion ends. */
  recover(): Promise<void>;
}

export class PresenceAgent {
  private timer: NodeJS.Timeout | null = null;
  private healthy = false;
  private stopped = false;
  /** A beat (with its resync) still running: the next tick skips it, and stop() waits for it. */
  private beating: Promise<void> | null = null;
  /** When the last heartbeat that succeeded was sent (it ran on Redis no earlier). */
  private lastBeatSentAt = performance.now();
  private suspected = false;
  /** The catch-up after a lapse (one at a time; `again`: another lapse ended while it ran). */
  private recovering: Promise<void> | null = null;
  private again = false;

  constructor(
    private readonly registry: PresenceRegistry,
    private readonly nodeId: string,
    private readonly heartbeatMs: number,
    private readonly ttlMs: number,
    private readonly log: Logger,
    /** This node's users and their connection counts (the connection registry; re-sent after an outage). */
    private readonly users: () => ReadonlyMap<string, number>,
    /** Large rooms with a subscriber here (re-sent after an outage too). */
    private readonly rooms: () => Iterable<string>,
    private readonly lapses: LapseHandler | null = null,
    /**
     * After the re-sync, before the catch-up reads: delivery workers reuse their list of live nodes
     * for up to REALCHAT_PRESENCE_LIVE_CACHE_MS, so messages committed that long after the re-sync
     * can still be routed past this node (finding 16: 39 of them in a long run).
     */
    private readonly catchUpDelayMs = 0,
  ) {}

  /** Clears what a previous process with this node id left behind, then starts heartbeating. */
  async start(): Promise<void> {
    try {
      await this.registry.removeNode(this.nodeId);
      await this.registry.resync(this.nodeId, this.users(), this.rooms());
      const sentAt = performance.now();
      await this.registry.heartbeat(this.nodeId, this.ttlMs);
      this.lastBeatSentAt = sentAt;
      this.healthy = true;
    } catch (err) {
      this.log.warn({ err }, 'presence registry unreachable at start; deliveries are broadcast until it answers');
    }
    this.timer = setInterval(() => {
      if (this.stopped) return;
      // One beat from expiry with none landed: the registry may drop this node before the next answer.
      if (performance.now() - this.lastBeatSentAt > this.ttlMs - this.heartbeatMs) this.suspect('heartbeat overdue');
      if (!this.beating) this.beating = this.beat().finally(() => (this.beating = null));
    }, this.heartbeatMs);
    this.timer.unref();
  }

  private async beat(): Promise<void> {
    try {
      const sentAt = performance.now();
      const intact = await this.registry.heartbeat(this.nodeId, this.ttlMs);
      // This beat ran on Redis no later than now, the previous one no earlier than it was sent.
      const expired = performance.now() - this.lastBeatSentAt > this.ttlMs;
      if (!intact) this.suspect('entries lost');
      if (expired) this.suspect('heartbeat expired');
      if (!this.healthy || !intact || expired) {
        const users = this.users();
        await this.registry.resync(this.nodeId, users, this.rooms());
        this.log.info(
          { users: users.size, after: this.healthy ? (intact ? 'heartbeat expired' : 'entries lost') : 'registry unreachable' },
          'presence re-synced',
        );
      }
      this.lastBeatSentAt = sentAt;
      this.healthy = true;
      if (this.suspected) this.recover();
    } catch (err) {
      if (this.healthy) this.log.warn({ err }, 'presence heartbeat failed');
      this.healthy = false;
    }
  }

  private suspect(why: string): void {
    if (this.suspected || !this.lapses) return;
    this.suspected = true;
    this.log.warn({ why }, 'presence registration may have lapsed: deliveries to this node may go nowhere until it is re-registered');
    this.lapses.suspect();
  }

  /** Registered again (resync done): the catch-up covers everything committed before it reads. */
  private recover(): void {
    this.suspected = false;
    if (this.recovering) {
      this.again = true;
      return;
    }
    const run = async (): Promise<void> => {
      do {
        this.again = false;
        if (this.catchUpDelayMs > 0) await new Promise((r) => setTimeout(r, this.catchUpDelayMs));
        if (this.stopped) return;
        await this.lapses!.recover().catch((err) => {
          // Still suspected: the next beat that lands tries again.
          this.suspected = true;
          this.log.warn({ err }, 'catch-up after a presence lapse failed');
        });
      } while (this.again && !this.stopped);
    };
    this.recovering = run().finally(() => (this.recovering = null));
  }

  /**
   * Resolves once the registry knows (or failed to learn, bounded by its command timeout): hello
   * awaits it before reading the user's conversations, so a message committed after that read is
   * routed to this node.
   */
  async connected(userId: string): Promise<void> {
    if (!this.healthy) return;
    try {
      await this.registry.addConnection(this.nodeId, userId);
    } catch {
      this.healthy = false;
    }
  }

  disconnected(userId: string): void {
    if (this.healthy && !this.stopped) this.registry.removeConnection(this.nodeId, userId).catch(() => (this.healthy = false));
  }

  async roomInterest(conversationId: string, interested: boolean): Promise<void> {
    if (!this.healthy || this.stopped) return;
    try {
      await this.registry.setRoomInterest(this.nodeId, conversationId, interested);
    } catch {
      this.healthy = false;
    }
  }

  /** Drain: leave the registry so delivery stops addressing this node. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    // A re-sync still running would re-add what removeNode clears.
    await this.beating;
    await this.recovering;
    await this.registry.removeNode(this.nodeId).catch((err) => this.log.warn({ err }, 'could not leave the presence registry'));
  }
}
