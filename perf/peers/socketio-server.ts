// Minimal peer: Socket.IO 4 server (in-memory adapter) with RealChat's core semantics.
// handshake auth {user_id}; "join" (conversation_ids, ack) -> socket.join; "send" ({conversation_id,
// idempotency_key, payload}, ack) -> io.to(conversation).emit("message", envelope) (room includes the
// sender). Connection state recovery (Socket.IO >= 4.6) is on unless --no-recovery: a client that
// drops gets the packets it missed within 2 minutes (in memory; lost on restart). No persistence,
// no auth, no idempotency. Usage: node socketio-server.js [--port 8092] [--host 127.0.0.1] [--no-recovery]
import { createServer } from 'node:http';
import { randomUUID } from 'node:crypto';
import { Server } from 'socket.io';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : def;
}
const port = Number(arg('port', '8092'));
const host = arg('host', '127.0.0.1');
const recovery = !process.argv.includes('--no-recovery');

const http = createServer((_req, res) => {
  res.writeHead(404);
  res.end();
});
const io = new Server(http, {
  transports: ['websocket'],
  perMessageDeflate: false,
  serveClient: false,
  maxHttpBufferSize: 256 * 1024,
  ...(recovery ? { connectionStateRecovery: { maxDisconnectionDuration: 120_000, skipMiddlewares: true } } : {}),
});

const seqs = new Map<string, number>();

interface SendFrame {
  conversation_id?: string;
  idempotency_key?: string;
  payload?: unknown;
}
type Ack = (r: unknown) => void;

io.on('connection', (socket) => {
  const auth = socket.handshake.auth as { user_id?: string };
  const userId = String(auth.user_id ?? '');
  socket.on('join', (ids: unknown, ack?: Ack) => {
    const list = Array.isArray(ids) ? ids.map(String) : [];
    void socket.join(list);
    if (typeof ack === 'function') ack({ ok: true, conversation_ids: list });
  });
  socket.on('send', (f: SendFrame, ack?: Ack) => {
    const conv = f?.conversation_id;
    if (!conv || !socket.rooms.has(conv)) {
      if (typeof ack === 'function') ack({ error: 'forbidden' });
      return;
    }
    const seq = (seqs.get(conv) ?? 0) + 1;
    seqs.set(conv, seq);
    const env = {
      message_id: randomUUID(),
      conversation_id: conv,
      sender_id: userId,
      sequence_number: seq,
      payload: f.payload,
      created_at: new Date().toISOString(),
      idempotency_key: f.idempotency_key,
    };
    io.to(conv).emit('message', env);
    if (typeof ack === 'function')
      ack({
        idempotency_key: f.idempotency_key,
        conversation_id: conv,
        message_id: env.message_id,
        sequence_number: seq,
        duplicate: false,
      });
  });
});

http.listen(port, host, () => console.log(`socketio-peer listening on http://${host}:${port} recovery=${recovery} pid=${process.pid}`));
const stop = (): void => {
  io.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
