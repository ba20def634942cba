/**
 * When and how the client reconnects: pure functions of (close code, state, options). The client
 * keeps a ReconnectState, feeds it to these functions and applies the decision (timer, state event).
 *
 *  - 4500-4999 stop for good, except that 4500 (unauthorized) gets one more attempt when the token
 *    comes from a provider (it may hand out a fresh one), and 4502 (the token expired while
 *    connected) always reconnects with a provider; every other code (4000-4499, 1006, ...) reconnects;
 *  - exponential backoff with full jitter; a server's `reconnect.retry_after_ms` wins when larger;
 *  - a connection that dropped soon after welcome does not reset the backoff;
 *  - while the network is known to be down, attempts are spaced by the cap and the state is 'offline',
 *    as it is after `offlineAfterAttempts` failed attempts in a row (attempts go on).
 */
import { backoffDelay } from './backoff.js';
import { CloseCodes, isFatalClose } from './types.js';

export interface ReconnectPolicyOptions {
  baseMs: number;
  capMs: number;
  /** After this many failed attempts in a row the state is 'offline' (attempts go on). */
  offlineAfterAttempts: number;
  random: () => number;
}

export interface ReconnectState {
  /** Failed attempts since the last welcome. */
  readonly attempt: number;
  /** Some connection was welcomed: later attempts are 'reconnecting', not 'connecting'. */
  readonly everWelcomed: boolean;
  /** The one extra attempt after a 4500 was spent (reset by a welcome). */
  readonly unauthorizedRetried: boolean;
  /** From the server's last `reconnect` frame; used (and cleared) by the next scheduled attempt. */
  readonly retryAfterMs: number | null;
  /** The environment said the network is offline. */
  readonly networkDown: boolean;
}

export const initialReconnectState: ReconnectState = Object.freeze({
  attempt: 0,
  everWelcomed: false,
  unauthorizedRetried: false,
  retryAfterMs: null,
  networkDown: false,
});

export interface Close {
  code: number;
  reason: string;
  /** The token comes from a provider function (a fresh one can be asked for). */
  tokenIsProvider: boolean;
  /** How long the connection lived after its welcome; null when it was never welcomed. */
  welcomedForMs: number | null;
}

export interface Reconnect {
  action: 'reconnect';
  delayMs: number;
  connectionState: 'connecting' | 'reconnecting' | 'offline';
  reason: string;
  next: ReconnectState;
}

export interface Stop {
  action: 'stop';
  error: { code: 'unauthorized' | 'invalid_frame'; message: string };
  reason: string;
  next: ReconnectState;
}

export type ReconnectDecision = Reconnect | Stop;

/** A connection that lived less than this after its welcome does not reset the backoff. */
export const SHORT_LIVED_MS = 5000;
/** A server's retry_after_ms is believed up to this much. */
export const MAX_RETRY_AFTER_MS = 5 * 60_000;

/** The connection closed (the application did not close the client). */
export function decideAfterClose(s: ReconnectState, close: Close, o: ReconnectPolicyOptions): ReconnectDecision {
  const reason = `${close.code} ${close.reason}`;
  let next = s;
  if (isFatalClose(close.code) && !(close.code === CloseCodes.tokenExpired && close.tokenIsProvider)) {
    // 4500 unauthorized: one more attempt only if the token can be refreshed. 4502 (the token
    // expired while connected) always reconnects with a fresh one when a provider is given.
    if (close.code === CloseCodes.unauthorized && close.tokenIsProvider && !s.unauthorizedRetried) {
      next = { ...next, unauthorizedRetried: true };
    } else {
      const code = close.code === CloseCodes.unauthorized || close.code === CloseCodes.tokenExpired ? 'unauthorized' : 'invalid_frame';
      return { action: 'stop', error: { code, message: `server closed the connection (${reason}); not reconnecting` }, reason, next };
    }
  }
  if (close.welcomedForMs !== null && close.welcomedForMs < SHORT_LIVED_MS) next = { ...next, attempt: Math.max(next.attempt, 1) };
  return decideNextAttempt(next, reason, o);
}

/** Schedules the next attempt (after a close, or when no token could be had). */
export function decideNextAttempt(s: ReconnectState, reason: string, o: ReconnectPolicyOptions): Reconnect {
  let delayMs = backoffDelay(s.attempt, { baseMs: o.baseMs, capMs: o.capMs, random: o.random });
  if (s.retryAfterMs !== null) delayMs = Math.max(delayMs, s.retryAfterMs);
  if (s.networkDown) delayMs = o.capMs;
  const attempt = s.attempt + 1;
  const offline = s.networkDown || attempt >= o.offlineAfterAttempts;
  return {
    action: 'reconnect',
    delayMs,
    connectionState: offline ? 'offline' : s.everWelcomed ? 'reconnecting' : 'connecting',
    reason,
    next: { ...s, attempt, retryAfterMs: null },
  };
}

/** A connection was welcomed: the backoff, the 4500 retry and any retry_after_ms start over. */
export function afterWelcome(s: ReconnectState): ReconnectState {
  return { ...s, attempt: 0, everWelcomed: true, unauthorizedRetried: false, retryAfterMs: null };
}

/** A `reconnect` frame's retry_after_ms: ignored unless a non-negative number, capped. */
export function withRetryAfter(s: ReconnectState, retryAfterMs: unknown): ReconnectState {
  if (typeof retryAfterMs !== 'number' || !(retryAfterMs >= 0)) return s;
  return { ...s, retryAfterMs: Math.min(retryAfterMs, MAX_RETRY_AFTER_MS) };
}
