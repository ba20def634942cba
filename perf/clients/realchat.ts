// RealChat v1 WebSocket client (also used for the bare `ws` peer, which speaks the same frames plus
// an explicit `join`, since it has no membership store).
import type WebSocket from 'ws';
import { WebSocketClient, type ClientEvents, type Payload } from './base.js';

interface Frame {
  type?: string;
  message?: { conversation_id?: string; sequence_number?: number; payload?: Payload };
  conversation_id?: string;
  idempotency_key?: string;
  duplicate?: boolean;
  code?: string;
  ref?: string;
  heartbeat_interval_ms?: number;
  retry_after_ms?: number;
}

export class RealChatClient extends WebSocketClient {
  private heartbeatMs = 0;
  private nextPing = 0;

  constructor(
    idx: number,
    url: string,
    userId: string,
    token: string,
    convs: readonly string[],
    localAddress: string,
    ev: ClientEvents,
    private readonly peerMode: boolean,
  ) {
    super(idx, url, userId, token, convs, localAddress, ev);
  }

  connect(resume: boolean, timeoutMs: number): Promise<void> {
    return this.attemptConnect(timeoutMs, (attempt) => {
      const ws = this.openSocket(timeoutMs);
      // resume: one entry per conversation; the server answers each with `synced`
      const waitSynced = new Set<string>();
      let welcomed = false;
      ws.on('open', () => {
        const hello: { type: string; token: string; resume?: Record<string, number> } = { type: 'hello', token: this.token };
        if (resume && !this.peerMode) {
          hello.resume = {};
          for (const c of this.convs) {
            hello.resume[c] = this.last.get(c) ?? 0;
            waitSynced.add(c);
          }
        }
        ws.send(JSON.stringify(hello));
      });
      ws.on('message', (data: WebSocket.RawData) => {
        let f: Frame;
        try {
          f = JSON.parse(data.toString()) as Frame;
        } catch {
          this.ev.onError('bad_json_from_server');
          return;
        }
        switch (f.type) {
          case 'message': {
            const m = f.message;
            if (m?.conversation_id && m.payload) this.received(m.conversation_id, m.sequence_number, m.payload);
            break;
          }
          case 'ack':
            if (f.idempotency_key) this.ev.onAck(f.idempotency_key, f.duplicate === true);
            break;
          case 'welcome':
            welcomed = true;
            this.heartbeatMs = f.heartbeat_interval_ms ?? 0;
            this.nextPing = Date.now() + (this.heartbeatMs > 0 ? this.heartbeatMs * (0.5 + Math.random() * 0.4) : 0);
            if (this.peerMode) ws.send(JSON.stringify({ type: 'join', conversation_ids: this.convs }));
            else if (waitSynced.size === 0) attempt.succeed();
            break;
          case 'joined':
            attempt.succeed();
            break;
          case 'synced':
            if (f.conversation_id) waitSynced.delete(f.conversation_id);
            if (welcomed && waitSynced.size === 0) attempt.succeed();
            break;
          case 'error':
            this.ev.onError(`ws_error_${f.code ?? 'unknown'}`);
            break;
          case 'reconnect':
            this.ev.onError('server_reconnect_advice');
            break;
          default:
            break; // pong, receipt, typing, messages, unknown: ignore
        }
      });
      ws.on('close', (code: number) => attempt.closed(code));
      ws.on('error', (e: Error) => attempt.fail(e));
      return () => ws.terminate();
    });
  }

  send(conv: string, key: string, payload: Payload): boolean {
    const ws = this.writable();
    if (!ws) return false;
    ws.send(JSON.stringify({ type: 'send', conversation_id: conv, idempotency_key: key, payload }));
    return true;
  }

  override tick(now: number): void {
    if (this.heartbeatMs > 0 && this.open && now >= this.nextPing) {
      this.nextPing = now + this.heartbeatMs;
      try {
        this.ws?.send('{"type":"ping"}');
      } catch {
        /* ignore */
      }
    }
  }
}
