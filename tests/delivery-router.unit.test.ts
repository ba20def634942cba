/**
 * The in-process router hands a batch to its sink one delivery at a time, in order; before that it
 * lets the sink read what the whole batch needs at once (DeliverySink.prepare): the embedded
 * default's single database connection would otherwise queue one member-list read per new
 * conversation, each behind the send path's writes (seconds of backlog after many conversations
 * start at once, measured in perf/README.md).
 */
import { describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import { createDeliveryRouter } from '../delivery/router.js';
import { createLogger } from '../common/log.js';
import { createMetrics } from '../common/metrics.js';
import type { Delivery } from '../common/delivery.js';
import type { EventRecord } from '../common/events.js';

function created(conv: string, seq: number): EventRecord {
  const at = new Date().toISOString();
  const event = {
    schema_version: 1,
    event_id: randomUUID(),
    type: 'message.created',
    conversation_id: conv,
    occurred_at: at,
    message: {
      message_id: randomUUID(),
      conversation_id: conv,
      sender_id: randomUUID(),
      sequence_number: seq,
      payload: { text: 'hi' },
      created_at: at,
      idempotency_key: `k-${seq}`,
    },
  };
  return { key: conv, value: JSON.stringify(event), type: event.type, eventId: event.event_id, traceId: null };
}

describe('delivery router (in-process hand-over)', () => {
  it('lets the sink prepare the whole batch once, then delivers each in order, duplicates dropped', async () => {
    const router = createDeliveryRouter({
      log: createLogger({ level: 'silent', nodeId: 't', role: 'delivery' }),
      metrics: createMetrics({ nodeId: 't' }),
      dedupEntries: 100,
    });
    const [a, b] = [randomUUID(), randomUUID()];
    const calls: string[] = [];
    const sink = {
      async prepare(ds: readonly Delivery[]) {
        calls.push(`prepare ${ds.map((d) => `${d.event.conversation_id === a ? 'a' : 'b'}`).join('')}`);
      },
      async deliver(d: Delivery) {
        const e = d.event as { conversation_id: string; message: { sequence_number: number } };
        calls.push(`deliver ${e.conversation_id === a ? 'a' : 'b'}${e.message.sequence_number}`);
      },
    };
    const first = created(a, 1);
    await router.handle([first, created(b, 1), created(a, 2), first], sink, async () => {});
    expect(calls).toEqual(['prepare aba', 'deliver a1', 'deliver b1', 'deliver a2']);
  });
});
