/**
 * A test client that survives node failures the way a real client must: on close it reconnects to
 * another gateway node, resumes every conversation from the last sequence it holds, and resends
 * unacknowledged messages with the same idempotency key. Everything it surfaced is kept in order.
 */
import { TestClient, type Frame } from './ws-client.js';

export class ResilientClient {
  private conn: TestClient | null = null;
  private readonly harvested: Frame[] = [];
  private readonly lastSeq = new Map<string, number>();
  private stopped = false;
  private reconnecting: Promise<void> | null = null;
  reconnects = 0;

  constructor(
    private readonly urls: () => string[],
    private readonly token: string,
    private nodeIndex: number,
    private readonly conversations: string[],
  ) {}

  async connect(): Promise<void> {
    const deadline = Date.now() + 30_000;
    for (let attempt = 0; ; attempt++) {
      const urls = this.urls();
      const url = urls[(this.nodeIndex + attempt) % urls.length]!;
      try {
        const resume: Record<string, number> = {};
        for (const c of this.conversations) resume[c] = this.lastSeq.get(c) ?? this.last(c);
        this.conn = await TestClient.connect(url, this.token, resume);
        this.nodeIndex = (this.nodeIndex + attempt) % urls.length;
        return;
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 200 + Math.random() * 300));
      }
    }
  }

  private last(conv: string): number {
    const all = this.messages(conv);
    return all.length ? all[all.length - 1]!.sequence_number : 0;
  }

  /** Messages surfaced, across every connection, in arrival order. */
  messages(conv: string): Array<Record<string, any>> {
    const frames = [...this.harvested, ...(this.conn?.frames ?? [])];
    return frames.filter((f) => f.type === 'message' && f.message.conversation_id === conv).map((f) => f.message);
  }

  get closed(): boolean {
    return this.conn?.closeCode !== null;
  }

  /** Moves to another node if the current connection died. */
  async ensureConnected(): Promise<void> {
    if (this.stopped || !this.conn || this.conn.closeCode === null) return;
    this.reconnecting ??= (async () => {
      this.harvested.push(...this.conn!.frames);
      for (const c of this.conversations) this.lastSeq.set(c, this.last(c));
      this.nodeIndex++;
      this.reconnects++;
      await this.connect();
    })().finally(() => {
      this.reconnecting = null;
    });
    await this.reconnecting;
  }

  /** Sends until acknowledged, across reconnects; returns the ack. */
  async send(conv: string, key: string, payload: unknown): Promise<Frame> {
    const deadline = Date.now() + 60_000;
    for (;;) {
      await this.ensureConnected();
      try {
        const a = await this.conn!.sendMessage(conv, key, payload);
        if (a.type === 'ack') return a;
        if (a.code !== 'unavailable') throw new Error(`send refused: ${JSON.stringify(a)}`);
      } catch (err) {
        if ((err as Error).message.startsWith('send refused')) throw err;
      }
      if (Date.now() > deadline) throw new Error(`send ${key} not acknowledged within 60 s`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  async waitForSequence(conv: string, seq: number, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.last(conv) < seq) {
      await this.ensureConnected();
      if (Date.now() > deadline) throw new Error(`reached ${this.last(conv)} of ${seq} in ${conv}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  stop(): void {
    this.stopped = true;
    this.conn?.close();
  }
}
