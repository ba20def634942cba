// Minimal peer: bare `ws` 8 server with RealChat's core semantics and RealChat's v1 frame shapes.
// hello {token: <user id>} -> welcome; join {conversation_ids} -> joined; send {conversation_id,
// idempotency_key, payload} -> `message {message: envelope}` to every member connection (sender
// included) and `ack` to the sender. In memory only: no persistence, no auth, no idempotency, no
// resume, no slow-consumer policy. Usage: node ws-server.js [--port 8091] [--host 127.0.0.1]
import { WebSocketServer, type WebSocket } from 'ws';
import { randomUUID } from 'node:crypto';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : def;
}
const port = Number(arg('port', '8091'));
const host = arg('host', '127.0.0.1');

interface Conv {
  seq: number;
  members: Set<WebSocket>;
}
const convs = new Map<string, Conv>();
const joined = new WeakMap<WebSocket, string[]>();
const users = new WeakMap<WebSocket, string>();

const wss = new WebSocketServer({ host, port, path: '/ws', perMessageDeflate: false, maxPayload: 256 * 1024, clientTracking: false });

wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => {
    if (isBinary) return;
    let f: {
      type?: string;
      token?: string;
      conversation_ids?: string[];
      conversation_id?: string;
      idempotency_key?: string;
      payload?: unknown;
    };
    try {
      f = JSON.parse(data.toString()) as typeof f;
    } catch {
      ws.send('{"type":"error","code":"invalid_frame"}');
      return;
    }
    switch (f.type) {
      case 'hello': {
        const uid = String(f.token ?? '');
        users.set(ws, uid);
        ws.send(
          JSON.stringify({ type: 'welcome', user_id: uid, session_id: randomUUID(), node_id: 'ws-peer', heartbeat_interval_ms: 30000 }),
        );
        break;
      }
      case 'join': {
        const ids = Array.isArray(f.conversation_ids) ? f.conversation_ids.map(String) : [];
        const list = joined.get(ws) ?? [];
        for (const id of ids) {
          let c = convs.get(id);
          if (!c) {
            c = { seq: 0, members: new Set() };
            convs.set(id, c);
          }
          c.members.add(ws);
          list.push(id);
        }
        joined.set(ws, list);
        ws.send(JSON.stringify({ type: 'joined', conversation_ids: ids }));
        break;
      }
      case 'send': {
        const c = f.conversation_id ? convs.get(f.conversation_id) : undefined;
        if (!c?.members.has(ws)) {
          ws.send(JSON.stringify({ type: 'error', code: 'forbidden', ref: f.idempotency_key }));
          return;
        }
        const seq = ++c.seq;
        const env = {
          message_id: randomUUID(),
          conversation_id: f.conversation_id,
          sender_id: users.get(ws) ?? '',
          sequence_number: seq,
          payload: f.payload,
          created_at: new Date().toISOString(),
          idempotency_key: f.idempotency_key,
        };
        const frame = JSON.stringify({ type: 'message', message: env });
        for (const m of c.members) if (m.readyState === 1) m.send(frame);
        ws.send(
          JSON.stringify({
            type: 'ack',
            idempotency_key: f.idempotency_key,
            conversation_id: f.conversation_id,
            message_id: env.message_id,
            sequence_number: seq,
            created_at: env.created_at,
            duplicate: false,
          }),
        );
        break;
      }
      case 'ping':
        ws.send('{"type":"pong"}');
        break;
      default:
        break; // ignore unknown types
    }
  });
  ws.on('close', () => {
    for (const id of joined.get(ws) ?? []) {
      const c = convs.get(id);
      if (!c) continue;
      c.members.delete(ws);
      // keep the conversation (and its sequence) even when empty
    }
  });
  ws.on('error', () => {
    /* closed below */
  });
});

wss.on('listening', () => console.log(`ws-peer listening on ws://${host}:${port}/ws pid=${process.pid}`));
const stop = (): void => {
  wss.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
