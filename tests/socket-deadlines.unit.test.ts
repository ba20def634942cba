/**
 * The gateway's deadlines on a client's socket: a connection's wait for its client to read
 * (REALCHAT_SLOW_READER_TIMEOUT_MS, then closed as a slow consumer) and a REST response's stall
 * (then abandoned, `http_response_stalled`). After an event-loop turn longer than the deadline (a reconnect storm's
 * hellos), Node runs due timers before it reads the sockets: a client that read its socket in the
 * meantime would be judged stalled with its writable event waiting to be read. Each test fails with
 * a plain setTimeout in place of deadlineTimer (checked).
 */
import { describe, expect, it } from 'vitest';
import { Connection, type SocketPort } from '../gateway/connection.js';
import { createHttpHandler, ResponseBudget } from '../gateway/http.js';
import { createEdgePolicy } from '../gateway/edge.js';
import { LogLimiter } from '../common/log-limiter.js';
import { loadConfig } from '../common/config.js';
import { createLogger } from '../common/log.js';
import { createMetrics, type Metrics } from '../common/metrics.js';
import { blockLoop } from './harness/block-loop.js';
import { loopbackPair } from './harness/loopback-pair.js';
import { until } from './harness/until.js';

const log = createLogger({ level: 'silent', nodeId: 't', role: 'test' });

/** A socket whose buffered bytes the test sets: what uWS reports before and after the client reads. */
class BufferingSocket implements SocketPort {
  buffered = 0;
  ended: string | null = null;
  send() {
    return true;
  }
  bufferedAmount() {
    return this.buffered;
  }
  end(_code: number, reason: string) {
    this.ended = reason;
  }
}

async function failed(metrics: Metrics): Promise<Record<string, number>> {
  return Object.fromEntries((await metrics.failedDeliveries.get()).values.map((v) => [String(v.labels.reason), v.value]));
}

describe('deadlines on a client socket, after a turn longer than the deadline', () => {
  it('a connection whose client read during the turn is writable again, not a slow consumer', async () => {
    const socket = new BufferingSocket();
    const conn = new Connection('u', socket, {
      history: { messagesAfter: async () => [] },
      log,
      metrics: createMetrics({ nodeId: 't', defaultMetrics: false }),
      fillBatch: 100,
      highWaterBytes: 1000,
      drainTimeoutMs: 30,
    });
    // `b` stands for the client's socket: its next read is the writable event uWS reports as drain.
    const { a, b, close } = await loopbackPair();
    let writable: Promise<boolean> | null = null;
    let reads = 0;
    b.on('data', () => {
      if (reads++ === 0) {
        socket.buffered = 10_000; // past the high-water mark: wait for the drain
        writable = conn.whenWritable();
        a.write('drained'); // the client reads: its writable event waits in the socket
        blockLoop(300); // a long turn: the drain deadline passes
      } else {
        socket.buffered = 0;
        conn.onDrain();
      }
    });
    a.write('go');
    await until('the drain wait started', () => writable !== null, 5000);
    expect(await writable).toBe(true);
    expect(socket.ended).toBeNull();
    close();
  });

  it('a REST response whose client read during the turn goes on streaming, not abandoned as stalled', async () => {
    const metrics = createMetrics({ nodeId: 't', defaultMetrics: false });
    const budget = new ResponseBudget(1 << 20);
    const route = createHttpHandler({
      metrics,
      maxBodyBytes: 1000,
      newTraceId: () => 't',
      // A database configured: any Host is accepted (the request names none).
      edge: createEdgePolicy(loadConfig({ DATABASE_URL: 'postgres://x/y' }).edge),
      logs: new LogLimiter(log),
      budget,
      stallMs: 30,
    });
    const body = { items: 'x'.repeat(64 * 1024) }; // past the size answered in one write
    // How many times the client has read: nothing yet, then part of the body, then the rest.
    let clientReads = 0;
    let onWritable: ((offset: number) => boolean) | null = null;
    let closed = false;
    let completed = false;
    const res = {
      onAborted: () => {},
      cork: (fn: () => void) => fn(),
      writeStatus: () => {},
      writeHeader: () => {},
      end: () => {},
      getRemoteAddressAsText: () => new TextEncoder().encode('127.0.0.1').buffer,
      getWriteOffset: () => 0,
      tryEnd: () => {
        if (clientReads === 0) return [false, false];
        if (clientReads === 1) return [true, false];
        completed = true;
        return [true, true];
      },
      onWritable: (cb: (offset: number) => boolean) => void (onWritable = cb),
      close: () => void (closed = true),
    };
    const req = { getMethod: () => 'get', getUrl: () => '/x', getQuery: () => '', getHeader: () => '', getParameter: () => '' };
    route('GET /x', () => ({ status: 200, body }))(res as never, req as never);
    // The reply is written after the handler's promise: the client has not read any of it yet.
    await until('the response waits for the client', () => onWritable !== null, 5000);
    expect(budget.pending).toBeGreaterThan(0);
    const { a, b, close } = await loopbackPair();
    let reads = 0;
    let closedAfterProgress: boolean | null = null;
    b.on('data', () => {
      if (reads++ === 0) {
        a.write('read'); // the client reads: its writable event waits in the socket
        blockLoop(300); // a long turn: the stall deadline passes
      } else {
        // Part of the body goes out, which re-arms the deadline; the stale one, judged after
        // these reads, must not close the response.
        clientReads = 1;
        onWritable!(0);
        setImmediate(() => (closedAfterProgress = closed));
      }
    });
    a.write('go');
    await until('the writable event handled', () => closedAfterProgress !== null, 5000);
    expect(closedAfterProgress).toBe(false);
    clientReads = 2;
    onWritable!(0);
    expect({ closed, completed }).toEqual({ closed: false, completed: true });
    expect(budget.pending).toBe(0);
    expect(await failed(metrics)).toEqual({});
    close();
  });
});
