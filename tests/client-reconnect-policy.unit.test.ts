/** The SDK's reconnect policy (client/reconnect-policy.ts): pure functions, no client, no timers. */
import { describe, expect, it } from 'vitest';
import {
  MAX_RETRY_AFTER_MS,
  SHORT_LIVED_MS,
  afterWelcome,
  decideAfterClose,
  decideNextAttempt,
  initialReconnectState,
  withRetryAfter,
  type Close,
  type ReconnectDecision,
  type ReconnectPolicyOptions,
  type ReconnectState,
} from '../client/reconnect-policy.js';

/** random() = 0.5: the delay is half the backoff ceiling min(cap, base * 2^attempt). */
const o: ReconnectPolicyOptions = { baseMs: 100, capMs: 5000, offlineAfterAttempts: 3, random: () => 0.5 };
const state = (s: Partial<ReconnectState> = {}): ReconnectState => Object.freeze({ ...initialReconnectState, ...s });
const close = (code: number, c: Partial<Close> = {}): Close => ({ code, reason: 'bye', tokenIsProvider: false, welcomedForMs: null, ...c });

function reconnects(d: ReconnectDecision) {
  if (d.action !== 'reconnect') throw new Error(`expected a reconnect, got ${JSON.stringify(d)}`);
  return d;
}
function stops(d: ReconnectDecision) {
  if (d.action !== 'stop') throw new Error(`expected a stop, got ${JSON.stringify(d)}`);
  return d;
}

describe('close codes', () => {
  it.each([1000, 1001, 1006, 1011, 3000, 4000, 4001, 4002, 4003, 4004, 4005, 4499, 5000])(
    '%i reconnects, with either kind of token',
    (code) => {
      for (const tokenIsProvider of [false, true]) {
        const d = reconnects(decideAfterClose(state({ everWelcomed: true }), close(code, { tokenIsProvider }), o));
        expect(d).toMatchObject({ connectionState: 'reconnecting', reason: `${code} bye`, delayMs: 50 });
        expect(d.next.attempt).toBe(1);
      }
    },
  );

  it.each([4501, 4503, 4600, 4999])('%i stops for good as invalid_frame, with either kind of token', (code) => {
    for (const tokenIsProvider of [false, true]) {
      const s = state({ attempt: 2 });
      const d = stops(decideAfterClose(s, close(code, { tokenIsProvider }), o));
      expect(d.error).toEqual({ code: 'invalid_frame', message: `server closed the connection (${code} bye); not reconnecting` });
      expect(d.reason).toBe(`${code} bye`);
      expect(d.next).toEqual(s); // the attempt count is reported as it was
    }
  });

  it('4500 with a plain token stops as unauthorized', () => {
    const d = stops(decideAfterClose(state(), close(4500, { reason: 'bad token' }), o));
    expect(d.error).toEqual({ code: 'unauthorized', message: 'server closed the connection (4500 bad token); not reconnecting' });
    expect(d.reason).toBe('4500 bad token');
  });

  it('4500 with a token provider gets one more attempt, then stops; a welcome gives the retry back', () => {
    const first = reconnects(decideAfterClose(state(), close(4500, { tokenIsProvider: true }), o));
    expect(first.next.unauthorizedRetried).toBe(true);
    expect(first.connectionState).toBe('connecting');
    const second = stops(decideAfterClose(first.next, close(4500, { tokenIsProvider: true }), o));
    expect(second.error.code).toBe('unauthorized');

    const welcomed = afterWelcome(first.next);
    expect(welcomed.unauthorizedRetried).toBe(false);
    expect(
      reconnects(decideAfterClose(welcomed, close(4500, { tokenIsProvider: true, welcomedForMs: 60_000 }), o)).next.unauthorizedRetried,
    ).toBe(true);
  });

  it('4502 (token expired) stops as unauthorized with a plain token', () => {
    const d = stops(decideAfterClose(state({ everWelcomed: true }), close(4502, { reason: 'token expired', welcomedForMs: 60_000 }), o));
    expect(d.error.code).toBe('unauthorized');
    expect(d.reason).toBe('4502 token expired');
  });

  it('4502 always reconnects with a token provider (a fresh token each time), whatever the 4500 retry', () => {
    let s = state({ everWelcomed: true, unauthorizedRetried: true });
    for (let i = 0; i < 5; i++) {
      const d = reconnects(decideAfterClose(s, close(4502, { tokenIsProvider: true, welcomedForMs: 60_000 }), o));
      expect(d.connectionState === 'reconnecting' || d.connectionState === 'offline').toBe(true);
      expect(d.next.unauthorizedRetried).toBe(true); // 4502 does not spend (or give back) the 4500 retry
      s = d.next;
    }
  });
});

