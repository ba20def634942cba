/**
 * The seam between routing (delivery/, or the standalone pipeline) and the nodes that hold
 * connections (gateway/): what one event means for whom. Contract: deliveries of one conversation
 * are handed over in stream order; a delivery may arrive more than once (connections drop
 * duplicates by sequence).
 */
import type { ChatEvent, EventRecord } from './events.js';

export interface Delivery {
  /** Users to hand the event to; null: every member (the receiving node resolves them). */
  recipients: readonly string[] | null;
  event: ChatEvent;
  traceId: string | null;
}

export interface DeliverySink {
  /** Resolves once the delivery is handed over (Kafka: acknowledged). */
  deliver(d: Delivery, source: EventRecord): Promise<void>;
  /**
   * A batch about to be handed over one delivery at a time: the sink may read what they all need
   * at once (member lists) instead of one read per delivery, in series.
   */
  prepare?(deliveries: readonly Delivery[]): Promise<void>;
}
