/**
 * One registry of error codes. The code is the stable, documented contract (docs/protocol.md);
 * the HTTP status and `retriable` flag follow from it so no call site can disagree.
 */
export const ERROR_CODES = {
  invalid_request: { status: 400, retriable: false },
  invalid_frame: { status: 400, retriable: false },
  unauthorized: { status: 401, retriable: false },
  forbidden: { status: 403, retriable: false },
  /** A browser page from an origin not in REALCHAT_ALLOWED_ORIGINS (cross-site WebSocket hijacking). */
  origin_not_allowed: { status: 403, retriable: false },
  /** A Host header naming none of this server's names (DNS rebinding). */
  host_not_allowed: { status: 421, retriable: false },
  not_found: { status: 404, retriable: false },
  conflict: { status: 409, retriable: false },
  payload_too_large: { status: 413, retriable: false },
  rate_limited: { status: 429, retriable: true },
  /** Connection cap per user or per client address reached; retry once another connection closed. */
  too_many_connections: { status: 429, retriable: true },
  unavailable: { status: 503, retriable: true },
  internal: { status: 500, retriable: true },
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

/**
 * Finer reasons under a code, sent as the error frame's `reason` (docs/protocol.md). A client that
 * does not know a reason acts on the code alone, so a reason never changes what the code asks for.
 */
export const ERROR_REASONS = {
  /**
   * A WebSocket `send` refused because an earlier send of the same connection and conversation was
   * refused with a retriable code and has not been sent again yet: were this one stored, it would
   * come before the earlier one. Retry the earlier one (its key is in the message) first.
   */
  after_refused: { code: 'unavailable' },
  /**
   * A write to a conversation homed in another region (docs/multi-region.md): this region holds a
   * copy and may not number its entries. Re-homed meanwhile, or not forwarded: retry.
   */
  home_elsewhere: { code: 'unavailable' },
  /** A send forwarded to the conversation's home region found it unreachable (partition, outage): retry. */
  home_unreachable: { code: 'unavailable' },
  /** presence_subscribe: the connection would watch more users than REALCHAT_PRESENCE_MAX_WATCHED; unsubscribe some first. */
  watch_limit: { code: 'invalid_frame' },
} as const satisfies Record<string, { code: ErrorCode }>;

export type ErrorReason = keyof typeof ERROR_REASONS;

export class AppError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly retriable: boolean;
  /** Seconds a client should wait before retrying; sent as Retry-After / retry_after_ms. */
  readonly retryAfterS: number | undefined;
  readonly reason: ErrorReason | undefined;
  /** The users the error is about (presence_subscribe's `forbidden`), sent as the error frame's `user_ids`. */
  readonly userIds: string[] | undefined;

  constructor(
    code: ErrorCode,
    message: string,
    opts: { cause?: unknown; retryAfterS?: number; reason?: ErrorReason; userIds?: string[] } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'AppError';
    this.code = code;
    this.status = ERROR_CODES[code].status;
    this.retriable = ERROR_CODES[code].retriable;
    this.retryAfterS = opts.retryAfterS ?? (this.retriable && code !== 'internal' ? 1 : undefined);
    this.reason = opts.reason;
    this.userIds = opts.userIds;
  }
}

/** A write refused by the home fence: the conversation is homed in `homeRegion` (docs/multi-region.md). */
export class HomeElsewhereError extends AppError {
  constructor(
    readonly homeRegion: string,
    opts: { cause?: unknown } = {},
  ) {
    super('unavailable', `the conversation is homed in region ${homeRegion}: it takes writes there`, {
      ...opts,
      retryAfterS: 1,
      reason: 'home_elsewhere',
    });
  }
}

/**
 * Refused by this process's own bound on waiting work (a full queue in front of the database), not
 * by a failing dependency: the same request a moment later usually succeeds.
 */
export class OverloadError extends AppError {
  constructor(message: string) {
    super('unavailable', message, { retryAfterS: 1 });
  }
}

export const invalid = (message: string) => new AppError('invalid_request', message);

/** Any error that is not ours becomes `internal` (never leaks details to the client). */
export function toAppError(err: unknown): AppError {
  if (err instanceof AppError) return err;
  return new AppError('internal', 'internal error', { cause: err });
}

/**
 * What lies under an error, for logs: the cause's name, code and message (a timeout, a connection
 * reset, a SQLSTATE). A refusal's own message names the bound; its cause says what tripped it.
 */
export function causeSummary(err: Error): string | undefined {
  const cause = err.cause;
  if (cause === undefined) return undefined;
  if (!(cause instanceof Error)) return String(cause).slice(0, 200);
  const code = (cause as { code?: unknown }).code;
  return `${cause.name}${typeof code === 'string' ? ` ${code}` : ''}: ${cause.message}`.slice(0, 200);
}
