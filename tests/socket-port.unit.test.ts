/**
 * gateway/socket-port.ts: the frames of one event-loop turn go out in one corked write per socket,
 * in order, within the buffer bound, and nothing is written to a socket that is closing.
 */
import { describe, expect, it } from 'vitest';
import type { WebSocket } from 'uWebSockets.js';
import { CloseCode } from '../common/protocol.js';
import { FLUSH_AT_BYTES, UwsSocketPort, WriteCoalescer, type PortLifecycle } from '../gateway/socket-port.js';

const turn = () => new Promise((r) => setImmediate(r));

/** A uWS socket that records each corked write as the list of frames sent inside it. */
function fakeSocket(opts: { buffered?: number; refuseFrom?: number } = {}) {
  const writes: string[][] = [];
  const uncorked: string[] = [];
  let corked: string[] | null = null;
  let sent = 0;
  const ended: Array<{ code: number; reason: string }> = [];
  const ws = {
    cork(fn: () => void) {
      corked = [];
      fn();
      writes.push(corked);
      corked = null;
    },
    send(f: string) {
      sent++;
      if (opts.refuseFrom !== undefined && sent >= opts.refuseFrom) return 2;
      (corked ?? uncorked).push(f);
      return 1;
    },
    getBufferedAmount: () => opts.buffered ?? 0,
    end(code: number, reason: string) {
      ended.push({ code, reason });
    },
  };
  return { ws: ws as unknown as WebSocket<unknown>, writes, uncorked, ended };
}

function lifecycle() {
  const state = { closing: false, flushed: 0, overflowed: 0 };
  const life: PortLifecycle = {
    closing: () => state.closing,
    markClosing: () => {
      state.closing = true;
    },
    flushed: () => {
      state.flushed++;
    },
    overflowed: () => {
      state.overflowed++;
    },
  };
  return { life, state };
}

function setup(max = 1000, sock = fakeSocket()) {
  const counted: number[] = [];
  const coalescer = new WriteCoalescer((n) => counted.push(n));
  const { life, state } = lifecycle();
  const port = new UwsSocketPort(life, max, coalescer);
  port.attach(sock.ws);
  return { port, coalescer, state, counted, ...sock };
}

describe('UwsSocketPort with a WriteCoalescer', () => {
  it("writes one turn's frames to a socket in one corked write, in order, at the end of the turn", async () => {
    const a = setup();
    const b = fakeSocket();
    const portB = new UwsSocketPort(lifecycle().life, 1000, a.coalescer);
    portB.attach(b.ws);
    expect(a.port.send('m1')).toBe(true);
    expect(portB.send('x1')).toBe(true);
    expect(a.port.send('r1')).toBe(true);
    a.port.send('m2');
    expect(a.writes).toEqual([]);
    await turn();
    expect(a.writes).toEqual([['m1', 'r1', 'm2']]);
    expect(b.writes).toEqual([['x1']]);
    expect(a.uncorked).toEqual([]);
    expect(a.counted.sort()).toEqual([1, 3]);
    expect(a.state.flushed).toBe(1);
    // The next turn is a write of its own.
    a.port.send('m3');
    await turn();
    expect(a.writes).toEqual([['m1', 'r1', 'm2'], ['m3']]);
  });

  it('counts pending frames against the buffer bound', async () => {
    const { port } = setup(10, fakeSocket({ buffered: 4 }));
    expect(port.bufferedAmount()).toBe(4);
    expect(port.send('abc')).toBe(true);
    expect(port.bufferedAmount()).toBe(7);
    expect(port.send('def')).toBe(true);
    expect(port.send('g')).toBe(false);
    await turn();
    expect(port.bufferedAmount()).toBe(4);
  });

  it('writes at once once a turn holds FLUSH_AT_BYTES: a burst of large frames is not a slow reader', async () => {
    const big = 'x'.repeat(FLUSH_AT_BYTES);
    // The bound holds two large frames; a turn of five would exceed it if they all waited here.
    const s = setup(2 * FLUSH_AT_BYTES + 100);
    s.port.send('small');
    expect(s.writes).toEqual([]);
    for (let i = 0; i < 5; i++) expect(s.port.send(big)).toBe(true);
    expect(s.writes).toEqual([['small', big], [big], [big], [big], [big]]);
    s.port.send('tail');
    await turn();
    expect(s.writes.at(-1)).toEqual(['tail']);
    expect(s.writes).toHaveLength(6);
  });

  it('writes what is pending before it ends the socket (an error frame, then the close)', async () => {
    const s = setup();
    s.port.send('error-frame');
    s.port.end(CloseCode.protocolViolation, 'bad');
    expect(s.writes).toEqual([['error-frame']]);
    expect(s.ended).toEqual([{ code: CloseCode.protocolViolation, reason: 'bad' }]);
    expect(s.state.closing).toBe(true);
    await turn();
    expect(s.writes).toHaveLength(1);
    expect(s.port.send('late')).toBe(false);
  });

  it('writes nothing to a socket that closed before the end of the turn', async () => {
    const s = setup();
    s.port.send('m1');
    s.state.closing = true;
    await turn();
    expect(s.writes).toEqual([]);
    expect(s.counted).toEqual([]);
  });

  it('closes as a slow consumer when uWS refuses a frame, and writes nothing after it', async () => {
    const s = setup(1000, fakeSocket({ refuseFrom: 2 }));
    s.port.send('m1');
    s.port.send('m2');
    s.port.send('m3');
    await turn();
    expect(s.writes).toEqual([['m1']]);
    expect(s.state.overflowed).toBe(1);
    expect(s.state.flushed).toBe(0);
    expect(s.ended).toEqual([{ code: CloseCode.slowConsumer, reason: 'slow consumer: reconnect and resume' }]);
  });
});

describe('WriteCoalescer', () => {
  it("a socket whose write throws does not hold up the other sockets' frames", async () => {
    const failures: unknown[] = [];
    const coalescer = new WriteCoalescer(
      () => {},
      (e) => failures.push(e),
    );
    const broken = fakeSocket();
    (broken.ws as unknown as { cork: () => void }).cork = () => {
      throw new Error('Invalid access of closed uWS.WebSocket/SSLWebSocket.');
    };
    const ok = fakeSocket();
    const p1 = new UwsSocketPort(lifecycle().life, 1000, coalescer);
    p1.attach(broken.ws);
    const p2 = new UwsSocketPort(lifecycle().life, 1000, coalescer);
    p2.attach(ok.ws);
    p1.send('a');
    p2.send('b');
    await turn();
    expect(ok.writes).toEqual([['b']]);
    expect(failures).toHaveLength(1);
    // The broken socket's port is not stuck with frames that are never scheduled again.
    p2.send('c');
    await turn();
    expect(ok.writes).toEqual([['b'], ['c']]);
  });
});

describe('REALCHAT_WS_COALESCE_BYTES', () => {
  it('0 writes every frame at once', () => {
    const sock = fakeSocket();
    const port = new UwsSocketPort(lifecycle().life, 1000, new WriteCoalescer(), 0);
    port.attach(sock.ws);
    port.send('a');
    port.send('b');
    expect(sock.writes).toEqual([['a'], ['b']]);
  });
});
