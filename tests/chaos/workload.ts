/**
 * The chaos workload: SDK clients (client/) spread over the gateways, sending open loop at a fixed
 * rate with an idempotency key per message, and everything they send, get acknowledged and surface
 * recorded into the history. The SDK does the retrying, resuming and gap filling; the socket it is
 * given is ours, so the run can see raw frames (how each message arrived: live, fill, resume) and
 * pick a live gateway the way a health-checked load balancer would.
 */
import type { InFlightSnapshot } from './faults.js';
import WebSocket from 'ws';
import { RealChatClient, RealChatError, type Envelope, type WebSocketConstructor, type WebSocketLike } from '../../client/index.js';
import type { Via } from '../../common/wire.js';
import { History } from '../harness/history.js';
import type { Rng } from './rng.js';

/** Deliberately broken client-side variants, to show the checker and the run can fail. */
export type Broken = 'none' | 'drop-live' | 'no-fill';

export interface SendRecord {
  key: string;
  sender: string;
  conv: string;
  firstAt: number;
  ackAt: number | null;
  seq: number | null;
  messageId: string | null;
  /** Last error when the SDK gave up (the outcome is unknown until resolved by the key). */
  error: string | null;
}

export interface Conversation {
  id: string;
  members: string[];
}

export interface User {
  id: string;
  token: string;
  home: number;
}

export interface FillEvent {
  at: number;
  user: string;
  count: number;
  via: 'fill' | 'resume' | 'sync';
}

export interface WireStats {
  messageFrames: number;
  /** The same (conversation, sequence) written twice on one connection: the server's own dedup failed. */
  wireDuplicates: number;
  viaLive: number;
  viaFill: number;
  viaResume: number;
  /** Messages the SDK fetched with `sync` because it saw a gap. */
  syncFilled: number;
  droppedByBrokenVariant: number;
  connections: number;
  /** Acks with `duplicate: true`: a resend of a message that was already stored. */
  duplicateAcks: number;
}

export interface WorkloadOptions {
  rng: Rng;
  gatewayUrls: () => Array<{ url: string; up: boolean }>;
  broken: Broken;
  log: (msg: string) => void;
  clock: () => number;
}

export class Workload {
  readonly history = new History();
  readonly sends = new Map<string, SendRecord>();
  /** `${conv}#${seq}` -> receive time per member (the SDK's surfaced `message` events). */
  readonly received = new Map<string, Map<string, number>>();
  readonly fills: FillEvent[] = [];
  readonly wire: WireStats = {
    messageFrames: 0,
    wireDuplicates: 0,
    viaLive: 0,
    viaFill: 0,
    viaResume: 0,
    syncFilled: 0,
    droppedByBrokenVariant: 0,
    connections: 0,
    duplicateAcks: 0,
  };
  /** Sends the SDK gave up on, by error code (the run resends them with their key after the heal). */
  readonly refused: Record<string, number> = {};
  /** Error frames the server answered, by code/reason; the SDK retries the retriable ones itself. */
  readonly errorFrames: Record<string, number> = {};
  private readonly clients = new Map<string, RealChatClient>();
  private readonly convOf = new Map<string, Conversation>();
  private timer: ReturnType<typeof setInterval> | null = null;
  private counter = 0;
  private readonly pending = new Set<Promise<unknown>>();
  /** `${user}|${conv}#${seq}` -> how the frame that carried it arrived, until the SDK surfaces it. */
  private readonly arrivedVia = new Map<string, Via | undefined>();

  constructor(
    readonly users: User[],
    readonly conversations: Conversation[],
    private readonly o: WorkloadOptions,
  ) {
    for (const c of conversations) this.convOf.set(c.id, c);
  }

  get clientCount(): number {
    return this.clients.size;
  }

  async connectAll(): Promise<void> {
    const convsOf = new Map<string, string[]>();
    for (const c of this.conversations) for (const m of c.members) convsOf.set(m, [...(convsOf.get(m) ?? []), c.id]);
    await Promise.all(
      this.users.map(async (u) => {
        const client = new RealChatClient({
          url: 'ws://chaos.invalid/v1/ws',
          token: u.token,
          WebSocket: this.socketClass(u),
          // A stopped gateway keeps its sockets open: notice it within seconds, not the 25 s default.
          pongTimeoutMs: 3000,
          reconnectBaseMs: 100,
          reconnectCapMs: 2000,
          openTimeoutMs: 3000,
          welcomeTimeoutMs: 5000,
          requestTimeoutMs: 10_000,
          // The run resolves every send itself: the SDK keeps retrying with the same key until the heal.
          sendTimeoutMs: 10 * 60_000,
          maxSendAttempts: 1_000_000,
          maxQueuedSends: 20_000,
          maxInFlightSends: 32,
          random: () => this.o.rng.next(),
        });
        client.on('message', (env) => this.onMessage(u.id, env));
        for (const conv of convsOf.get(u.id) ?? []) client.track(conv, 0);
        this.clients.set(u.id, client);
        await client.connect();
      }),
    );
  }

