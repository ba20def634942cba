/**
 * One client connection's delivery state. Invariant: per conversation, message frames are written
 * in sequence order with no gap and no duplicate. The live path writes a message only if it is the
 * next sequence. One that comes early (two delivery paths, or two producers during a rebalance,
 * keep no order between them) is held for a short reorder window, bounded in frames, in case the
 * missing ones are just behind it; past the window or the bound the connection catches up from the
 * database (the source of truth), and live messages arriving meanwhile only raise the catch-up
 * target, so nothing more is buffered in memory.
 */
import { randomUUID } from 'node:crypto';
import type { Envelope, Via } from '../common/protocol.js';
import { CloseCode, encodeFrame, encodeMessageFrame } from '../common/protocol.js';
import type { Logger } from '../common/log.js';
import type { Metrics } from '../common/metrics.js';
import { OverloadError } from '../common/errors.js';
import { retry } from '../common/retry.js';
import { deadlineTimer } from '../common/timeout.js';
import { SendFences } from './send-fence.js';

/**
 * A catch-up read refused by a full database queue is asked again this many times, after full-jitter
 * pauses of up to 400, 800, 1,600 and 3,200 ms (~3 s in all on average).
 */
const OVERLOAD_RETRIES = 4;
const OVERLOAD_PAUSE_MS = 400;

/** What a connection needs from its transport (uWS in production, a fake in unit tests). */
export interface SocketPort {
  /** False when the frame could not be queued within the buffer limit: the connection must close. */
  send(text: string): boolean;
  /** Includes frames written but not yet on the socket (gateway/socket-port.ts writes once per event-loop turn). */
  bufferedAmount(): number;
  end(code: number, reason: string): void;
}

export interface HistoryPort {
  messagesAfter(conversationId: string, afterSequence: number, limit: number): Promise<Envelope[]>;
}

export interface ConnectionDeps {
  history: HistoryPort;
  log: Logger;
  metrics: Metrics;
  /** Messages read per catch-up query. */
  fillBatch: number;
  /** Catch-up pauses while more than this many bytes wait in the socket. */
  highWaterBytes: number;
  /** A catch-up paused this long for a non-draining reader closes the connection as slow. */
  drainTimeoutMs: number;
  /** The connection unsubscribed from a conversation it was removed from (the registry's room index). */
  onLeft?(conn: Connection, conversationId: string): void;
  /**
   * How long an early live message waits for the ones before it to arrive live (0: fill from the
   * database at once), and how many may wait per conversation.
   */
  reorder?: { windowMs: number; maxHeld: number };
  /** This node's presence registration may have lapsed (gateway/lapse-catch-up.ts). */
  registrationLapsed?(): boolean;
}

/** Live messages that arrived ahead of a missing sequence, waiting for it (bounded in count and time). */
interface Held {
  frames: Map<number, { env: Envelope; frame: string }>;
  timer: ReturnType<typeof setTimeout>;
}

interface Fill {
  target: number;
  /** Send `synced` when done (resume at hello). */
  synced: boolean;
  /** A catch-up (`resume`: hello's, or after a presence lapse) or a gap the live path left (`fill`). */
  via: Exclude<Via, 'live'>;
}

export class Connection {
  readonly sessionId = randomUUID();
  closed = false;
  private initializing = true;
  /** conversation -> last sequence written to this socket. Absent: not subscribed (yet). */
  private readonly lastSent = new Map<string, number>();
  // The collections below are created when first needed: most connections sit idle, and each
  // empty Map or Set costs ~150 bytes (the per-connection memory target is 2 KB).
  private fills: Map<string, Fill> | null = null;
  /** Live traffic seen while hello was still loading the user's conversations. */
  private pendingLive: Map<string, number> | null = null;
  private pendingJoins: Map<string, number> | null = null;
  /** Waiting for the socket's buffer to fall to `below` bytes (closed: released at once). */
  private drainWaiters: Array<{ below: number; release: () => void }> | null = null;
  /** Conversations whose lastSent moved during this connection (recorded on close). */
  private touched: Set<string> | null = null;
  /** Large rooms this connection is indexed in (gateway/registry.ts), so closing can leave them. */
  rooms: string[] | null = null;
  private sendFences: SendFences | null = null;
  /** conversation -> the sequence of this user's removal from it (a stale re-delivered join is older). */
  private leftAt: Map<string, number> | null = null;
  private held: Map<string, Held> | null = null;

