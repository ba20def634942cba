/** Every failure the SDK reports is a RealChatError with a stable `code`. */
export type ClientErrorCode =
  // server codes (contract)
  | 'unauthorized'
  | 'forbidden'
  | 'invalid_frame'
  | 'invalid_request'
  | 'payload_too_large'
  | 'rate_limited'
  | 'conflict'
  | 'unavailable'
  | 'not_found'
  | 'internal'
  | 'origin_not_allowed'
  | 'host_not_allowed'
  | 'too_many_connections'
  // client-side codes
  | 'timeout'
  | 'queue_full'
  | 'closed'
  | 'network';

const RETRIABLE = new Set(['unavailable', 'rate_limited', 'internal', 'timeout', 'network', 'too_many_connections']);

export class RealChatError extends Error {
  override name = 'RealChatError';
  constructor(
    readonly code: ClientErrorCode | (string & {}),
    message: string,
    /** The idempotency key or conversation id the error answers, when known. */
    readonly ref?: string,
    /** HTTP status for REST errors. */
    readonly status?: number,
    /** The server's finer reason under the code, when it gave one (e.g. `after_refused`). */
    readonly reason?: string,
  ) {
    super(message);
  }

  get retriable(): boolean {
    return RETRIABLE.has(this.code);
  }
}
