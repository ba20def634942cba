// Centrifugo client protocol v2, JSON over WebSocket, without an SDK. Commands carry an `id`,
// replies echo it; several replies/pushes may share one frame, newline-delimited. A bare `{}` from
// the server is a ping and must be answered with `{}`. Channels: chat:<conversation>.
import type WebSocket from 'ws';
import { WebSocketClient, type Payload } from './base.js';

interface Pub {
  data?: Payload;
  offset?: number;
}
interface Reply {
  id?: number;
  error?: { code: number; message: string; temporary?: boolean };
  push?: { channel?: string; pub?: Pub; disconnect?: { code: number; reason: string } };
  connect?: { client?: string; ping?: number; pong?: boolean };
  subscribe?: {
    epoch?: string;
    offset?: number;
    recovered?: boolean;
    recoverable?: boolean;
    publications?: Pub[];
    was_recovering?: boolean;
  };
  publish?: Record<string, never>;
}

const PREFIX = 'chat:';

export class CentrifugoClient extends WebSocketClient {
  private nextId = 1;
  private readonly epochs = new Map<string, string>();
  private readonly pendingPub = new Map<number, string>(); // command id -> idempotency key (ours)
  private readonly pendingSub = new Map<number, string>(); // command id -> conversation
  recoveredAll = true;

  connect(resume: boolean, timeoutMs: number): Promise<void> {
    this.pendingPub.clear();
    this.pendingSub.clear();
    return this.attemptConnect(timeoutMs, (attempt) => {
      const ws = this.openSocket(timeoutMs);
      const connectId = this.nextId++;
      ws.on('open', () => ws.send(JSON.stringify({ id: connectId, connect: { token: this.token, name: 'realchat-perf' } })));
      ws.on('message', (data: WebSocket.RawData) => {
        const text = data.toString();
        for (const line of text.split('\n')) {
          if (!line) continue;
          let r: Reply;
          try {
            r = JSON.parse(line) as Reply;
          } catch {
            this.ev.onError('bad_json_from_server');
            continue;
          }
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
            if (r.error) {
              attempt.fail(new Error(`connect error ${r.error.code} ${r.error.message}`));
              return;
            }
            // subscribe to every conversation channel, recovering from the last offset on resume
            const cmds: string[] = [];
            for (const conv of this.convs) {
              const id = this.nextId++;
              this.pendingSub.set(id, conv);
              const sub: Record<string, unknown> = { channel: PREFIX + conv };
              const epoch = this.epochs.get(conv);
              if (resume && epoch !== undefined) {
                sub['recover'] = true;
                sub['epoch'] = epoch;
                sub['offset'] = this.last.get(conv) ?? 0;
              }
              cmds.push(JSON.stringify({ id, subscribe: sub }));
            }
            if (cmds.length === 0) attempt.succeed();
            else ws.send(cmds.join('\n'));
            continue;
          }
          if (r.id !== undefined && this.pendingSub.has(r.id)) {
            const conv = this.pendingSub.get(r.id)!;
            this.pendingSub.delete(r.id);
            if (r.error) {
              this.ev.onError(`cf_subscribe_${r.error.code}`);
              attempt.fail(new Error(`subscribe error ${r.error.code}`));
              return;
            }
            const s = r.subscribe ?? {};
            if (s.epoch !== undefined) this.epochs.set(conv, s.epoch);
            if (resume && s.was_recovering && !s.recovered) {
              this.recoveredAll = false;
              this.ev.onError('cf_not_recovered');
            }
            for (const p of s.publications ?? []) this.deliver(conv, p);
            if (s.offset !== undefined && !this.last.has(conv)) this.last.set(conv, s.offset);
            if (this.pendingSub.size === 0) attempt.succeed();
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
      ws.on('close', (code: number) => attempt.closed(code));
      ws.on('error', (e: Error) => attempt.fail(e));
      return () => ws.terminate();
    });
  }

  private deliver(conv: string, p: Pub): void {
    if (p.data && typeof p.data === 'object') this.received(conv, p.offset, p.data);
    else this.advance(conv, p.offset);
  }

  send(conv: string, key: string, payload: Payload): boolean {
    const ws = this.writable();
    if (!ws) return false;
    const id = this.nextId++;
    this.pendingPub.set(id, key);
    ws.send(JSON.stringify({ id, publish: { channel: PREFIX + conv, data: payload } }));
    return true;
  }
}
