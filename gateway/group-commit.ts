/**
 * Group commit: sends that arrive while a batch is being written are queued and written together
 * in the next one, so a busy node pays one round trip and one WAL flush per batch instead of per
 * send, and an idle node writes each send at once (a batch of one). At most `maxInFlight` batches
 * run at a time, each of at most `maxBatch` items; at most `maxQueued` items wait, the rest are
 * refused at once (the caller answers `unavailable`). Each item still gets its own answer.
 * A batch beyond the first in flight starts only when `extraWriterAt` items wait: a few items
 * are better off waiting for the batch in flight than paying a statement of their own, whose
 * fixed cost is most of a small batch's (perf/README.md, "Ninth round").
 */
import { AppError } from '../common/errors.js';

export interface GroupCommitOptions<I, R> {
  /** Writes one batch; returns one result per item, in the same order. A rejection fails every item of the batch. */
  write(items: I[]): Promise<R[]>;
  maxBatch: number;
  maxInFlight: number;
  maxQueued: number;
  /** Items waiting at which a batch beyond the first in flight starts (default 1: any free writer at once). */
  extraWriterAt?: number;
  /** Batches that failed with an error this says is worth it are written once more (a deadlock victim, say). */
  retryOnce?: (err: unknown) => boolean;
  /**
   * A batch that failed with an error this says is about one of its items (not the batch) is
   * written again item by item, so only that item fails (a conversation homed in another region).
   */
  splitOn?: (err: unknown) => boolean;
  /** Items with the same key never share a batch: a later one waits for the next. */
  key?: (item: I) => string;
}

interface Pending<I, R> {
  item: I;
  resolve(r: R): void;
  reject(err: unknown): void;
  /** The caller gave up (timed out) before the batch started: not written. */
  abandoned: boolean;
}

export class GroupCommit<I, R> {
  private readonly queue: Array<Pending<I, R>> = [];
  private inFlight = 0;

  constructor(private readonly opts: GroupCommitOptions<I, R>) {}

  /** Items waiting for a batch (metrics). */
  get queued(): number {
    return this.queue.length;
  }

  /** Resolves with the item's result. `signal` lets a caller that timed out withdraw a queued item. */
  submit(item: I): { result: Promise<R>; abandon(): void } {
    if (this.queue.length >= this.opts.maxQueued) {
      return {
        result: Promise.reject(new AppError('unavailable', 'server busy: too many writes waiting; retry shortly', { retryAfterS: 1 })),
        abandon() {},
      };
    }
    let pending!: Pending<I, R>;
    const result = new Promise<R>((resolve, reject) => {
      pending = { item, resolve, reject, abandoned: false };
    });
    this.queue.push(pending);
    this.pump();
    return {
      result,
      abandon: () => {
        pending.abandoned = true;
      },
    };
  }

  private take(): Array<Pending<I, R>> {
    const key = this.opts.key;
    if (!key) return this.queue.splice(0, this.opts.maxBatch).filter((p) => !p.abandoned);
    const batch: Array<Pending<I, R>> = [];
    const keys = new Set<string>();
    const rest: Array<Pending<I, R>> = [];
    for (const p of this.queue) {
      if (p.abandoned) continue;
      const k = key(p.item);
      if (batch.length < this.opts.maxBatch && !keys.has(k)) {
        keys.add(k);
        batch.push(p);
      } else rest.push(p);
    }
    this.queue.splice(0, this.queue.length, ...rest);
    return batch;
  }

  private pump(): void {
    while (this.inFlight < this.opts.maxInFlight && this.queue.length > 0) {
      if (this.inFlight > 0 && this.queue.length < (this.opts.extraWriterAt ?? 1)) return;
      const batch = this.take();
      if (batch.length === 0) continue;
      this.inFlight++;
      void this.run(batch).finally(() => {
        this.inFlight--;
        this.pump();
      });
    }
  }

  private async run(batch: Array<Pending<I, R>>): Promise<void> {
    const items = batch.map((p) => p.item);
    let results: R[];
    try {
      try {
        results = await this.opts.write(items);
      } catch (err) {
        if (!this.opts.retryOnce?.(err)) throw err;
        results = await this.opts.write(items);
      }
    } catch (err) {
      if (batch.length > 1 && this.opts.splitOn?.(err)) {
        await Promise.all(batch.map((p) => this.run([p])));
        return;
      }
      for (const p of batch) p.reject(err);
      return;
    }
    batch.forEach((p, i) => {
      p.resolve(results[i]!);
    });
  }
}
