/**
 * How each delivery arrived (the `via` of message frames, realchat_deliveries_total{via}), at the
 * connection: live from the pipeline, fill when the live path skipped a sequence, resume for the
 * catch-up after hello. With fakes of our own ports; tests/arrival-path.test.ts runs a whole node.
 */
import { describe, expect, it } from 'vitest';
import { Connection } from '../gateway/connection.js';
import { envelope, RecordingSocket } from './harness/socket-port.js';
import { blockLoop } from './harness/block-loop.js';
import { loopbackPair } from './harness/loopback-pair.js';
import { until } from './harness/until.js';
import { encodeMessageFrame } from '../common/protocol.js';
import { createMetrics, type Metrics } from '../common/metrics.js';
import { createLogger } from '../common/log.js';

const CONV = '11111111-1111-4111-8111-111111111111';

const env = (seq: number) => envelope(CONV, seq);

const db = Array.from({ length: 10 }, (_, i) => env(i + 1));
const history = {
  messagesAfter: async (_c: string, after: number, limit: number) => db.filter((m) => m.sequence_number > after).slice(0, limit),
};

function make(reorder?: { windowMs: number; maxHeld: number }, port: typeof history = history) {
  const socket = new RecordingSocket();
  const metrics = createMetrics({ nodeId: 't', defaultMetrics: false });
  const conn = new Connection('u', socket, {
    history: port,
    ...(reorder ? { reorder } : {}),
    log: createLogger({ level: 'silent', nodeId: 't', role: 'test' }),
    metrics,
    fillBatch: 100,
    highWaterBytes: 1 << 20,
    drainTimeoutMs: 1000,
  });
  return { conn, socket, metrics };
}

/** What the registry hands every recipient: one frame, encoded once, marked live. */
const live = (conn: Connection, seq: number) => conn.deliverMessage(env(seq), encodeMessageFrame(env(seq), 'live'));
const settle = () => new Promise((r) => setTimeout(r, 5));

async function counted(metrics: Metrics): Promise<Record<string, number>> {
  const m = await metrics.deliveries.get();
  return Object.fromEntries(m.values.map((v) => [String(v.labels.via), v.value]));
}