  constructor(
    readonly userId: string,
    private readonly socket: SocketPort,
    private readonly deps: ConnectionDeps,
  ) {}

  /**
   * Completes hello: `conversations` are the user's conversations with their last sequence, read
   * after this connection was registered (so nothing committed later can be missed). The caller has
   * already written `welcome`.
   */
  activate(conversations: Iterable<readonly [string, number]>, resume: ReadonlyMap<string, number>): void {
    if (this.closed) return;
    for (const [conv, last] of conversations) this.lastSent.set(conv, last);
    for (const [conv, last] of this.pendingJoins ?? []) if (!this.lastSent.has(conv)) this.lastSent.set(conv, last);
    const live = this.pendingLive;
    this.pendingLive = null;
    this.pendingJoins = null;
    this.initializing = false;
    for (const [conv, from] of resume) {
      const current = this.lastSent.get(conv);
      if (current === undefined) continue;
      this.lastSent.set(conv, Math.min(from, current));
      this.startFill(conv, Math.max(current, live?.get(conv) ?? 0), true, 'resume');
    }
    for (const [conv, seq] of live ?? []) {
      if (resume.has(conv)) continue;
      const current = this.lastSent.get(conv);
      // Committed while hello was loading: part of the catch-up, not a sign of pipeline loss.
      if (current !== undefined && seq > current) this.startFill(conv, seq, false, 'resume');
    }
  }

  /** Still in hello: its conversations are not known yet. */
  get activating(): boolean {
    return this.initializing;
  }

  /** The conversations this connection is subscribed to. */
  subscriptions(): Iterable<string> {
    return this.lastSent.keys();
  }

  /**
   * This node was out of the presence registry, so deliveries may have gone nowhere: catch up to
   * `latest` (conversation -> its last sequence, read after the node was registered again).
   * Returns how many conversations were behind.
   */
  catchUp(latest: ReadonlyMap<string, number>): number {
    if (this.closed || this.initializing) return 0;
    let behind = 0;
    for (const [conv, last] of this.lastSent) {
      const target = latest.get(conv);
      if (target === undefined || target <= last) continue;
      behind++;
      const fill = this.fills?.get(conv);
      if (fill) {
        if (target > fill.target) fill.target = target;
        continue;
      }
      this.startFill(conv, Math.max(target, this.dropHeld(conv)), false, 'resume');
    }
    return behind;
  }

  /** During hello: a sequence known to exist (as if its message had arrived live). */
  noteLive(conversationId: string, sequence: number): void {
    if (!this.initializing || this.closed) return;
    this.pendingLive ??= new Map();
    this.pendingLive.set(conversationId, Math.max(sequence, this.pendingLive.get(conversationId) ?? 0));
  }

  /**
   * The conversation was re-homed (a regional failover, docs/multi-region.md) at `takeover`: what
   * this connection wrote above it was the old home's numbering, which the new home reuses. The
   * client is told (`rewind`, v1.4) and the live stream goes on after the takeover point with the
   * new home's entries. During hello or a catch-up (whose reads may still carry the old numbering)
   * the connection is closed instead: the client resumes, and hello rewinds it.
   */
  rehome(conv: string, takeover: number): void {
    if (this.closed) return;
    const last = this.lastSent.get(conv);
    if (!this.initializing && last === undefined) return;
    // A catch-up's read may have run before the re-homing and still write the old numbering.
    if (this.initializing || this.fills?.has(conv)) {
      this.end(CloseCode.resyncFailed, 'conversation re-homed during a catch-up: reconnect and resume');
      return;
    }
    if (last! <= takeover) return;
    this.dropHeld(conv);
    if (!this.write(encodeFrame({ type: 'rewind', conversation_id: conv, after_sequence: takeover, reason: 'rehomed' }))) return;
    this.lastSent.set(conv, takeover);
    (this.touched ??= new Set()).add(conv);
  }

