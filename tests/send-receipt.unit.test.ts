/** A send's receipt on its message.created (event stream v1.5, common/events.ts): decoded strictly, expanded as before. */
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { EventDecodeError, decodeEvent, receiptOf, type MessageCreated } from '../common/events.js';

function messageEvent(receipt?: unknown): Record<string, unknown> {
  const conversation = randomUUID();
  const sender = randomUUID();
  return {
    schema_version: 1,
    event_id: randomUUID(),
    type: 'message.created',
    conversation_id: conversation,
    occurred_at: '2026-12-02T07:00:00.000Z',
    message: {
      message_id: randomUUID(),
      conversation_id: conversation,
      sender_id: sender,
      sequence_number: 7,
      payload: { text: 'hi' },
      created_at: '2026-12-02T07:00:00.000Z',
      idempotency_key: 'k',
    },
    ...(receipt === undefined ? {} : { receipt: typeof receipt === 'function' ? receipt(sender) : receipt }),
  };
}

describe('message.created receipt (v1.5)', () => {
  it('without one, the event decodes as before and stands for no receipt', () => {
    const e = decodeEvent(messageEvent()) as MessageCreated;
    expect(e.type).toBe('message.created');
    expect(receiptOf(e)).toBeNull();
  });

  it("expands into the conversation.read a v1.4 stream carried: the receipt's event id, the sender, the message's sequence", () => {
    const receiptId = randomUUID();
    const raw = messageEvent((sender: string) => ({ event_id: receiptId, user_id: sender, read_sequence: 7 }));
    const e = decodeEvent(raw) as MessageCreated;
    expect(receiptOf(e)).toEqual({
      schema_version: 1,
      event_id: receiptId,
      type: 'conversation.read',
      conversation_id: raw.conversation_id,
      occurred_at: raw.occurred_at,
      user_id: (raw.message as { sender_id: string }).sender_id,
      read_sequence: 7,
    });
    // What it expands into is itself a valid event.
    expect(decodeEvent(JSON.parse(JSON.stringify(receiptOf(e))))).toEqual(receiptOf(e));
  });

  it.each([
    ['not an object', 'yes'],
    ['no event id', (sender: string) => ({ user_id: sender, read_sequence: 7 })],
    ["someone else's read", () => ({ event_id: randomUUID(), user_id: randomUUID(), read_sequence: 7 })],
    ['another sequence than the message', (sender: string) => ({ event_id: randomUUID(), user_id: sender, read_sequence: 6 })],
    ['a sequence as text', (sender: string) => ({ event_id: randomUUID(), user_id: sender, read_sequence: '7' })],
  ])('refuses a receipt that is %s', (_name, receipt) => {
    expect(() => decodeEvent(messageEvent(receipt))).toThrow(EventDecodeError);
  });
});