describe('arrival path of each delivery', () => {
  it('a normal stream arrives all live', async () => {
    const { conn, socket, metrics } = make();
    conn.activate([[CONV, 0]], new Map());
    for (let s = 1; s <= 5; s++) live(conn, s);
    await settle();
    expect(socket.arrivals()).toEqual([1, 2, 3, 4, 5].map((s) => [s, 'live']));
    expect(await counted(metrics)).toEqual({ live: 5 });
  });

  it('an event the pipeline dropped arrives by fill, with the one that revealed the gap; the rest live', async () => {
    const { conn, socket, metrics } = make();
    conn.activate([[CONV, 0]], new Map());
    for (const s of [1, 2, 4]) live(conn, s); // 3 was lost on the way
    await settle();
    for (const s of [5, 6]) live(conn, s);
    expect(socket.arrivals()).toEqual([
      [1, 'live'],
      [2, 'live'],
      [3, 'fill'],
      [4, 'fill'],
      [5, 'live'],
      [6, 'live'],
    ]);
    expect(await counted(metrics)).toEqual({ live: 4, fill: 2 });
  });

  it('the catch-up after hello arrives as resume: a resume position, and messages committed while hello loaded', async () => {
    const { conn, socket, metrics } = make();
    // Committed while hello was reading the user's conversations: seen live, not written yet.
    live(conn, 4);
    conn.activate([[CONV, 3]], new Map([[CONV, 1]]));
    await settle();
    live(conn, 5);
    expect(socket.arrivals()).toEqual([
      [2, 'resume'],
      [3, 'resume'],
      [4, 'resume'],
      [5, 'live'],
    ]);
    expect(socket.frames.find((f) => f.type === 'synced')).toMatchObject({ last_sequence: 4 });
    expect(await counted(metrics)).toEqual({ resume: 3, live: 1 });
  });

  describe('reorder window: an early live message waits briefly for the ones before it', () => {
    /** Counts the catch-up reads: a reorder resolved live reads nothing. */
    const counting = () => {
      const reads: number[] = [];
      return {
        reads,
        port: {
          messagesAfter: async (c: string, after: number, limit: number) => {
            reads.push(after);
            return history.messagesAfter(c, after, limit);
          },
        },
      };
    };

    it('two messages swapped on the way arrive live, in order, with no database read', async () => {
      const { reads, port } = counting();
      const { conn, socket, metrics } = make({ windowMs: 10_000, maxHeld: 8 }, port);
      conn.activate([[CONV, 0]], new Map());
      for (const s of [1, 3, 2, 5, 4, 6]) live(conn, s);
      await settle();
      expect(socket.arrivals()).toEqual([1, 2, 3, 4, 5, 6].map((s) => [s, 'live']));
      expect(reads).toEqual([]);
      expect(await counted(metrics)).toEqual({ live: 6 });
    });

    it('a message that never comes live is filled once the window has passed, up to the highest held', async () => {
      const { reads, port } = counting();
      const { conn, socket, metrics } = make({ windowMs: 30, maxHeld: 8 }, port);
      conn.activate([[CONV, 0]], new Map());
      for (const s of [1, 3, 4]) live(conn, s); // 2 was lost
      await settle();
      expect(socket.arrivals()).toEqual([[1, 'live']]);
      await new Promise((r) => setTimeout(r, 60));
      live(conn, 5);
      expect(socket.arrivals()).toEqual([
        [1, 'live'],
        [2, 'fill'],
        [3, 'fill'],
        [4, 'fill'],
        [5, 'live'],
      ]);
      expect(reads).toEqual([1]);
      expect(await counted(metrics)).toEqual({ live: 2, fill: 3 });
    });

    it('a missing message already in the socket when a turn outlasts the window arrives live, with no read', async () => {
      const { reads, port } = counting();
      const { conn, socket, metrics } = make({ windowMs: 30, maxHeld: 8 }, port);
      conn.activate([[CONV, 0]], new Map());
      // A loopback socket pair stands for the node's consumer: what `peer` writes lands in the
      // kernel at once and is read in the loop's next socket reads, like a Kafka fetch's answer.
      const { a: consumer, b: peer, close } = await loopbackPair();
      consumer.on('data', () => live(conn, 2));
      // The turn runs in a socket callback, as a gateway's long turns do (a storm's hellos): Node
      // then runs due timers before its next socket reads.
      peer.once('data', () => {
        for (const s of [1, 3]) live(conn, s); // 3 is held for 2
        peer.write('2'); // 2 is on its way: in the consumer's socket before the window ends
        blockLoop(300); // a long turn: the window passes
      });
      consumer.write('go');
      await until('2 and 3 written', () => socket.arrivals().length >= 3, 5000);
      await settle();
      expect(socket.arrivals()).toEqual([1, 2, 3].map((s) => [s, 'live']));
      expect(reads).toEqual([]);
      expect(await counted(metrics)).toEqual({ live: 3 });
      close();
    });

    it('past its bound of held frames the connection fills at once, without waiting out the window', async () => {
      const { conn, socket } = make({ windowMs: 10_000, maxHeld: 2 }, history);
      conn.activate([[CONV, 0]], new Map());
      for (const s of [1, 4, 3, 5]) live(conn, s); // 2 lost; 5 is one more than the bound
      await settle();
      expect(socket.arrivals()).toEqual([
        [1, 'live'],
        [2, 'fill'],
        [3, 'fill'],
        [4, 'fill'],
        [5, 'fill'],
      ]);
    });

    it('a connection closed while messages are held writes nothing later', async () => {
      const { conn, socket } = make({ windowMs: 20, maxHeld: 8 }, history);
      conn.activate([[CONV, 0]], new Map());
      for (const s of [1, 3]) live(conn, s);
      conn.onClose();
      await new Promise((r) => setTimeout(r, 50));
      expect(socket.arrivals()).toEqual([[1, 'live']]);
    });
  });
});
