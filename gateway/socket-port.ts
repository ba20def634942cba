/**
 * A connection's transport on uWS, with its writes coalesced: every frame written to one socket
 * within one event-loop turn goes out in one corked write at the end of the turn (setImmediate),
 * instead of one write each. A gateway at 4,000 msg/s spent 29% of its CPU in uWS `send`, nearly
 * all of it the kernel write per frame; a message and the receipt that follows it, or the several
 * messages one Kafka batch holds for a user, were separate writes to the same socket.
 */
import type { WebSocket } from 'uWebSockets.js';
import { CloseCode } from '../common/protocol.js';
import type { SocketPort } from './connection.js';

/** uWS' `send` result when the frame was not taken (over maxBackpressure). */
const DROPPED = 2;
/**
 * The default of REALCHAT_WS_COALESCE_BYTES: past this many pending bytes a socket is written at
 * once. Coalescing pays for small frames, and a burst of large ones (a page of history, big
 * payloads) must not count against the buffer bound as if the client were slow. uWS' cork buffer
 * is 16 KiB.
 */
export const FLUSH_AT_BYTES = 16 * 1024;

/** What the port needs from the socket's owner (ws-handler.ts), kept out of its own state. */
export interface PortLifecycle {
  /** The socket is closing or closed: nothing more is written. */
  closing(): boolean;
  /** Marks the socket closing (before uWS ends it). */
  markClosing(): void;
  /** A flush emptied the pending frames: a connection waiting for the socket to drain may go on. */
  flushed(): void;
  /** uWS refused a frame (its backpressure limit): the socket is closed as a slow consumer. */
  overflowed(): void;
}

/** Ports with frames waiting, flushed once per event-loop turn. One per node, never module-level. */
export class WriteCoalescer {
  private dirty: UwsSocketPort[] = [];
  private scheduled = false;

  /**
   * `wrote`: one corked write of `frames` frames (metrics: frames per write). `failed`: a socket's
   * flush threw (a bug); the other sockets of the turn are still written.
   */
  constructor(
    readonly wrote: (frames: number) => void = () => {},
    private readonly failed: (err: unknown) => void = () => {},
  ) {}

  schedule(port: UwsSocketPort): void {
    this.dirty.push(port);
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(this.flush);
  }

  /** Writes everything pending now (also called by the turn's setImmediate). */
  readonly flush = (): void => {
    this.scheduled = false;
    const ports = this.dirty;
    this.dirty = [];
    for (const port of ports) {
      try {
        port.flush();
      } catch (err) {
        this.failed(err);
      }
    }
  };
}

/**
 * Our limit counts what uWS holds plus what waits here; uWS' own maxBackpressure is set one frame
 * (plus the close frame) above it, so uWS refuses a frame only when the estimate (UTF-16 length,
 * below the UTF-8 size for non-ASCII text) was short, and then the socket is closed as slow: a frame
 * is never skipped on an open connection.
 * A class, not an object of closures: methods on the prototype keep each connection smaller.
 * Created when the socket opens, with the lifecycle of the socket's own user data (uWS copies the
 * object given at upgrade: a port made then saw a stale copy of the session).
 */
export class UwsSocketPort implements SocketPort {
  private ws: WebSocket<unknown> | null = null;
  private pending: string[] | null = null;
  private pendingBytes = 0;
  /** In the coalescer's list for this turn (a frame past FLUSH_AT_BYTES empties `pending` early). */
  private queued = false;

  constructor(
    private readonly life: PortLifecycle,
    private readonly maxBufferedBytes: number,
    private readonly coalescer: WriteCoalescer,
    /** 0: every frame is written at once. */
    private readonly flushAtBytes = FLUSH_AT_BYTES,
  ) {}

  attach(ws: WebSocket<unknown>): void {
    this.ws = ws;
  }

  send(text: string): boolean {
    if (!this.ws || this.life.closing()) return false;
    if (!this.queued) {
      this.queued = true;
      this.coalescer.schedule(this);
    }
    (this.pending ??= []).push(text);
    this.pendingBytes += text.length;
    // An overflow here is the caller's to report: it sees false and closes the connection.
    if (this.pendingBytes >= this.flushAtBytes && !this.write(false)) return false;
    return this.bufferedAmount() <= this.maxBufferedBytes;
  }

  bufferedAmount(): number {
    return !this.ws || this.life.closing() ? 0 : this.ws.getBufferedAmount() + this.pendingBytes;
  }

  /** Writes the pending frames in one corked write (the coalescer's end of the turn). */
  flush(): void {
    this.queued = false;
    this.write(true);
  }

  /** False if uWS refused a frame: the socket is then closed as a slow consumer. */
  private write(reportOverflow: boolean): boolean {
    const frames = this.pending;
    this.pending = null;
    this.pendingBytes = 0;
    const ws = this.ws;
    if (!frames || !ws || this.life.closing()) return true;
    let overflowed = false;
    ws.cork(() => {
      for (const f of frames) {
        if (ws.send(f, false, false) === DROPPED) {
          overflowed = true;
          return;
        }
      }
    });
    this.coalescer.wrote(frames.length);
    if (overflowed) {
      if (reportOverflow) this.life.overflowed();
      this.end(CloseCode.slowConsumer, 'slow consumer: reconnect and resume');
      return false;
    }
    this.life.flushed();
    return true;
  }

  /** What was written before (an error frame, say) goes out first. */
  end(code: number, reason: string): void {
    if (!this.ws || this.life.closing()) return;
    if (this.pending) this.flush();
    if (this.life.closing()) return;
    this.life.markClosing();
    this.ws.end(code, reason);
  }
}
