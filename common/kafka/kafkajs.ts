/**
 * The only module of the application that imports kafkajs (unmaintained upstream; `npm run lint`
 * enforces it). The rest of common/kafka/ builds on these names; everything outside sees only
 * common/kafka/index.ts, so the client can be swapped without touching the roles.
 */
import { createRequire } from 'node:module';
import kafkajs from 'kafkajs';

export type { Admin, Consumer, IHeaders, Kafka, KafkaMessage, Producer } from 'kafkajs';
export const { Kafka: KafkaJs, KafkaJSError, Partitioners, logLevel } = kafkajs;

/** The part of kafkajs' per-connection request queue (src/network/requestQueue) the fix touches. */
interface RequestQueueInternals {
  pending: unknown[];
  throttledUntil: number;
  throttleCheckTimeoutId: ReturnType<typeof setTimeout> | null;
  checkPendingRequests(): void;
  scheduleCheckPendingRequests(): void;
}

/** kafkajs' own retry interval for a queue that has requests waiting (CHECK_PENDING_REQUESTS_INTERVAL). */
const CHECK_PENDING_MS = 10;

/**
 * kafkajs 2.2.4 re-arms a timer on every broker connection forever once any request completed,
 * with a negative delay when nothing is throttled (tulios/kafkajs#1556, fix #1667 never released):
 * each connection wakes the event loop about every millisecond. Measured on an idle gateway with
 * about ten broker connections: 1,400-1,600 epoll wakeups/s and 5-8 % of a core per process doing
 * nothing. The timer is only needed while requests wait (throttled, or at the in-flight limit);
 * an in-flight request that completes checks the queue itself, and `push` schedules the check
 * again when a new request has to wait.
 */
export function patchRequestQueue(RequestQueue: { prototype: RequestQueueInternals }): void {
  RequestQueue.prototype.scheduleCheckPendingRequests = function (this: RequestQueueInternals) {
    if (this.throttleCheckTimeoutId || this.pending.length === 0) return;
    const untilThrottleEnds = this.throttledUntil - Date.now();
    this.throttleCheckTimeoutId = setTimeout(
      () => {
        this.throttleCheckTimeoutId = null;
        this.checkPendingRequests();
      },
      untilThrottleEnds > 0 ? untilThrottleEnds : CHECK_PENDING_MS,
    );
  };
}

/** The class kafkajs itself uses (same module instance through require's cache). */
export function kafkajsRequestQueue(): { prototype: RequestQueueInternals } {
  return createRequire(import.meta.url)('kafkajs/src/network/requestQueue/index.js') as { prototype: RequestQueueInternals };
}

patchRequestQueue(kafkajsRequestQueue());