describe('backoff', () => {
  it('grows exponentially with full jitter up to the cap; each decision counts one attempt', () => {
    let s = state({ everWelcomed: true });
    const delays: number[] = [];
    for (let i = 0; i < 8; i++) {
      const d = decideNextAttempt(s, 'x', { ...o, offlineAfterAttempts: 100 });
      delays.push(d.delayMs);
      expect(d.next.attempt).toBe(i + 1);
      s = d.next;
    }
    expect(delays).toEqual([50, 100, 200, 400, 800, 1600, 2500, 2500]);
  });

  it('draws one random number per decision', () => {
    const draws: number[] = [];
    const random = () => {
      draws.push(0.25);
      return 0.25;
    };
    expect(decideNextAttempt(state({ attempt: 2 }), 'x', { ...o, random }).delayMs).toBe(100);
    expect(draws).toHaveLength(1);
  });

  it('a connection that dropped soon after its welcome does not reset the backoff', () => {
    // Just welcomed (attempt 0): counted as attempt 1, so the delay is drawn from 2 * base.
    const short = reconnects(decideAfterClose(state({ everWelcomed: true }), close(4000, { welcomedForMs: SHORT_LIVED_MS - 1 }), o));
    expect(short.delayMs).toBe(100);
    expect(short.next.attempt).toBe(2);
    // Lived long enough: the backoff starts over.
    const long = reconnects(decideAfterClose(state({ everWelcomed: true }), close(4000, { welcomedForMs: SHORT_LIVED_MS }), o));
    expect(long.delayMs).toBe(50);
    expect(long.next.attempt).toBe(1);
    // Never welcomed: the attempt count is what it is.
    const never = reconnects(decideAfterClose(state(), close(1006, { welcomedForMs: null }), o));
    expect(never.delayMs).toBe(50);
    expect(never.next.attempt).toBe(1);
  });

  it('a short-lived connection never lowers an attempt count that is already higher', () => {
    const d = reconnects(
      decideAfterClose(state({ everWelcomed: true, attempt: 3 }), close(4000, { welcomedForMs: 10 }), { ...o, offlineAfterAttempts: 100 }),
    );
    expect(d.delayMs).toBe(400);
    expect(d.next.attempt).toBe(4);
  });

  it('the 4500 retry of a provider is subject to the short-lived rule like any other reconnect', () => {
    const d = reconnects(decideAfterClose(state({ everWelcomed: true }), close(4500, { tokenIsProvider: true, welcomedForMs: 100 }), o));
    expect(d.next).toMatchObject({ attempt: 2, unauthorizedRetried: true });
  });
});

