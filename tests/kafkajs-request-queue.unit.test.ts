/**
 * Our fix of kafkajs' request queue (common/kafka/kafkajs.ts, tulios/kafkajs#1556): a connection
 * with nothing waiting keeps no timer, and requests that wait are still sent. The real kafkajs
 * class, driven the way a broker connection drives it.
 */
import { describe, expect, it } from 'vitest';
import { kafkajsRequestQueue } from '../common/kafka/kafkajs.js';

interface Queue {
  pending: unknown[];
  inflight: Map<number, unknown>;
  throttleCheckTimeoutId: unknown;
  push(r: {
    entry: { correlationId: number; resolve: (v: unknown) => void; reject: (e: unknown) => void };
    expectResponse: boolean;
    sendRequest: () => void;
  }): void;
  maybeThrottle(ms: number): void;
  fulfillRequest(r: { correlationId: number; payload: Buffer; size: number }): void;
  destroy(): void;
}

const silent = { debug() {}, info() {}, warn() {}, error() {} };

function queue(): Queue {
  const RequestQueue = kafkajsRequestQueue() as unknown as new (o: object) => Queue;
  return new RequestQueue({
    instrumentationEmitter: null,
    maxInFlightRequests: 1,
    requestTimeout: 30_000,
    enforceRequestTimeout: false,
    clientId: 'test',
    broker: '127.0.0.1:9092',
    logger: silent,
    isConnected: () => true,
  });
}

function request(q: Queue, correlationId: number, sent: number[]) {
  q.push({
    entry: { correlationId, resolve: () => {}, reject: () => {} },
    expectResponse: true,
    sendRequest: () => sent.push(correlationId),
  });
}

describe('kafkajs request queue (patched)', () => {
  it('keeps no timer once nothing waits, and sends a request that had to wait', async () => {
    const q = queue();
    const sent: number[] = [];
    request(q, 1, sent);
    request(q, 2, sent); // at the in-flight limit (1): waits, and a check is scheduled
    expect(sent).toEqual([1]);
    expect(q.pending.length).toBe(1);
    expect(q.throttleCheckTimeoutId).not.toBeNull();

    q.fulfillRequest({ correlationId: 1, payload: Buffer.alloc(0), size: 0 });
    expect(sent).toEqual([1, 2]);
    q.fulfillRequest({ correlationId: 2, payload: Buffer.alloc(0), size: 0 });
    expect(q.inflight.size).toBe(0);
    // The check armed while request 2 waited fires and finds nothing; unpatched kafkajs re-arms a
    // timer from there on forever (about one wakeup per millisecond).
    await new Promise((r) => setTimeout(r, 40));
    expect(q.throttleCheckTimeoutId).toBeNull();
    q.destroy();
  });

  it('sends a request held by client-side throttling once the throttle ends', async () => {
    const q = queue();
    const sent: number[] = [];
    q.maybeThrottle(30);
    request(q, 7, sent);
    expect(sent).toEqual([]);
    await new Promise((r) => setTimeout(r, 80));
    expect(sent).toEqual([7]);
    q.fulfillRequest({ correlationId: 7, payload: Buffer.alloc(0), size: 0 });
    expect(q.throttleCheckTimeoutId).toBeNull();
    q.destroy();
  });
});
