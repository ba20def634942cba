// Centrifugo client protocol v2, JSON over WebSocket, without an SDK. Commands carry an `id`,
// replies echo it; several replies/pushes may share one frame, newline-delimited. A bare `{}` from
// the server is a ping and must be answered with `{}`. Channels: chat:<conversation>.
import WebSocket from 'ws';
import { Client, type ClientEvents, type Payload } from './base.js';

interface Pub { data?: Payload; offset?: number }
interface Reply {
  id?: number;
  error?: { code: number; message: string; temporary?: boolean };
  push?: { channel?: string; pub?: Pub; disconnect?: { code: number; reason: string } };
  connect?: { client?: string; ping?: number; pong?: boolean };
  subscribe?: { epoch?: string; offset?: number; recovered?: boolean; recoverable?: boolean; publications?: Pub[]; was_recovering?: boolean };
  publish?: Record<string, never>;
}

const PREFIX = 'chat:';

export class CentrifugoClient extends Client {
  private ws: WebSocket | undefined;
  private nextId = 1;
  private closedByUs = false;
  private readonly epochs = new Map<string, string>();
  private readonly pendingPub = new Map<number, string>(); // command id -> idempotency key (ours)
  private readonly pendingSub = new Map<number, string>(); // command id -> conversation
  recoveredAll = true;

  constructor(idx: number, url: string, userId: string, token: string, convs: readonly string[], localAddress: string, ev: ClientEvents) {
    super(idx, url, userId, token, convs, localAddress, ev);
  }

  connect(resume: boolean, timeoutMs: number): Promise<void> {
    this.closedByUs = false;
    this.pendingPub.clear();
    this.pendingSub.clear();
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const done = (err?: Error): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err) { try { ws.terminate(); } catch { /* ignore */ } reject(err); } else resolve();
      };
      const timer = setTimeout(() => done(new Error('timeout')), timeoutMs);
      const ws = new WebSocket(this.url, { localAddress: this.localAddress, perMessageDeflate: false, handshakeTimeout: timeoutMs });
      this.ws = ws;
      const connectId = this.nextId++;
      ws.on('open', () => ws.send(JSON.stringify({ id: connectId, connect: { token: this.token, name: 'realchat-perf' } })));
      ws.on('message', (data: WebSocket.RawData) => {
        const text = data.toString();
        for (const line of text.split('\n')) {
          if (!line) continue;
          let r: Reply;
          try { r = JSON.parse(line) as Reply; } catch { this.ev.onError('bad_json_from_server'); continue; }
          if (r.id === undefined && r.push === undefined && r.error === undefined && r.connect === undefined) {
            ws.send('{}'); // ping -> pong
            continue;
          }
          if (r.push) {
            const p = r.push;
            if (p.pub && p.channel) this.deliver(p.channel.slice(PREFIX.length), p.pub);
            else if (p.disconnect) this.ev.onError(`cf_disconnect_${p.disconnect.code}`);
            continue;
          }
          if (r.id === connectId) {
            if (r.error) { done(new Error(`connect error ${r.error.code} ${r.error.message}`)); return; }
            // subscribe to every conversation channel, recovering from the last offset on resume
            const cmds: string[] = [];
            for (const conv of this.convs) {
              const id = this.nextId++;
              this.pendingSub.set(id, conv);
              const sub: Record<string, unknown> = { channel: PREFIX + conv };
              const epoch = this.epochs.get(conv);
              if (resume && epoch !== undefined) { sub['recover'] = true; sub['epoch'] = epoch; sub['offset'] = this.last.get(conv) ?? 0; }
              cmds.push(JSON.stringify({ id, subscribe: sub }));
            }
            if (cmds.length === 0) { this.open = true; done(); } else ws.send(cmds.join('\n'));
            continue;
          }
          if (r.id !== undefined && this.pendingSub.has(r.id)) {
            const conv = this.pendingSub.get(r.id)!;
            this.pendingSub.delete(r.id);
            if (r.error) { this.ev.onError(`cf_subscribe_${r.error.code}`); done(new Error(`subscribe error ${r.error.code}`)); return; }
            const s = r.subscribe ?? {};
            if (s.epoch !== undefined) this.epochs.set(conv, s.epoch);
            if (resume && s.was_recovering && !s.recovered) { this.recoveredAll = false; this.ev.onError('cf_not_recovered'); }
            for (const p of s.publications ?? []) this.deliver(conv, p);
            if (s.offset !== undefined && !(this.last.has(conv))) this.last.set(conv, s.offset);
            if (this.pendingSub.size === 0) { this.open = true; done(); }
            continue;
          }
          if (r.id !== undefined && this.pendingPub.has(r.id)) {
            const key = this.pendingPub.get(r.id)!;
            this.pendingPub.delete(r.id);
            if (r.error) this.ev.onError(`cf_publish_${r.error.code}`);
            else this.ev.onAck(key, false);
            continue;
          }
          if (r.error) this.ev.onError(`cf_error_${r.error.code}`);
        }
      });
      ws.on('close', (code: number) => {
        const wasOpen = this.open;
        this.open = false;
        if (!settled) { done(new Error(`closed ${code}`)); return; }
        if (!this.closedByUs && wasOpen) this.ev.onClosed(code);
      });
      ws.on('error', (e: Error) => { if (!settled) done(e); });
    });
  }

  private deliver(conv: string, p: Pub): void {
    if (typeof p.offset === 'number') this.last.set(conv, Math.max(p.offset, this.last.get(conv) ?? 0));
    if (p.data && typeof p.data === 'object') this.ev.onMessage(conv, p.offset, p.data);
  }

  send(conv: string, key: string, payload: Payload): boolean {
    const ws = this.ws;
    if (!this.open || !ws || ws.readyState !== WebSocket.OPEN) return false;
    const id = this.nextId++;
    this.pendingPub.set(id, key);
    ws.send(JSON.stringify({ id, publish: { channel: PREFIX + conv, data: payload } }));
    return true;
  }

  drop(): void { this.closedByUs = true; this.open = false; this.ws?.terminate(); }
  close(): void { this.closedByUs = true; this.open = false; try { this.ws?.close(1000); } catch { /* ignore */ } }
}
