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
