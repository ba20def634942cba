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

/** Rounds of one re-sync before it gives up until the next beat (connections churning throughout). */
const MAX_RESYNC_ROUNDS = 8;
/** Users remembered as changed while unwritten; past it, the whole node is re-synced instead. */
const MAX_UNWRITTEN_USERS = 10_000;

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
  /**
   * Users whose connections came or went while this node's entries were not being written
   * (unhealthy, or a re-sync under way): a re-sync's snapshot is taken before its writes land, so a
   * connection opened after the snapshot was in neither (finding 19: one member's deliveries routed
   * to no node for 7 s). Re-asserted after the re-sync; past the cap, or for a skipped room interest,
   * the whole node is re-synced instead.
   */
  private readonly unwritten = new Set<string>();
  private unwrittenOverflow = false;

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
      const sentAt = performance.now();
      await this.registry.heartbeat(this.nodeId, this.ttlMs);
      await this.resyncAll();
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
    const wasHealthy = this.healthy;
    try {
      const sentAt = performance.now();
      const intact = await this.registry.heartbeat(this.nodeId, this.ttlMs);
      // This beat ran on Redis no later than now, the previous one no earlier than it was sent.
      const expired = performance.now() - this.lastBeatSentAt > this.ttlMs;
      if (!intact) this.suspect('entries lost');
      if (expired) this.suspect('heartbeat expired');
      if (!this.healthy || !intact || expired) {
        const after = this.healthy ? (intact ? 'heartbeat expired' : 'entries lost') : 'registry unreachable';
        // Connections write their own entries only once this ends: they go to `unwritten` meanwhile.
        this.healthy = false;
        const { users, rounds } = await this.resyncAll();
        this.log.info({ users, rounds, after }, 'presence re-synced');
      }
      this.lastBeatSentAt = sentAt;
      // Synchronously after resyncAll() found nothing unwritten: no connection falls between.
      this.healthy = true;
      if (this.suspected) this.recover();
    } catch (err) {
      if (wasHealthy) this.log.warn({ err }, 'presence heartbeat or re-sync failed');
      this.healthy = false;
    }
  }

  private suspect(why: string): void {
    if (this.suspected || !this.lapses) return;
    this.suspected = true;
    this.log.warn({ why }, 'presence registration may have lapsed: deliveries to this node may go nowhere until it is re-registered');
    this.lapses.suspect();
  }

  /**
   * Re-asserts every entry of this node, then those that changed while it ran, until a round leaves
   * nothing unwritten (each round is shorter than the last: only the users touched meanwhile).
   */
  private async resyncAll(): Promise<{ users: number; rounds: number }> {
    this.unwritten.clear();
    this.unwrittenOverflow = false;
    const users = this.users();
    await this.registry.resync(this.nodeId, users, this.rooms());
    let rounds = 1;
    while (this.unwrittenOverflow || this.unwritten.size > 0) {
      if (rounds === MAX_RESYNC_ROUNDS) throw new Error(`connections kept changing through ${rounds} presence re-sync rounds`);
      rounds++;
      if (this.unwrittenOverflow) {
        this.unwritten.clear();
        this.unwrittenOverflow = false;
        await this.registry.resync(this.nodeId, this.users(), this.rooms());
        continue;
      }
      const now = this.users();
      const touched = new Map([...this.unwritten].map((u) => [u, now.get(u) ?? 0]));
      this.unwritten.clear();
      await this.registry.setConnections(this.nodeId, touched);
    }
    return { users: users.size, rounds };
  }

  /** A change this node could not write now; the running or next re-sync covers it. */
  private unwrittenChange(userId: string | null): void {
    if (userId === null || this.unwritten.size >= MAX_UNWRITTEN_USERS) this.unwrittenOverflow = true;
    else this.unwritten.add(userId);
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
    if (!this.healthy) {
      // Its hello reads the user's conversations next, but nothing is routed here for this user
      // until the re-sync writes it: the catch-up after that covers what falls between.
      this.unwrittenChange(userId);
      this.suspect('a connection arrived while this node could not register it');
      return;
    }
    try {
      await this.registry.addConnection(this.nodeId, userId);
    } catch {
      this.healthy = false;
    }
  }

  disconnected(userId: string): void {
    if (this.stopped) return;
    if (!this.healthy) this.unwrittenChange(userId);
    else this.registry.removeConnection(this.nodeId, userId).catch(() => (this.healthy = false));
  }

  async roomInterest(conversationId: string, interested: boolean): Promise<void> {
    if (this.stopped) return;
    if (!this.healthy) {
      this.unwrittenChange(null);
      return;
    }
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
