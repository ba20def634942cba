/**
 * Partition batches handled at once (the consumer runs several partitions concurrently, all from
 * one fetch) are handed over together: one routing call (one member-list read, one registry round
 * trip) and one produce call, where each batch alone would pay its own. At 1,000 msg/s over 12
 * partitions a partition batch holds a handful of records, so those per-call costs were most of
 * the work. Calls made before the next turn of the event loop join the same hand-over; a retry
 * goes alone, and so does each group of a call that failed for good, so one batch's failure cannot
 * fail the batches it happened to share a call with.
 */
import type { Outgoing, RouteGroup } from './recipient-routing.js';

export interface HandOverDeps {
  route(groups: readonly RouteGroup[]): Promise<Outgoing>;
  send(out: Outgoing): Promise<void>;
  /** Groups per call at most; the waiting list never outgrows the partitions handled at once. */
  maxGroups: number;
  /**
   * An error no retry can cure (a record the broker will never take): each group of the failed call
   * is then handed over alone at once, so only the culprit's batch fails with it.
   */
  isPermanent(err: unknown): boolean;
}

export function createHandOver(deps: HandOverDeps) {
  interface Waiting {
    group: RouteGroup;
    resolve(): void;
    reject(err: unknown): void;
  }
  let waiting: Waiting[] = [];
  let scheduled = false;

  const handOver = async (groups: readonly RouteGroup[]) => deps.send(await deps.route(groups));

  function flush(): void {
    const taken = waiting.slice(0, deps.maxGroups);
    waiting = waiting.slice(taken.length);
    scheduled = false;
    if (waiting.length > 0) schedule();
    handOver(taken.map((w) => w.group)).then(
      () => {
        for (const w of taken) w.resolve();
      },
      (err: unknown) => {
        if (taken.length > 1 && deps.isPermanent(err)) for (const w of taken) handOver([w.group]).then(w.resolve, w.reject);
        else for (const w of taken) w.reject(err);
      },
    );
  }

  function schedule(): void {
    if (scheduled) return;
    scheduled = true;
    setImmediate(flush);
  }

  return {
    /** Routes and produces one partition batch, together with the others handed over meanwhile (alone: by itself). */
    handOver(group: RouteGroup, alone = false): Promise<void> {
      if (alone) return handOver([group]);
      return new Promise<void>((resolve, reject) => {
        waiting.push({ group, resolve, reject });
        schedule();
      });
    },
  };
}
