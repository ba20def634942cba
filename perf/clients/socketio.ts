// Socket.IO 4 client (websocket transport only) for the socketio peer.
import { io, type Socket } from 'socket.io-client';
import { Client, type Payload } from './base.js';

interface Envelope {
  conversation_id?: string;
  sequence_number?: number;
  payload?: Payload;
}
interface AckReply {
  idempotency_key?: string;
  duplicate?: boolean;
  error?: string;
}

export class SocketIOClient extends Client {
  private sock: Socket | undefined;
  lastRecovered = false;

  connect(_resume: boolean, timeoutMs: number): Promise<void> {
    // a failed attempt leaves the Socket object as it is: the next connect() reuses it
    return this.attemptConnect(timeoutMs, (attempt) => {
      let s = this.sock;
      if (!s) {
        s = io(this.url, {
          transports: ['websocket'],
          auth: { user_id: this.userId },
          reconnection: false,
          forceNew: true,
          localAddress: this.localAddress,
          timeout: timeoutMs,
        } as Parameters<typeof io>[1]);
        this.sock = s;
        s.on('message', (env: Envelope) => {
          if (env?.conversation_id && env.payload) this.received(env.conversation_id, env.sequence_number, env.payload);
        });
        s.on('disconnect', () => this.transportClosed(0));
      } else {
        s.connect(); // same Socket object: carries its session id and offset, so the server can recover
      }
      const sock = s;
      const onConnect = (): void => {
        sock.off('connect_error', onErr);
        this.lastRecovered = sock.recovered;
        if (sock.recovered) {
          attempt.succeed();
          return;
        }
        sock.timeout(timeoutMs).emit('join', this.convs, (err: Error | null) => {
          if (err) attempt.fail(err);
          else attempt.succeed();
        });
      };
      const onErr = (e: Error): void => {
        sock.off('connect', onConnect);
        attempt.fail(e);
      };
      sock.once('connect', onConnect);
      sock.once('connect_error', onErr);
    });
  }

  send(conv: string, key: string, payload: Payload): boolean {
    const s = this.sock;
    if (!this.open || !s?.connected) return false;
    s.emit('send', { conversation_id: conv, idempotency_key: key, payload }, (r: AckReply) => {
      if (r?.error) this.ev.onError(`sio_${r.error}`);
      else this.ev.onAck(key, r?.duplicate === true);
    });
    return true;
  }

  drop(): void {
    this.closedByUs = true;
    this.open = false;
    // close the underlying transport without a Socket.IO disconnect packet: the server sees
    // "transport close", which is what connection state recovery is for
    this.sock?.io.engine?.close();
  }

  close(): void {
    this.closedByUs = true;
    this.open = false;
    this.sock?.disconnect();
  }
}