  /** The live path. `frame` is the pre-encoded `message` frame (`via: live`) shared by all recipients. */
  deliverMessage(env: Envelope, frame: string): void {
    if (this.closed) return;
    const conv = env.conversation_id;
    const seq = env.sequence_number;
    if (this.initializing) {
      this.pendingLive ??= new Map();
      this.pendingLive.set(conv, Math.max(seq, this.pendingLive.get(conv) ?? 0));
      return;
    }
    const last = this.lastSent.get(conv);
    // Not subscribed: the members_added event that subscribes this connection comes first in the stream.
    if (last === undefined) return;
    const fill = this.fills?.get(conv);
    if (fill) {
      if (seq > fill.target) fill.target = seq;
      return;
    }
    if (seq <= last) return;
    if (seq === last + 1) {
      if (this.writeLive(env, frame)) this.releaseHeld(conv);
      return;
    }
    const dropped = this.hold(conv, env, frame);
    if (dropped < 0) return;
    this.startFill(conv, Math.max(seq, dropped), false, this.gapVia());
  }

  /** Writes the next live message; false if the connection closed or left the conversation. */
  private writeLive(env: Envelope, frame: string): boolean {
    const conv = env.conversation_id;
    if (!this.write(frame)) return false;
    this.lastSent.set(conv, env.sequence_number);
    (this.touched ??= new Set()).add(conv);
    this.deps.metrics.deliveries.inc({ via: 'live' });
    if (this.removedBy(env)) {
      this.leave(conv);
      return false;
    }
    return true;
  }

  /**
   * An early live message: held (-1) if the window is on and the conversation's bound not reached.
   * Otherwise the caller catches up from the database now, up to at least the returned sequence
   * (the highest one that was held and is dropped here: the fill reads it; 0 when none).
   */
  private hold(conv: string, env: Envelope, frame: string): number {
    const reorder = this.deps.reorder;
    if (!reorder || reorder.windowMs <= 0) return 0;
    let h = this.held?.get(conv);
    if (h && h.frames.size >= reorder.maxHeld) return this.dropHeld(conv);
    if (!h) {
      // The window ends after the turn's socket reads: after a turn longer than the window (a
      // storm's), the missing message may be waiting in the consumer's socket, and a fill then
      // would read the database and count a pipeline gap that was not one.
      const held: Held = { frames: new Map(), timer: deadlineTimer(reorder.windowMs, () => this.heldTimedOut(conv, held)) };
      h = held;
      (this.held ??= new Map()).set(conv, h);
    }
    h.frames.set(env.sequence_number, { env, frame });
    return -1;
  }

  /** After a live write: the held messages that now follow in order go out too. */
  private releaseHeld(conv: string): void {
    const h = this.held?.get(conv);
    if (!h) return;
    for (;;) {
      const next = h.frames.get(this.lastSent.get(conv)! + 1);
      if (!next) break;
      h.frames.delete(next.env.sequence_number);
      if (!this.writeLive(next.env, next.frame)) {
        this.dropHeld(conv);
        return;
      }
    }
    const last = this.lastSent.get(conv)!;
    for (const seq of h.frames.keys()) if (seq <= last) h.frames.delete(seq);
    if (h.frames.size === 0) this.dropHeld(conv);
  }

  /** The window passed and a sequence is still missing: the database fills up to the highest held. */
  private heldTimedOut(conv: string, h: Held): void {
    // Released, or released and held again, in the turn that ended the window: not this one's.
    if (this.held?.get(conv) !== h) return;
    const target = Math.max(...h.frames.keys());
    this.dropHeld(conv);
    const last = this.lastSent.get(conv);
    if (this.closed || last === undefined || this.fills?.has(conv) || target <= last) return;
    this.startFill(conv, target, false, this.gapVia());
  }

  /**
   * A gap in the live stream: a pipeline loss repaired from the database (`fill`), unless this node
   * is out of the presence registry, when deliveries to it went nowhere by design (its catch-up).
   */
  private gapVia(): Fill['via'] {
    if (this.deps.registrationLapsed?.()) return 'resume';
    this.deps.metrics.failedDeliveries.inc({ reason: 'gap_filled_from_db' });
    return 'fill';
  }

