/**
 * Log lines that a stranger can cause (refused requests, auth failures, unexpected errors in a
 * request) are rate limited per kind, so a flood cannot turn into a disk-filling or CPU-burning log
 * storm. Each kind may log `perInterval` lines per `intervalMs`; the next line after a quiet spell
 * reports how many were suppressed.
 */
import type { Logger } from './log.js';

interface Window {
  start: number;
  logged: number;
  suppressed: number;
}

export class LogLimiter {
  private readonly windows = new Map<string, Window>();

  constructor(
    private readonly log: Logger,
    private readonly perInterval = 10,
    private readonly intervalMs = 10_000,
    private readonly now: () => number = Date.now,
    /** Kinds are few (route names, error codes), but never let them grow without bound. */
    private readonly maxKinds = 1000,
  ) {}

  /** Logs at `level` unless this kind is over its budget. Returns whether it logged. */
  write(level: 'warn' | 'info' | 'error' | 'fatal', kind: string, fields: Record<string, unknown>, msg: string): boolean {
    const t = this.now();
    let w = this.windows.get(kind);
    if (!w || t - w.start >= this.intervalMs) {
      const suppressed = w?.suppressed ?? 0;
      if (!w && this.windows.size >= this.maxKinds) this.windows.clear();
      w = { start: t, logged: 0, suppressed: 0 };
      this.windows.set(kind, w);
      if (suppressed > 0) fields = { ...fields, suppressed_before: suppressed };
    }
    if (w.logged >= this.perInterval) {
      w.suppressed++;
      return false;
    }
    w.logged++;
    this.log[level]({ kind, ...fields }, msg);
    return true;
  }
}
