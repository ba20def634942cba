/** A tiny typed event emitter (no DOM or Node dependency). A throwing listener never breaks the SDK. */
// biome-ignore lint/suspicious/noExplicitAny: listener signatures vary per event; Events fixes them for callers
export class Emitter<Events extends { [K in keyof Events]: (...args: any[]) => void }> {
  // biome-ignore lint/suspicious/noExplicitAny: as above
  private readonly listeners = new Map<keyof Events, Set<(...args: any[]) => void>>();

  constructor(private readonly onListenerError: (err: unknown) => void = () => {}) {}

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof Events>(event: K, fn: Events[K]): () => void {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(fn);
    return () => this.off(event, fn);
  }

  off<K extends keyof Events>(event: K, fn: Events[K]): void {
    this.listeners.get(event)?.delete(fn);
  }

  emit<K extends keyof Events>(event: K, ...args: Parameters<Events[K]>): void {
    const set = this.listeners.get(event);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(...args);
      } catch (err) {
        this.onListenerError(err);
      }
    }
  }

  clear(): void {
    this.listeners.clear();
  }
}