  /** Returns the highest sequence that was held (0: none). */
  private dropHeld(conv: string): number {
    const h = this.held?.get(conv);
    if (!h) return 0;
    clearTimeout(h.timer);
    this.held!.delete(conv);
    if (this.held!.size === 0) this.held = null;
    return h.frames.size > 0 ? Math.max(...h.frames.keys()) : 0;
  }

  /** A `members_removed` entry that removes this connection's user: the last entry it gets there. */
  private removedBy(env: Envelope): boolean {
    if (env.kind !== 'members_removed') return false;
    const ids = (env.payload as { user_ids?: unknown } | null)?.user_ids;
    return Array.isArray(ids) && ids.includes(this.userId);
  }

  /**
   * Unsubscribes after the removal entry was written: nothing later of this conversation reaches
   * this connection, whatever a stale member list elsewhere says, until an entry adds the user again.
   */
  private leave(conv: string): void {
    this.dropHeld(conv);
    (this.leftAt ??= new Map()).set(conv, this.lastSent.get(conv) ?? 0);
    this.lastSent.delete(conv);
    this.touched?.delete(conv);
    this.deps.onLeft?.(this, conv);
  }

  /** The user was added to a conversation: deliver messages after `lastSequence`. */
  join(conversationId: string, lastSequence: number): void {
    if (this.closed) return;
    if (this.initializing) {
      this.pendingJoins ??= new Map();
      if (!this.pendingJoins.has(conversationId)) this.pendingJoins.set(conversationId, lastSequence);
      return;
    }
    // A members_added delivered again (at least once) from before the removal must not subscribe again.
    const left = this.leftAt?.get(conversationId);
    if (left !== undefined && lastSequence < left) return;
    this.leftAt?.delete(conversationId);
    if (!this.lastSent.has(conversationId)) this.lastSent.set(conversationId, lastSequence);
  }

  /** The order of this connection's sends under refusals (gateway/send-fence.ts). */
  get fences(): SendFences {
    return (this.sendFences ??= new SendFences());
  }

  isSubscribed(conversationId: string): boolean {
    return this.lastSent.has(conversationId);
  }

  /** Frames with no ordering contract (receipts, typing, replies). */
  sendFrame(frame: string): void {
    if (this.closed || this.initializing) return;
    this.write(frame);
  }

  onDrain(): void {
    if (!this.drainWaiters) return;
    this.releaseDrainWaiters(this.socket.bufferedAmount());
  }

  /** Called once the socket is closed (by either side). Returns the delivery positions to record. */
  onClose(): Array<[string, number]> {
    this.closed = true;
    for (const conv of [...(this.held?.keys() ?? [])]) this.dropHeld(conv);
    this.releaseDrainWaiters(0);
    return [...(this.touched ?? [])].map((c) => [c, this.lastSent.get(c)!]);
  }

  private releaseDrainWaiters(buffered: number): void {
    const waiters = this.drainWaiters;
    if (!waiters) return;
    const keep = waiters.filter((w) => !(this.closed || buffered <= w.below));
    this.drainWaiters = keep.length ? keep : null;
    for (const w of waiters) if (!keep.includes(w)) w.release();
  }

  end(code: number, reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.end(code, reason);
  }

  private write(frame: string): boolean {
    if (this.socket.send(frame)) return true;
    this.deps.metrics.failedDeliveries.inc({ reason: 'slow_consumer' });
    this.deps.log.info({ user_id: this.userId, session_id: this.sessionId }, 'closing slow consumer');
    this.end(CloseCode.slowConsumer, 'slow consumer: reconnect and resume');
    return false;
  }

  private startFill(conv: string, target: number, synced: boolean, via: Fill['via']): void {
    (this.fills ??= new Map()).set(conv, { target, synced, via });
    void this.runFill(conv);
  }

