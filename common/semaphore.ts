/**
 * Bounds the work waiting on a shared resource. Without it, a burst beyond what the database can do
 * queues inside the driver without limit, and every queued query (the relay's included) times out.
 * With it, at most `maxActive` run, at most `maxQueued` wait, and the rest are refused at once.
 */
export class Semaphore {
  private active = 0;
  private readonly queue: Array<() => void> = [];

  constructor(
    private readonly maxActive: number,
    private readonly maxQueued: number,
  ) {}

  get waiting(): number {
    return this.queue.length;
  }

  /** Null when the queue is full (the caller refuses the work). */
  tryAcquire(): Promise<() => void> | null {
    if (this.active < this.maxActive) {
      this.active++;
      return Promise.resolve(this.releaser());
    }
    if (this.queue.length >= this.maxQueued) return null;
    return new Promise((resolve) => this.queue.push(() => resolve(this.releaser())));
  }

  private releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.queue.shift();
      if (next) next();
      else this.active--;
    };
  }
}
