/**
 * One WebSocket attempt: open (with a timeout), `hello`, `welcome` (with a timeout), then heartbeats:
 * a `ping` every heartbeat_interval_ms, and a connection that answers nothing within `pongTimeoutMs`
 * after a ping is declared dead. Nothing but `hello` is written before `welcome` (the server refuses
 * it). `onClosed` is reported exactly once, however the session ends.
 */
import {
  decodeServerFrame,
  type ClientFrame,
  type ServerFrame,
  type Welcome,
  type WebSocketConstructor,
  type WebSocketLike,
} from './types.js';

type Timer = ReturnType<typeof setTimeout>;

const OPEN = 1;

export interface SessionOptions {
  WebSocket: WebSocketConstructor;
  url: string;
  token: string;
  resume: Record<string, number>;
  /** The message id at each resume position, where known (v1.4). */
  resumeLastIds?: Record<string, string>;
  openTimeoutMs: number;
  welcomeTimeoutMs: number;
  pongTimeoutMs: number;
  now(): number;
  onWelcome(w: Welcome): void;
  onFrame(f: ServerFrame): void;
  /** `code` is the close code (1006 when the connection failed or was declared dead locally). */
  onClosed(code: number, reason: string): void;
}

export class Session {
  private ws: WebSocketLike | null = null;
  private welcomed = false;
  private welcomedAtMs: number | null = null;
  private ended = false;
  private timer: Timer | null = null;
  private heartbeat: ReturnType<typeof setInterval> | null = null;
  private pongTimer: Timer | null = null;
  private lastReceivedAt = 0;

  constructor(private readonly o: SessionOptions) {}

  start(): void {
    let ws: WebSocketLike;
    try {
      ws = new this.o.WebSocket(this.o.url);
    } catch (err) {
      this.end(1006, `cannot open WebSocket: ${String(err)}`);
      return;
    }
    this.ws = ws;
    this.timer = setTimeout(() => this.abort(`no connection within ${this.o.openTimeoutMs} ms`), this.o.openTimeoutMs);
    ws.onopen = () => {
      if (this.ended) return;
      this.clearTimer();
      const hello: ClientFrame = { type: 'hello', token: this.o.token };
      if (Object.keys(this.o.resume).length > 0) hello.resume = this.o.resume;
      if (this.o.resumeLastIds && Object.keys(this.o.resumeLastIds).length > 0) hello.resume_last_ids = this.o.resumeLastIds;
      this.write(hello);
      this.timer = setTimeout(() => this.abort(`no welcome within ${this.o.welcomeTimeoutMs} ms`), this.o.welcomeTimeoutMs);
    };
    ws.onmessage = (ev: { data: unknown }) => {
      if (this.ended) return;
      this.lastReceivedAt = this.o.now();
      if (this.pongTimer) {
        clearTimeout(this.pongTimer);
        this.pongTimer = null;
      }
      const frame = decodeServerFrame(ev.data);
      if (!frame) return; // not ours to understand: ignored (forward compatibility)
      if (!this.welcomed && frame.type === 'welcome') {
        this.welcomed = true;
        this.welcomedAtMs = this.o.now();
        this.clearTimer();
        this.startHeartbeat(frame.heartbeat_interval_ms);
        this.o.onWelcome(frame);
        return;
      }
      this.o.onFrame(frame);
    };
    ws.onclose = (ev: { code: number; reason: string }) => this.end(ev.code || 1006, ev.reason || 'connection closed');
    ws.onerror = () => {
      /* a close event follows */
    };
  }

  get isWelcomed(): boolean {
    return this.welcomed && !this.ended;
  }

  /** When the welcome arrived (null before it), also after the session ended. */
  get welcomedAt(): number | null {
    return this.welcomedAtMs;
  }

  /** Writes a frame after welcome; false when the session cannot send. */
  send(frame: ClientFrame): boolean {
    if (!this.isWelcomed) return false;
    return this.write(frame);
  }

  /** Closes from our side; onClosed is reported at once (a dead peer may never send a close frame). */
  close(reason: string, code = 1000): void {
    this.end(code, reason, true);
  }

  private abort(reason: string): void {
    this.end(1006, reason, true);
  }

  private write(frame: ClientFrame): boolean {
    const ws = this.ws;
    if (!ws || ws.readyState !== OPEN) return false;
    try {
      ws.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  private startHeartbeat(intervalMs: number): void {
    const every = Math.max(1000, Number.isFinite(intervalMs) ? intervalMs : 25_000);
    this.heartbeat = setInterval(() => {
      if (this.ended) return;
      const sentAt = this.o.now();
      this.write({ type: 'ping' });
      if (this.pongTimer) return;
      this.pongTimer = setTimeout(() => {
        this.pongTimer = null;
        if (this.lastReceivedAt < sentAt) this.abort(`no answer to ping within ${this.o.pongTimeoutMs} ms`);
      }, this.o.pongTimeoutMs);
    }, every);
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private end(code: number, reason: string, closeSocket = false): void {
    if (this.ended) return;
    this.ended = true;
    this.clearTimer();
    if (this.heartbeat) clearInterval(this.heartbeat);
    if (this.pongTimer) clearTimeout(this.pongTimer);
    this.heartbeat = null;
    this.pongTimer = null;
    const ws = this.ws;
    if (ws) {
      ws.onopen = null;
      ws.onmessage = null;
      ws.onclose = null;
      ws.onerror = () => {};
      if (closeSocket) {
        try {
          ws.close(code >= 3000 && code <= 4999 ? code : 1000, reason.slice(0, 120));
        } catch {
          /* already closing */
        }
      }
    }
    this.o.onClosed(code, reason);
  }
}
