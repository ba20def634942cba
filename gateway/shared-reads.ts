/**
 * Catch-up reads shared by the connections that ask for the same range at the same time. In a
 * large room every connected member that saw the same gap asks for the same messages (same
 * conversation, same last sequence, same count): without sharing, 10,000 members catching up after
 * one missed event are 10,000 identical queries, which overflow the database gate and close the
 * connections they were meant to repair. With it they are one query, answered to all.
 *
 * Only reads in flight are shared (no cache: a finished read is never served again), so a reader
 * never sees a result older than its own request. The table holds at most `maxInFlight` distinct
 * reads; past that a read goes to the store on its own (the store's gate bounds those).
 */
import type { Envelope } from '../common/protocol.js';
import type { HistoryPort } from './connection.js';

export interface SharedReadsStats {
  /** Reads that joined one already in flight. */
  shared: number;
}

export function shareConcurrentReads(
  history: HistoryPort,
  maxInFlight = 1024,
): HistoryPort & { readonly stats: SharedReadsStats; readonly inFlight: number } {
  const inFlight = new Map<string, Promise<Envelope[]>>();
  const stats: SharedReadsStats = { shared: 0 };
  return {
    stats,
    get inFlight() {
      return inFlight.size;
    },
    messagesAfter(conversationId, afterSequence, limit) {
      const key = `${conversationId}/${afterSequence}/${limit}`;
      const running = inFlight.get(key);
      if (running) {
        stats.shared++;
        return running;
      }
      const read = history.messagesAfter(conversationId, afterSequence, limit);
      if (inFlight.size >= maxInFlight) return read;
      inFlight.set(key, read);
      const forget = () => {
        if (inFlight.get(key) === read) inFlight.delete(key);
      };
      read.then(forget, forget);
      return read;
    },
  };
}