  /** Open loop: `rate` sends per second regardless of how fast they are acknowledged. */
  start(rate: number): void {
    let credit = 0;
    let last = this.o.clock();
    this.timer = setInterval(() => {
      const now = this.o.clock();
      credit += ((now - last) / 1000) * rate;
      last = now;
      // A stalled event loop must not turn into a burst of thousands at once.
      credit = Math.min(credit, rate);
      while (credit >= 1) {
        credit--;
        this.sendOne();
      }
    }, 20);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  private sendOne(): void {
    const conv = this.o.rng.pick(this.conversations);
    const sender = this.o.rng.pick(conv.members);
    const key = `c${++this.counter}`;
    this.submit(sender, conv.id, key, true);
  }

  private submit(sender: string, conv: string, key: string, first: boolean): void {
    const client = this.clients.get(sender)!;
    const at = this.o.clock();
    if (first) {
      this.history.send(sender, conv, key);
      this.sends.set(key, { key, sender, conv, firstAt: at, ackAt: null, seq: null, messageId: null, error: null });
    }
    const rec = this.sends.get(key)!;
    const p = client.send(conv, { k: key, t: rec.firstAt }, { idempotencyKey: key }).then(
      (ack) => {
        if (rec.ackAt === null) rec.ackAt = this.o.clock();
        rec.seq = ack.sequence_number;
        rec.messageId = ack.message_id;
        rec.error = null;
        this.history.ack(sender, key, ack);
      },
      (err: unknown) => {
        const code = err instanceof RealChatError ? err.code : 'error';
        rec.error = code;
        this.refused[code] = (this.refused[code] ?? 0) + 1;
      },
    );
    this.pending.add(p);
    void p.finally(() => this.pending.delete(p));
  }

  /** Every send the SDK gave up on is sent again with its key: that resolves its unknown outcome. */
  async resolveUnknown(timeoutMs: number): Promise<number> {
    let resent = 0;
    const deadline = this.o.clock() + timeoutMs;
    while (this.o.clock() < deadline) {
      await Promise.race([Promise.allSettled([...this.pending]), new Promise((r) => setTimeout(r, 1000))]);
      if (this.pending.size > 0) continue;
      const open = [...this.sends.values()].filter((s) => s.ackAt === null);
      if (open.length === 0) return resent;
      for (const s of open) {
        resent++;
        this.submit(s.sender, s.conv, s.key, false);
      }
      await new Promise((r) => setTimeout(r, 500));
    }
    return resent;
  }

  private onMessage(user: string, env: Envelope): void {
    const id0 = `${user}|${env.conversation_id}#${env.sequence_number}`;
    const via = this.arrivedVia.get(id0);
    this.arrivedVia.delete(id0);
    this.history.receive(user, env as never, { via, atMs: this.o.clock() });
    const id = `${env.conversation_id}#${env.sequence_number}`;
    let m = this.received.get(id);
    if (!m) this.received.set(id, (m = new Map()));
    if (!m.has(user)) m.set(user, this.o.clock());
  }

  /** Members whose client has not yet surfaced everything up to `lastSeq` of each conversation. */
  behind(lastSeq: Map<string, number>): string[] {
    const out: string[] = [];
    for (const c of this.conversations) {
      const want = lastSeq.get(c.id) ?? 0;
      for (const m of c.members) {
        const have = this.clients.get(m)?.position(c.id) ?? 0;
        if (have < want) out.push(`${m.slice(0, 8)} in ${c.id.slice(0, 8)}: ${have}/${want}`);
      }
    }
    return out;
  }

  /**
   * What the workload still owes from before `olderThanMs` ago: sends in flight (not acked, not
   * given up) and acked messages some member has not surfaced yet. Null when it owes nothing, so a
   * fault that starts now is measured on a caught-up pipeline.
   */
  backlog(olderThanMs: number): string | null {
    const before = this.o.clock() - olderThanMs;
    let inFlight = 0;
    const want = new Map<string, number>();
    for (const s of this.sends.values()) {
      if (s.ackAt === null) {
        if (s.error === null && s.firstAt < before) inFlight++;
      } else if (s.ackAt < before && s.seq !== null && s.seq > (want.get(s.conv) ?? 0)) want.set(s.conv, s.seq);
    }
    const behind = this.behind(want).length;
    return inFlight === 0 && behind === 0 ? null : `${inFlight} sends unacked, ${behind} member streams behind`;
  }

  /** What is in flight now: sends not acked (nor given up), and acked messages some member has not surfaced. */
  inFlight(): InFlightSnapshot {
    const sends: string[] = [];
    const owed: InFlightSnapshot['owed'] = [];
    for (const s of this.sends.values()) {
      if (s.ackAt === null) {
        if (s.error === null) sends.push(s.key);
        continue;
      }
      if (s.seq === null) continue;
      const got = this.received.get(`${s.conv}#${s.seq}`);
      const readers = this.membersOf(s.conv).filter((m) => !got?.has(m));
      if (readers.length > 0) owed.push({ conv: s.conv, seq: s.seq, readers });
    }
    return { sends, owed };
  }

  membersOf(conv: string): string[] {
    return this.convOf.get(conv)?.members ?? [];
  }

  closeAll(): void {
    this.stop();
    for (const c of this.clients.values()) c.close();
  }

  /**
   * The SDK's socket: connects to the user's home gateway while it is up, else to the next one that
   * is (a health-checked load balancer), and taps every frame.
   */
  private socketClass(u: User): WebSocketConstructor {
    const w = this;
    const rng = this.o.rng.fork(u.home * 7919 + u.id.charCodeAt(0));
    return class ChaosSocket implements WebSocketLike {
      onopen: ((ev: any) => void) | null = null;
      onmessage: ((ev: any) => void) | null = null;
      onclose: ((ev: any) => void) | null = null;
      onerror: ((ev: any) => void) | null = null;
      private readonly ws: WebSocket;
      private readonly seen = new Set<string>();

      constructor(_url: string) {
        const gws = w.o.gatewayUrls();
        let pick = gws[u.home % gws.length]!;
        if (!pick.up) {
          const upOnes = gws.filter((g) => g.up);
          if (upOnes.length > 0) pick = upOnes[Math.floor(rng.next() * upOnes.length)]!;
        }
        w.wire.connections++;
        this.ws = new WebSocket(pick.url, { handshakeTimeout: 3000 });
        this.ws.onopen = (ev) => this.onopen?.(ev);
        this.ws.onclose = (ev) => this.onclose?.(ev);
        this.ws.onerror = (ev) => this.onerror?.(ev);
        this.ws.onmessage = (ev) => {
          if (this.tapIn(ev.data)) this.onmessage?.(ev);
        };
      }

      get readyState(): number {
        return this.ws.readyState;
      }

      send(data: string): void {
        if (w.o.broken === 'no-fill') {
          const f = JSON.parse(data) as { type: string; resume?: unknown };
          if (f.type === 'sync') return;
          if (f.type === 'hello' && f.resume) {
            delete f.resume;
            data = JSON.stringify(f);
          }
        }
        this.ws.send(data);
      }

      close(): void {
        // A stopped gateway never answers a close handshake: drop the TCP connection at once.
        this.ws.terminate();
      }

      /** Returns false to hide the frame from the SDK (broken variants only). */
      private tapIn(data: unknown): boolean {
        if (typeof data !== 'string') return true;
        let f: {
          type?: string;
          via?: string;
          message?: Envelope;
          messages?: Envelope[];
          code?: string;
          reason?: string;
          duplicate?: boolean;
        };
        try {
          f = JSON.parse(data);
        } catch {
          return true;
        }
        const now = w.o.clock();
        if (f.type === 'message' && f.message) {
          w.wire.messageFrames++;
          const id = `${f.message.conversation_id}#${f.message.sequence_number}`;
          if (this.seen.has(id)) w.wire.wireDuplicates++;
          this.seen.add(id);
          w.arrivedVia.set(`${u.id}|${id}`, f.via as Via | undefined);
          if (f.via === 'fill') {
            w.wire.viaFill++;
            w.fills.push({ at: now, user: u.id, count: 1, via: 'fill' });
          } else if (f.via === 'resume') {
            w.wire.viaResume++;
            w.fills.push({ at: now, user: u.id, count: 1, via: 'resume' });
          } else {
            w.wire.viaLive++;
            if (w.o.broken !== 'none' && rng.next() < 0.02) {
              w.wire.droppedByBrokenVariant++;
              return false;
            }
          }
        } else if (f.type === 'error') {
          const k = `${f.code}${f.reason ? `/${f.reason}` : ''}`;
          w.errorFrames[k] = (w.errorFrames[k] ?? 0) + 1;
        } else if (f.type === 'ack' && f.duplicate) {
          w.wire.duplicateAcks++;
        } else if (f.type === 'messages' && Array.isArray(f.messages) && f.messages.length > 0) {
          w.wire.syncFilled += f.messages.length;
          // The SDK asked because it saw a gap: to the checker that is a fill like the server's own.
          for (const m of f.messages) w.arrivedVia.set(`${u.id}|${m.conversation_id}#${m.sequence_number}`, 'fill');
          w.fills.push({ at: now, user: u.id, count: f.messages.length, via: 'sync' });
        }
        return true;
      }
    };
  }
}
