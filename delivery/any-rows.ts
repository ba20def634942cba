/**
 * "Is there anything to do at all?", cached for a short time. The webhook intake and the notifier
 * see every event of the stream; where no webhook (or no push subscription) exists, which is the
 * common case of the embedded default, each relay batch would still cost them a query on the
 * database's one connection there. The price: a webhook or subscription created less than `ttlMs`
 * ago may miss events committed in that window (documented with each).
 */
export interface AnyRows {
  /** True if the last look (at most `ttlMs` old) found rows; looks again when older. */
  check(): Promise<boolean>;
}

export function anyRows(look: () => Promise<boolean>, ttlMs: number, now: () => number = () => performance.now()): AnyRows {
  let value = false;
  let at = Number.NEGATIVE_INFINITY;
  let inFlight: Promise<boolean> | null = null;
  return {
    check() {
      if (now() - at < ttlMs) return Promise.resolve(value);
      inFlight ??= look()
        .then((v) => {
          value = v;
          at = now();
          return v;
        })
        .finally(() => {
          inFlight = null;
        });
      return inFlight;
    },
  };
}
