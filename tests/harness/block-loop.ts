/**
 * Keeps the event loop busy for `ms`: what another process sends meanwhile waits in the socket,
 * and the timers due meanwhile are late. For tests of deadlines that a blocked loop must not fake.
 */
export function blockLoop(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    /* busy */
  }
}
