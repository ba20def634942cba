/**
 * A gateway-side fake of a connection's socket (gateway/connection.ts `SocketPort`) that records
 * every frame written and never pushes back: unit tests of a Connection's ordering and arrival paths.
 */
import type { SocketPort } from '../../gateway/connection.js';
import type { Envelope } from '../../common/protocol.js';

export class RecordingSocket implements SocketPort {
  frames: any[] = [];
  send(text: string) {
    this.frames.push(JSON.parse(text));
    return true;
  }
  bufferedAmount() {
    return 0;
  }
  end() {}
  /** [sequence, via] of each message frame written, in order. */
  arrivals(): Array<[number, string]> {
    return this.frames.filter((f) => f.type === 'message').map((f) => [f.message.sequence_number, f.via]);
  }
}

/** Message `seq` of `conversationId`, as the store would return it. */
export const envelope = (conversationId: string, seq: number): Envelope => ({
  message_id: `m${seq}`,
  conversation_id: conversationId,
  sender_id: 'u',
  sequence_number: seq,
  payload: seq,
  created_at: 'now',
  idempotency_key: `k${seq}`,
});
