/**
 * A fake WebSocket for SDK unit tests (no server): every socket's far end is one FakeServer, which
 * welcomes each hello (unless told not to), then sends `afterWelcome`, and answers other frames
 * with `answer`. Everything arrives on a later tick, as from a network.
 */
import type { WebSocketConstructor, WebSocketLike } from '../../client/index.js';

export type Frame = Record<string, any> & { type: string };

export class FakeServer {
  readonly sockets: FakeSocket[] = [];
  /** Welcome each hello (false: leave it unanswered). */
  welcome = true;
  /** Frames each welcome is followed by. */
  afterWelcome: Frame[] = [];
  /** Answers to request frames; default: none. */
  answer: (f: Frame, s: FakeSocket) => void = () => {};

  constructor(readonly userId = 'u1') {}

  get last(): FakeSocket {
    return this.sockets.at(-1)!;
  }

  get WebSocket(): WebSocketConstructor {
    const server = this;
    return class extends FakeSocket {
      constructor(url: string) {
        super(url, server);
      }
    };
  }

  /** Every frame of `type` the client sent, on any socket, in order. */
  sent(type: string): Frame[] {
    return this.sockets.flatMap((s) => s.sent.filter((f) => f.type === type));
  }
}

export class FakeSocket implements WebSocketLike {
  readyState = 0;
  onopen: ((ev: any) => void) | null = null;
  onmessage: ((ev: any) => void) | null = null;
  onclose: ((ev: any) => void) | null = null;
  onerror: ((ev: any) => void) | null = null;
  readonly sent: Frame[] = [];

  constructor(
    readonly url: string,
    private readonly server: FakeServer,
  ) {
    server.sockets.push(this);
    setTimeout(() => {
      this.readyState = 1;
      this.onopen?.({});
    }, 0);
  }

  send(data: string): void {
    const f = JSON.parse(data) as Frame;
    this.sent.push(f);
    if (f.type === 'hello') {
      if (!this.server.welcome) return;
      const n = this.server.sockets.length;
      setTimeout(() => {
        this.receive({
          type: 'welcome',
          user_id: this.server.userId,
          session_id: `s${n}`,
          node_id: 'n1',
          heartbeat_interval_ms: 60_000,
          protocol_version: 1,
        });
        for (const x of this.server.afterWelcome) this.receive(x);
      }, 0);
      return;
    }
    setTimeout(() => this.server.answer(f, this), 0);
  }

  receive(f: Frame): void {
    this.onmessage?.({ data: JSON.stringify(f) });
  }

  /** The server closes the connection. */
  serverClose(code: number, reason: string): void {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }

  close(): void {
    this.readyState = 3;
  }
}
