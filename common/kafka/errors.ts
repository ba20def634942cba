/** Kafka failures as one typed error, whatever the client library threw. */
import { TimeoutError } from '../timeout.js';
import { KafkaJSError } from './kafkajs.js';

export class KafkaError extends Error {
  override name = 'KafkaError';
  /** Worth another attempt (broker unavailable, leader moving, timeout) vs. never going to work (record too large, bad config). */
  readonly retriable: boolean;

  constructor(message: string, opts: { retriable: boolean; cause?: unknown }) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.retriable = opts.retriable;
  }
}

export function toKafkaError(err: unknown, what: string): KafkaError {
  if (err instanceof KafkaError) return err;
  const message = `${what}: ${err instanceof Error ? err.message : String(err)}`;
  // kafkajs marks protocol errors; our own deadlines and network errors are worth a retry. kafkajs
  // gives up after its own retries with a non-retriable wrapper even when the condition is
  // transient (a broker away): what counts then is the cause.
  if (err instanceof KafkaJSError) {
    const cause = (err as { cause?: unknown }).cause;
    const retriable = err.retriable || err.name === 'KafkaJSNumberOfRetriesExceeded' || (cause instanceof KafkaJSError && cause.retriable);
    return new KafkaError(message, { retriable, cause: err });
  }
  return new KafkaError(message, { retriable: err instanceof TimeoutError || !(err instanceof Error) || 'code' in err, cause: err });
}

/** Broker answers that refuse a record itself: no retry helps, and the other records of its request were not the cause. */
const RECORD_REFUSALS = new Set(['MESSAGE_TOO_LARGE', 'RECORD_LIST_TOO_LARGE', 'INVALID_RECORD', 'CORRUPT_MESSAGE', 'INVALID_TIMESTAMP']);

/** Whether the broker refused a record of the request (not a broker away, a timeout, a configuration). */
export function isRecordRefusal(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const type = (e as { type?: unknown }).type;
    if (typeof type === 'string' && RECORD_REFUSALS.has(type)) return true;
  }
  return false;
}