  /**
   * Resolves true once at most `below` bytes wait in the socket (default: the catch-up high-water
   * mark), false after drainTimeoutMs: the caller then closes the connection as slow.
   */
  whenWritable(below = this.deps.highWaterBytes): Promise<boolean> {
    if (this.closed || this.socket.bufferedAmount() <= below) return Promise.resolve(true);
    return new Promise((resolve) => {
      // A deadline timer: after a turn longer than the drain timeout, a client that read in the
      // meantime has its drain (read in that turn's socket events) release it first.
      const timer = deadlineTimer(this.deps.drainTimeoutMs, () => resolve(false));
      (this.drainWaiters ??= []).push({
        below,
        release: () => {
          clearTimeout(timer);
          resolve(true);
        },
      });
    });
  }

  /**
   * A catch-up read refused because this node's database queue is full (a reconnect storm, the
   * catch-up of every connection after a presence lapse) is asked again after a pause, up to
   * OVERLOAD_RETRIES times, instead of closing the connection: a closed connection comes back with
   * a hello and a resume, more reads than the one it was refused. Any other failure closes it.
   */
  private readAdmitted(conv: string, after: number, limit: number): Promise<Envelope[]> {
    return retry(() => this.deps.history.messagesAfter(conv, after, limit), {
      retries: OVERLOAD_RETRIES,
      // Jittered, so the connections refused together do not come back together.
      baseMs: OVERLOAD_PAUSE_MS,
      capMs: OVERLOAD_PAUSE_MS * 2 ** (OVERLOAD_RETRIES - 1),
      isRetriable: (err) => err instanceof OverloadError && !this.closed,
    });
  }

  private async runFill(conv: string): Promise<void> {
    const fill = this.fills!.get(conv)!;
    const { log, metrics } = this.deps;
    try {
      for (;;) {
        let last = this.lastSent.get(conv)!;
        if (this.closed || last >= fill.target) break;
        if (!(await this.whenWritable())) {
          metrics.failedDeliveries.inc({ reason: 'slow_consumer' });
          this.end(CloseCode.slowConsumer, 'slow consumer: reconnect and resume');
          return;
        }
        if (this.closed) return;
        const batch = await this.readAdmitted(conv, last, Math.min(this.deps.fillBatch, fill.target - last));
        if (this.closed) return;
        if (batch.length === 0) {
          log.error({ conversation_id: conv, after: last, target: fill.target }, 'catch-up found no messages below a known sequence');
          break;
        }
        let ok = true;
        let left = false;
        const before = last;
        for (const m of batch) {
          if (m.sequence_number !== last + 1) {
            log.error({ conversation_id: conv, expected: last + 1, got: m.sequence_number }, 'sequence gap in database');
            ok = false;
            break;
          }
          if (!this.write(encodeMessageFrame(m, fill.via))) {
            ok = false;
            break;
          }
          last = m.sequence_number;
          if (this.removedBy(m)) {
            left = true;
            break;
          }
          // Stop at the high-water mark; the rest is read again after the socket drains.
          if (this.socket.bufferedAmount() > this.deps.highWaterBytes) break;
        }
        if (last > before) metrics.deliveries.inc({ via: fill.via }, last - before);
        this.lastSent.set(conv, last);
        if (left) {
          // A resume still ends with `synced`: the catch-up is complete (the removal is its last entry).
          if (fill.synced) this.write(encodeFrame({ type: 'synced', conversation_id: conv, last_sequence: last }));
          this.leave(conv);
          return;
        }
        (this.touched ??= new Set()).add(conv);
        if (!ok) {
          this.end(CloseCode.resyncFailed, 'catch-up failed: reconnect and resume');
          return;
        }
      }
      if (fill.synced && !this.closed) {
        this.write(encodeFrame({ type: 'synced', conversation_id: conv, last_sequence: this.lastSent.get(conv)! }));
      }
    } catch (err) {
      // The database is unreachable: the client reconnects and resumes from its last sequence.
      log.warn({ err, conversation_id: conv, user_id: this.userId }, 'catch-up failed');
      metrics.failedDeliveries.inc({ reason: 'catch_up_failed' });
      this.end(CloseCode.resyncFailed, 'catch-up failed: reconnect and resume');
    } finally {
      this.fills!.delete(conv);
    }
  }
}
