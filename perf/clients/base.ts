// Protocol-neutral client used by the load generator workers.
import WebSocket from 'ws';

export interface Payload {
  t: number;
  id: string;
  pad?: string;
}

export interface ClientEvents {
  /** A message delivery: conversation, per-conversation sequence/offset (if known), payload. */
  onMessage(conv: string, seq: number | undefined, payload: Payload): void;
  onAck(key: string, duplicate: boolean): void;
  onError(code: string): void;
  /** The connection went away (not by our drop()/close()). */
  onClosed(code: number): void;
}

/** One connect() in progress; it settles once: succeeded, failed or timed out. */
export interface ConnectAttempt {
  readonly settled: boolean;
  /** Connected, authenticated and joined: mark the client open and resolve connect(). */
  succeed(): void;
  /** Reject connect() (no-op once settled). */
  fail(err: Error): void;
  /** The transport closed: fails the attempt while it is in progress, afterwards reports the loss. */
  closed(code: number): void;
}

export abstract class Client {
  open = false;
  /** Explicit local port to bind (undefined: the kernel picks one). */
  localPort: number | undefined;
  /** Highest sequence/offset seen per conversation (for resume). */
  readonly last = new Map<string, number>();
  /** Set by drop()/close(): a close we asked for is not reported through onClosed. */
  protected closedByUs = false;
  constructor(
    readonly idx: number,
    readonly url: string,
    readonly userId: string,
    readonly token: string,
    readonly convs: readonly string[],
    readonly localAddress: string,
    protected readonly ev: ClientEvents,
  ) {}
  /** Connect, authenticate and join/subscribe every conversation. With resume, ask for missed messages. */
  abstract connect(resume: boolean, timeoutMs: number): Promise<void>;
  /** Returns false when the connection is not open. */
  abstract send(conv: string, key: string, payload: Payload): boolean;
  /** Abrupt drop (no close handshake). */
  abstract drop(): void;
  abstract close(): void;
  /** Called about once a second by the worker; for protocol heartbeats. */
  tick(_now: number): void {
    /* default: nothing */
  }

  /**
   * The connect/timeout block every protocol shares. `start` opens the transport and drives the
   * handshake through the attempt; connect() settles once, on succeed(), fail() or after timeoutMs
   * ('timeout'). `start` returns how to abandon its transport, called on failure (the ws-based
   * clients terminate the socket, so none outlives a failed connect()); it settles from the
   * transport's events, never synchronously.
   */
  // biome-ignore lint/suspicious/noConfusingVoidType: `start` may return nothing (no transport to abandon)
  protected attemptConnect(timeoutMs: number, start: (attempt: ConnectAttempt) => (() => void) | void): Promise<void> {
    this.closedByUs = false;
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      let abandon: (() => void) | undefined;
      const settle = (err?: Error): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err) {
          try {
            abandon?.();
          } catch {
            /* ignore */
          }
          reject(err);
        } else resolve();
      };
      const timer = setTimeout(() => settle(new Error('timeout')), timeoutMs);
      abandon =
        start({
          get settled() {
            return settled;
          },
          succeed: () => {
            this.open = true;
            settle();
          },
          fail: (err) => settle(err),
          closed: (code) => {
            if (settled) {
              this.transportClosed(code);
              return;
            }
            this.open = false;
            settle(new Error(`closed ${code}`));
          },
        }) ?? undefined;
    });
  }

  /** Remember the highest sequence/offset seen in a conversation (what resume asks from). */
  protected advance(conv: string, seq: number | undefined): void {
    if (typeof seq === 'number') this.last.set(conv, Math.max(seq, this.last.get(conv) ?? 0));
  }

  /** A message delivery: advance, then hand it to the worker. */
  protected received(conv: string, seq: number | undefined, payload: Payload): void {
    this.advance(conv, seq);
    this.ev.onMessage(conv, seq, payload);
  }

  /** The transport went away after connect() settled: report it unless we closed it ourselves. */
  protected transportClosed(code: number): void {
    const wasOpen = this.open;
    this.open = false;
    if (!this.closedByUs && wasOpen) this.ev.onClosed(code);
  }
}

/** What the clients that speak over a plain WebSocket share (RealChat, the bare ws peer, Centrifugo). */
export abstract class WebSocketClient extends Client {
  protected ws: WebSocket | undefined;

  /** A new socket to this.url from this.localAddress (and this.localPort when set); becomes this.ws. */
  protected openSocket(timeoutMs: number): WebSocket {
    // localPort is passed through to net.connect (not in @types/ws)
    const opts: WebSocket.ClientOptions & { localPort?: number } = {
      localAddress: this.localAddress,
      perMessageDeflate: false,
      handshakeTimeout: timeoutMs,
    };
    if (this.localPort !== undefined) opts.localPort = this.localPort;
    this.ws = new WebSocket(this.url, opts);
    return this.ws;
  }

  /** The socket, when the connection is open for sending; undefined otherwise. */
  protected writable(): WebSocket | undefined {
    const ws = this.ws;
    return this.open && ws && ws.readyState === WebSocket.OPEN ? ws : undefined;
  }

  drop(): void {
    this.closedByUs = true;
    this.open = false;
    this.ws?.terminate();
  }

  close(): void {
    this.closedByUs = true;
    this.open = false;
    try {
      this.ws?.close(1000);
    } catch {
      /* ignore */
    }
  }
}
