/** Unit tests of the per-connection ordering state machine, with fakes of our own ports. */
import { describe, expect, it, vi } from 'vitest';
import { OverloadError } from '../common/errors.js';
import { Connection, type SocketPort } from '../gateway/connection.js';
import type { Envelope } from '../common/protocol.js';
import { encodeFrame } from '../common/protocol.js';
import { createMetrics } from '../common/metrics.js';
import { createLogger } from '../common/log.js';

const CONV = '11111111-1111-4111-8111-111111111111';

function env(seq: number, conv = CONV): Envelope {
  return {
    message_id: `m${seq}`,
    conversation_id: conv,
    sender_id: 'u',
    sequence_number: seq,
    payload: seq,
    created_at: 'now',
    idempotency_key: `k${seq}`,
  };
}

class FakeSocket implements SocketPort {
  sent: any[] = [];
  buffered = 0;
  ended: number | null = null;
  accept = true;
  send(text: string) {
    if (!this.accept) return false;
    this.sent.push(JSON.parse(text));
    return true;
  }
  bufferedAmount() {
    return this.buffered;
  }
  end(code: number) {
    this.ended = code;
  }
  seqs() {
    return this.sent.filter((f) => f.type === 'message').map((f) => f.message.sequence_number);
  }
}

/** A history whose answers the test releases by hand, to interleave live traffic with catch-up. */
class ControlledHistory {
  db: Envelope[] = [];
  calls: Array<{ after: number; limit: number; release: () => void }> = [];
  fail = false;
  messagesAfter(_c: string, after: number, limit: number): Promise<Envelope[]> {
    return new Promise((resolve, reject) => {
      this.calls.push({
        after,
        limit,
        release: () =>
          this.fail ? reject(new Error('db down')) : resolve(this.db.filter((m) => m.sequence_number > after).slice(0, limit)),
      });
    });
  }
}

const tick = () => new Promise((r) => setImmediate(r));

function make(history: ControlledHistory, socket = new FakeSocket()) {
  const conn = new Connection('u', socket, {
    history,
    log: createLogger({ level: 'silent', nodeId: 't', role: 'test' }),
    metrics: createMetrics({ nodeId: 't', defaultMetrics: false }),
    fillBatch: 3,
    highWaterBytes: 1000,
    drainTimeoutMs: 50,
  });
  return { conn, socket };
}

const live = (conn: Connection, seq: number) => conn.deliverMessage(env(seq), encodeFrame({ type: 'message', message: env(seq) }));

