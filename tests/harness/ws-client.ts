/** A test client for the v1 WebSocket protocol that records every frame it receives. */
import WebSocket from 'ws';

export type Frame = Record<string, any> & { type: string };

export class TestClient {
  readonly frames: Frame[] = [];
  closeCode: number | null = null;
  closeReason = '';
  private waiters: Array<() => void> = [];
  private closedPromise: Promise<void>;

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data, isBinary) => {
      if (isBinary) return;
      this.frames.push(JSON.parse(data.toString()));
      this.notify();
    });
    this.closedPromise = new Promise((resolve) => {
      ws.on('close', (code, reason) => {
        this.closeCode = code;
        this.closeReason = reason.toString();
        this.notify();
        resolve();
      });
    });
    ws.on('error', () => {});
  }

  static async open(url: string): Promise<TestClient> {
    const ws = new WebSocket(url, { handshakeTimeout: 5000 });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    return new TestClient(ws);
  }

  /** Opens, says hello, waits for welcome. */
  static async connect(url: string, token: string, resume?: Record<string, number>): Promise<TestClient> {
    const c = await TestClient.open(url);
    c.send({ type: 'hello', token, ...(resume ? { resume } : {}) });
    await c.waitFor((f) => f.type === 'welcome' || f.type === 'error');
    const first = c.frames.find((f) => f.type === 'welcome' || f.type === 'error')!;
    if (first.type !== 'welcome') throw new Error(`hello refused: ${JSON.stringify(first)}`);
    return c;
  }

  private notify() {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** The last frames, shortened, for error messages. */
  tail(): string {
    return this.frames
      .slice(-3)
      .map((f) => JSON.stringify(f).slice(0, 300))
      .join(' | ');
  }

  send(frame: unknown): void {
    this.ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
  }

  /** Waits until `pred` holds for some received frame (or the socket closes if allowClose). */
  async waitFor(pred: (f: Frame) => boolean, timeoutMs = 10_000, since = 0): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.frames.find((f, i) => i >= since && pred(f));
      if (hit) return hit;
      if (this.closeCode !== null)
        throw new Error(`socket closed (${this.closeCode} ${this.closeReason}) while waiting; frames: ${this.tail()}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for a frame; last frames: ${this.tail()}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Waits until `count` frames satisfy `pred`. */
  async waitForCount(pred: (f: Frame) => boolean, count: number, timeoutMs = 15_000): Promise<Frame[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hits = this.frames.filter(pred);
      if (hits.length >= count) return hits;
      if (this.closeCode !== null) throw new Error(`socket closed (${this.closeCode}) with ${hits.length}/${count} frames`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out with ${hits.length}/${count} frames`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 200));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  async waitClosed(timeoutMs = 10_000): Promise<number> {
    await Promise.race([this.closedPromise, new Promise((_, rej) => setTimeout(() => rej(new Error('socket did not close')), timeoutMs))]);
    return this.closeCode!;
  }

  messages(conversationId?: string): Array<Record<string, any>> {
    return this.frames
      .filter((f) => f.type === 'message' && (!conversationId || f.message.conversation_id === conversationId))
      .map((f) => f.message);
  }

  /** Sends and waits for the answer to this send (frames received before it are not considered). */
  async sendMessage(conversationId: string, key: string, payload: unknown): Promise<Frame> {
    const since = this.frames.length;
    this.send({ type: 'send', conversation_id: conversationId, idempotency_key: key, payload });
    return this.waitFor((f) => (f.type === 'ack' || f.type === 'error') && (f.idempotency_key === key || f.ref === key), 10_000, since);
  }

  close(): void {
    this.ws.terminate();
  }
}
