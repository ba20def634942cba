// Open-loop schedule: message k (0-based) is intended to be sent at start + k * 1000 / rate ms,
// whatever happened to earlier messages. Latency is measured from this intended time, so a stalled
// sender or server cannot hide its stall (no coordinated omission).

export function totalMessages(rate: number, durationS: number): number {
  if (!(rate > 0) || !(durationS > 0)) return 0;
  return Math.floor(rate * durationS);
}

export function intendedTime(startMs: number, rate: number, k: number): number {
  return startMs + (k * 1000) / rate;
}

/** Number of messages whose intended time is <= nowMs (capped at total). */
export function dueCount(startMs: number, rate: number, total: number, nowMs: number): number {
  if (nowMs < startMs) return 0;
  const n = Math.floor(((nowMs - startMs) * rate) / 1000 + 1e-9) + 1;
  return Math.min(total, n);
}

/** Sender slot of message k when S slots share the rate round robin. */
export function slotOf(k: number, slots: number): number {
  return k % slots;
}
