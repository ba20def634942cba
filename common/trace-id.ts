/**
 * Trace ids for requests and events: 16 hex characters, unique per process (a random prefix per
 * generator, then a counter). Cheap enough for every send: crypto randomness per request cost the
 * hot path more than the rest of the id handling.
 */
import { randomBytes } from 'node:crypto';

export function traceIdGenerator(): () => string {
  const prefix = randomBytes(4).toString('hex');
  let n = Math.floor(Math.random() * 0x7fffffff);
  return () => {
    n = (n + 1) % 0x100000000;
    return prefix + n.toString(16).padStart(8, '0');
  };
}