describe('connection ordering', () => {
  it('writes in-order live messages directly and drops duplicates', () => {
    const h = new ControlledHistory();
    const { conn, socket } = make(h);
    conn.activate([[CONV, 0]], new Map());
    for (const s of [1, 2, 2, 1, 3]) live(conn, s);
    expect(socket.seqs()).toEqual([1, 2, 3]);
    expect(h.calls).toHaveLength(0);
  });

  it('fills a gap from the database before writing the later message; live traffic during the fill only raises the target', async () => {
    const h = new ControlledHistory();
    h.db = [1, 2, 3, 4, 5, 6, 7].map((s) => env(s));
    const { conn, socket } = make(h);
    conn.activate([[CONV, 1]], new Map());
    live(conn, 4); // 2 and 3 were skipped by the live path
    expect(socket.seqs()).toEqual([]);
    live(conn, 5);
    live(conn, 7);
    await tick();
    h.calls[0]!.release();
    await tick();
    await tick();
    h.calls[1]!.release();
    await tick();
    await tick();
    expect(socket.seqs()).toEqual([2, 3, 4, 5, 6, 7]);
    expect(h.calls.map((c) => c.after)).toEqual([1, 4]);
    live(conn, 8);
    expect(socket.seqs()).toEqual([2, 3, 4, 5, 6, 7, 8]);
  });

  it('buffers nothing during hello: live messages seen before activate are caught up from the database', async () => {
    const h = new ControlledHistory();
    h.db = [1, 2, 3].map((s) => env(s));
    const { conn, socket } = make(h);
    live(conn, 3); // committed after the conversations were read (read said 2)
    conn.activate([[CONV, 2]], new Map());
    await tick();
    h.calls[0]!.release();
    await tick();
    await tick();
    expect(socket.seqs()).toEqual([3]);
  });

  it('resume sends the missed messages then synced', async () => {
    const h = new ControlledHistory();
    h.db = [1, 2, 3, 4].map((s) => env(s));
    const { conn, socket } = make(h);
    conn.activate([[CONV, 4]], new Map([[CONV, 1]]));
    await tick();
    h.calls[0]!.release();
    await tick();
    await tick();
    expect(socket.seqs()).toEqual([2, 3, 4]);
    expect(socket.sent.at(-1)).toEqual({ type: 'synced', conversation_id: CONV, last_sequence: 4 });
  });

  it('ignores conversations it is not subscribed to until join', () => {
    const h = new ControlledHistory();
    const { conn, socket } = make(h);
    conn.activate([], new Map());
    live(conn, 1);
    conn.join(CONV, 1);
    live(conn, 2);
    expect(socket.seqs()).toEqual([2]);
  });

  it('closes as a slow consumer when the socket refuses a frame', () => {
    const h = new ControlledHistory();
    const socket = new FakeSocket();
    const { conn } = make(h, socket);
    conn.activate([[CONV, 0]], new Map());
    socket.accept = false;
    live(conn, 1);
    expect(socket.ended).toBe(4002);
    expect(conn.closed).toBe(true);
  });

  it('closes as a slow consumer when a catch-up waits too long for the socket to drain', async () => {
    const h = new ControlledHistory();
    h.db = [1, 2].map((s) => env(s));
    const socket = new FakeSocket();
    socket.buffered = 5000;
    const { conn } = make(h, socket);
    conn.activate([[CONV, 2]], new Map([[CONV, 0]]));
    await new Promise((r) => setTimeout(r, 120));
    expect(socket.ended).toBe(4002);
    expect(h.calls).toHaveLength(0);
  });

  it('closes with resync_failed (4004) when the database fails during catch-up', async () => {
    const h = new ControlledHistory();
    h.fail = true;
    const { conn, socket } = make(h);
    conn.activate([[CONV, 3]], new Map([[CONV, 0]]));
    await tick();
    h.calls[0]!.release();
    await tick();
    await tick();
    expect(socket.ended).toBe(4004);
  });

  it("a catch-up read refused by the node's full database queue is asked again, not turned into a close", async () => {
    vi.useFakeTimers({ toFake: ['setTimeout'] });
    try {
      const db = [1, 2, 3].map((s) => env(s));
      let refusals = 2;
      const asked: number[] = [];
      const history = {
        messagesAfter: async (_c: string, after: number, limit: number) => {
          asked.push(after);
          if (refusals-- > 0) throw new OverloadError('server busy: too many database operations waiting; retry shortly');
          return db.filter((m) => m.sequence_number > after).slice(0, limit);
        },
      };
      const { conn, socket } = make(history as unknown as ControlledHistory);
      conn.activate([[CONV, 3]], new Map([[CONV, 0]]));
      await vi.advanceTimersByTimeAsync(2000);
      expect(socket.ended).toBeNull();
      expect(asked).toEqual([0, 0, 0]);
      expect(socket.seqs()).toEqual([1, 2, 3]);
      expect(socket.sent.at(-1)).toEqual({ type: 'synced', conversation_id: CONV, last_sequence: 3 });
    } finally {
      vi.useRealTimers();
    }
  });

  it('gives up after a few refusals and closes with resync_failed (4004)', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout'] });
    try {
      let asked = 0;
      const history = {
        messagesAfter: async () => {
          asked++;
          throw new OverloadError('server busy');
        },
      };
      const { conn, socket } = make(history as unknown as ControlledHistory);
      conn.activate([[CONV, 3]], new Map([[CONV, 0]]));
      await vi.advanceTimersByTimeAsync(10_000);
      expect(socket.ended).toBe(4004);
      expect(asked).toBe(5);
    } finally {
      vi.useRealTimers();
    }
  });

  it('writes nothing after close', () => {
    const h = new ControlledHistory();
    const { conn, socket } = make(h);
    conn.activate([[CONV, 0]], new Map());
    conn.onClose();
    live(conn, 1);
    conn.sendFrame('{"type":"pong"}');
    expect(socket.sent).toEqual([]);
  });
});

describe('connection: a regional failover re-homes a conversation (rehome)', () => {
  const newHome = (seq: number) => ({ ...env(seq), message_id: `b${seq}` });
  const liveNew = (conn: Connection, seq: number) =>
    conn.deliverMessage(newHome(seq), encodeFrame({ type: 'message', message: newHome(seq) }));

  it("past the takeover point: rewind, then the new home's numbers from the next one; at or below it: nothing", () => {
    const h = new ControlledHistory();
    const { conn, socket } = make(h);
    conn.activate([[CONV, 0]], new Map());
    for (const s of [1, 2, 3, 4, 5]) live(conn, s);
    conn.rehome(CONV, 5); // not past it: nothing
    conn.rehome(CONV, 3);
    liveNew(conn, 4);
    liveNew(conn, 5);
    liveNew(conn, 6);
    expect(socket.sent.map((f) => (f.type === 'message' ? f.message.message_id : f.type))).toEqual([
      'm1',
      'm2',
      'm3',
      'm4',
      'm5',
      'rewind',
      'b4',
      'b5',
      'b6',
    ]);
    expect(socket.sent.find((f) => f.type === 'rewind')).toEqual({
      type: 'rewind',
      conversation_id: CONV,
      after_sequence: 3,
      reason: 'rehomed',
    });
    expect(socket.ended).toBeNull();
  });

  it('during a catch-up (whose reads may carry the old numbering) or hello: closed to resume, no rewind frame', async () => {
    const h = new ControlledHistory();
    h.db = [1, 2, 3].map((s) => env(s));
    const { conn, socket } = make(h);
    conn.activate([[CONV, 0]], new Map());
    live(conn, 3); // a gap: a fill starts
    await tick();
    conn.rehome(CONV, 0);
    expect(socket.ended).toBe(4004);
    expect(socket.sent.filter((f) => f.type === 'rewind')).toEqual([]);
    const hello = make(new ControlledHistory());
    hello.conn.rehome(CONV, 0);
    expect(hello.socket.ended).toBe(4004);
  });
});
