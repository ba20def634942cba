/**
 * Per-key reads coalesced into one query per batch (the DataLoader pattern, with no cache); also
 * per-key upserts that a storm issues by the thousand (last_seen_at, delivery positions). In a
 * reconnect storm thousands of hellos each read their user's conversations: one query each
 * takes one database gate slot each, the gate overflows and hellos are refused `unavailable`,
 * to be retried into the same queue. Batched, reads that arrive while a batch is in flight wait
 * for the next one, which carries them all in one query.
 *
 * No added latency when idle: with no batch in flight a read starts at once (a batch of one).
 * A read never gets a result read before it was asked: it only joins a batch that has not
 * started. Bounded: at most `maxBatch` keys per query, `maxInFlight` queries at once and
 * `maxWaiting` reads queued; past that a read is refused with `onOverflow()`'s error.
 */

export interface BatchedReadsOptions {
  maxBatch: number;
  maxInFlight: number;
  maxWaiting: number;
  /** The error a read gets when `maxWaiting` reads are already queued. */
  onOverflow(): Error;
}

export interface BatchedReads<K, V> {
  read(key: K): Promise<V>;
  /** Several keys queued together: when idle they start as one batch, not one key and then the rest. */
  readMany(keys: readonly K[]): Promise<V[]>;
  readonly stats: { batches: number; reads: number };
}

interface Waiter<V> {
  resolve(value: V): void;
  reject(err: unknown): void;
}

/**
 * `fetchMany` answers distinct keys in one query; a key it leaves out gets `missing` (e.g. no
 * rows: an empty list).
 */
export function batchReads<K, V>(
  fetchMany: (keys: K[]) => Promise<Map<K, V>>,
  missing: () => V,
  opts: BatchedReadsOptions,
): BatchedReads<K, V> {
  let waiting = new Map<K, Array<Waiter<V>>>();
  let queued = 0;
  let inFlight = 0;
  const stats = { batches: 0, reads: 0 };

  function startBatch(): void {
    if (inFlight >= opts.maxInFlight || waiting.size === 0) return;
    let batch: Map<K, Array<Waiter<V>>>;
    if (waiting.size <= opts.maxBatch) {
      batch = waiting;
      waiting = new Map();
    } else {
      batch = new Map();
      for (const [key, ws] of waiting) {
        if (batch.size >= opts.maxBatch) break;
        batch.set(key, ws);
        waiting.delete(key);
      }
    }
    for (const ws of batch.values()) queued -= ws.length;
    inFlight++;
    stats.batches++;
    fetchMany([...batch.keys()])
      .then(
        (found) => {
          for (const [key, ws] of batch) {
            const value = found.has(key) ? found.get(key)! : missing();
            for (const w of ws) w.resolve(value);
          }
        },
        (err: unknown) => {
          for (const ws of batch.values()) for (const w of ws) w.reject(err);
        },
      )
      .finally(() => {
        inFlight--;
        startBatch();
      });
  }

  function enqueue(key: K): Promise<V> {
    stats.reads++;
    return new Promise<V>((resolve, reject) => {
      const ws = waiting.get(key);
      if (ws) ws.push({ resolve, reject });
      else waiting.set(key, [{ resolve, reject }]);
      queued++;
    });
  }

  return {
    stats,
    read(key: K): Promise<V> {
      if (queued >= opts.maxWaiting) return Promise.reject(opts.onOverflow());
      const value = enqueue(key);
      startBatch();
      return value;
    },
    readMany(keys: readonly K[]): Promise<V[]> {
      if (queued + keys.length > opts.maxWaiting) return Promise.reject(opts.onOverflow());
      const values = keys.map(enqueue);
      startBatch();
      return Promise.all(values);
    },
  };
}
