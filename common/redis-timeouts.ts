/**
 * Command deadlines for an ioredis client that a blocked event loop cannot fake.
 *
 * ioredis's own `commandTimeout` is a plain timer. After an event-loop turn that ran longer than
 * the timeout (a reconnect storm's hellos: 300-700 ms on a gateway), Node runs due timers before it
 * reads the sockets, so a reply already waiting in the socket is reported as "Command timed out".
 * In the storm runs of 2026-12-03 that made healthy gateways drop out of the presence registry
 * (a heartbeat or a connection's entry "failed") and catch every connection up from the database.
 * Here a deadline that passes waits for the turn's socket reads (deadlineTimer, as every
 * withTimeout does): a reply that arrived in time settles the command first.
 */
import type { Command, Redis } from 'ioredis';
import { deadlineTimer } from './timeout.js';

export const COMMAND_TIMED_OUT = 'Command timed out';

/** Replaces `redis`'s per-command timeout (leave ioredis's `commandTimeout` unset) with one that waits for the socket reads. */
export function deadlineAfterReads(redis: Redis, ms: number): void {
  const send = redis.sendCommand.bind(redis) as (command: Command, ...rest: unknown[]) => unknown;
  (redis as unknown as { sendCommand: typeof send }).sendCommand = (command, ...rest) => {
    const timer = deadlineTimer(ms, () => {
      if (!command.isSettled) command.reject(new Error(COMMAND_TIMED_OUT));
    });
    const clear = () => clearTimeout(timer);
    command.promise.then(clear, clear);
    return send(command, ...rest);
  };
}
