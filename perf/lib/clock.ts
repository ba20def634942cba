import { performance } from 'node:perf_hooks';
/** Epoch milliseconds with sub-ms resolution, comparable across processes on one machine. */
export function nowMs(): number {
  return performance.timeOrigin + performance.now();
}
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
