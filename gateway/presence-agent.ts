/**
 * Keeps this node's entries in the presence registry: heartbeats, one entry per connection, and a
 * full re-sync after the registry was unreachable or says it may have lost this node's entries (a
 * Redis failover to a replica that lacked the latest writes, a primary back empty: heartbeat()
 * resolves false), so a Redis failover or restart heals by itself (finding 8 in docs/chaos.md).
 * Registry failures never reach clients: deliveries fall back to broadcast meanwhile.
 */
import type { PresenceRegistry } from '../common/presence.js';
import type { Logger } from '../common/log.js';

export class PresenceAgent {
  private timer: NodeJS.Timeout | null = null;
  private healthy = false;
  private stopped = false;
  /** A beat (with its resync) still running: the next tick skips it, and stop() waits for it. */
  private beating: Promise<void> | null = null;

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
  ) {}

  /** Clears what a previous process with this node id left behind, then starts heartbeating. */
  async start(): Promise<void> {
    try {
      await this.registry.removeNode(this.nodeId);
      await this.registry.resync(this.nodeId, this.users(), this.rooms());
      await this.registry.heartbeat(this.nodeId, this.ttlMs);
      this.healthy = true;
    } catch (err) {
      this.log.warn({ err }, 'presence registry unreachable at start; deliveries are broadcast until it answers');
    }
    this.timer = setInterval(() => {
      if (!this.beating && !this.stopped) this.beating = this.beat().finally(() => (this.beating = null));
    }, this.heartbeatMs);
    this.timer.unref();
  }

  private async beat(): Promise<void> {
    try {
      const intact = await this.registry.heartbeat(this.nodeId, this.ttlMs);
      if (!this.healthy || !intact) {
        const users = this.users();
        await this.registry.resync(this.nodeId, users, this.rooms());
        this.log.info({ users: users.size, after: this.healthy ? 'entries lost' : 'registry unreachable' }, 'presence re-synced');
      }
      this.healthy = true;
    } catch (err) {
      if (this.healthy) this.log.warn({ err }, 'presence heartbeat failed');
      this.healthy = false;
    }
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
    await this.registry.removeNode(this.nodeId).catch((err) => this.log.warn({ err }, 'could not leave the presence registry'));
  }
}