describe('retry_after_ms', () => {
  it("the server's retry_after_ms wins when larger, and is used once", () => {
    const s = withRetryAfter(state({ everWelcomed: true }), 3000);
    const d = reconnects(decideAfterClose(s, close(4000, { welcomedForMs: 60_000 }), o));
    expect(d.delayMs).toBe(3000);
    expect(d.next.retryAfterMs).toBeNull();
    expect(decideNextAttempt(d.next, 'again', o).delayMs).toBe(100);
  });

  it('the backoff wins when it is larger', () => {
    const s = withRetryAfter(state({ attempt: 5 }), 10);
    expect(decideNextAttempt(s, 'x', o).delayMs).toBe(1600);
  });

  it('applies to attempts scheduled for other reasons too (no token)', () => {
    const d = decideNextAttempt(withRetryAfter(state(), 700), 'could not get a token: boom', o);
    expect(d).toMatchObject({ delayMs: 700, reason: 'could not get a token: boom' });
  });

  it('is kept when the client stops', () => {
    const s = withRetryAfter(state(), 700);
    expect(stops(decideAfterClose(s, close(4501), o)).next.retryAfterMs).toBe(700);
  });

  it('only a non-negative number counts; capped at 5 minutes', () => {
    const s = state();
    for (const bad of [-1, Number.NaN, '100', null, undefined]) expect(withRetryAfter(s, bad)).toBe(s);
    expect(withRetryAfter(s, 0).retryAfterMs).toBe(0);
    expect(withRetryAfter(s, 60 * 60_000).retryAfterMs).toBe(MAX_RETRY_AFTER_MS);
    expect(withRetryAfter(s, Number.POSITIVE_INFINITY).retryAfterMs).toBe(MAX_RETRY_AFTER_MS);
    expect(withRetryAfter(withRetryAfter(s, 500), 200).retryAfterMs).toBe(200); // the last frame counts
  });

  it('a welcome forgets it', () => {
    expect(afterWelcome(withRetryAfter(state(), 500)).retryAfterMs).toBeNull();
  });
});

describe('offline', () => {
  it("after offlineAfterAttempts failed attempts in a row the state is 'offline' (attempts go on)", () => {
    let s = state();
    const states: string[] = [];
    for (let i = 0; i < 5; i++) {
      const d = decideNextAttempt(s, 'x', o);
      states.push(d.connectionState);
      s = d.next;
    }
    expect(states).toEqual(['connecting', 'connecting', 'offline', 'offline', 'offline']);
    const welcomed = afterWelcome(s);
    expect(decideNextAttempt(welcomed, 'x', o).connectionState).toBe('reconnecting');
  });

  it("network down: 'offline' at once and the cap as the delay, even over a larger retry_after_ms", () => {
    const s = withRetryAfter(state({ everWelcomed: true, networkDown: true }), 9000);
    const d = reconnects(decideAfterClose(s, close(1000, { reason: 'network went offline', welcomedForMs: 60_000 }), o));
    expect(d).toMatchObject({ connectionState: 'offline', delayMs: o.capMs, reason: '1000 network went offline' });
    expect(d.next).toMatchObject({ attempt: 1, networkDown: true, retryAfterMs: null });
  });

  it('network down does not turn a stop into a reconnect', () => {
    expect(decideAfterClose(state({ networkDown: true }), close(4500), o).action).toBe('stop');
  });
});

describe('purity', () => {
  it('never changes the state it is given', () => {
    const s = state({ attempt: 1, everWelcomed: true, retryAfterMs: 10 }); // frozen: a write would throw
    const before = { ...s };
    decideAfterClose(s, close(4500, { tokenIsProvider: true, welcomedForMs: 1 }), o);
    decideAfterClose(s, close(4501), o);
    decideNextAttempt(s, 'x', o);
    afterWelcome(s);
    withRetryAfter(s, 5);
    expect(s).toEqual(before);
    expect(initialReconnectState).toEqual({
      attempt: 0,
      everWelcomed: false,
      unauthorizedRetried: false,
      retryAfterMs: null,
      networkDown: false,
    });
  });

  it('afterWelcome resets the attempt count, the 4500 retry and retry_after_ms, and keeps the network hint', () => {
    expect(afterWelcome(state({ attempt: 7, unauthorizedRetried: true, retryAfterMs: 3, networkDown: true }))).toEqual({
      attempt: 0,
      everWelcomed: true,
      unauthorizedRetried: false,
      retryAfterMs: null,
      networkDown: true,
    });
  });
});
