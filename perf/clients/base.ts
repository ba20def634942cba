// Protocol-neutral client used by the load generator workers.
export interface Payload { t: number; id: string; pad?: string }

export interface ClientEvents {
  /** A message delivery: conversation, per-conversation sequence/offset (if known), payload. */
  onMessage(conv: string, seq: number | undefined, payload: Payload): void;
  onAck(key: string, duplicate: boolean): void;
  onError(code: string): void;
  /** The connection went away (not by our drop()/close()). */
  onClosed(code: number): void;
}

export abstract class Client {
  open = false;
  /** Explicit local port to bind (undefined: the kernel picks one). */
  localPort: number | undefined;
  /** Highest sequence/offset seen per conversation (for resume). */
  readonly last = new Map<string, number>();
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
  tick(_now: number): void { /* default: nothing */ }
}

export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timeout: ${what}`)), ms);
    p.then((v) => { clearTimeout(t); resolve(v); }, (e: unknown) => { clearTimeout(t); reject(e instanceof Error ? e : new Error(String(e))); });
  });
}
