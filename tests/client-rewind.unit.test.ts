/**
 * The SDK after a regional failover (protocol v1.4, docs/multi-region.md): its position in a
 * conversation came from the lost home's numbering. It sends the message id at each position with
 * its resume, and on a `rewind` frame moves back to the takeover point, takes the new home's
 * entries at those numbers, and does not show again a message it showed under the old number.
 */
import { describe, expect, it } from 'vitest';
import { ConversationStreams } from '../client/streams.js';
import type { Envelope } from '../client/types.js';

const C = '11111111-1111-4111-8111-111111111111';
const env = (seq: number, id: string): Envelope => ({
  message_id: id,
  conversation_id: C,
  sender_id: 'u',
  sequence_number: seq,
  payload: id,
  created_at: new Date(0).toISOString(),
  idempotency_key: id,
});

function streams() {
  const shown: Array<[number, string]> = [];
  const fills: number[] = [];
  const s = new ConversationStreams({
    maxBufferedPerConversation: 100,
    maxConversations: 10,
    deliver: (e) => shown.push([e.sequence_number, e.message_id]),
    requestFill: (_c, after) => fills.push(after),
  });
  return { s, shown, fills };
}

describe('SDK streams across a regional failover', () => {
  it('sends the message id at each position, rewinds to the takeover point, and shows no message twice', () => {
    const { s, shown } = streams();
    // Region a's numbering: 1..5; b took over after 3 (4 and 5 never reached b).
    for (const [n, id] of [
      [1, 'm1'],
      [2, 'm2'],
      [3, 'm3'],
      [4, 'a4'],
      [5, 'a5'],
    ] as const)
      s.accept(env(n, id), 'live');
    expect(s.positions(10)).toEqual({ [C]: 5 });
    expect(s.lastIds(10)).toEqual({ [C]: 'a5' });

    expect(s.rewind(C, 3)).toBe(true);
    expect(s.positions(10)).toEqual({ [C]: 3 });
    expect(s.lastIds(10)).toEqual({ [C]: 'm3' });
    // b's entries at 4 and 5 are new messages; a's two come again re-appended at 6 and 7.
    for (const [n, id] of [
      [4, 'b4'],
      [5, 'b5'],
      [6, 'a4'],
      [7, 'a5'],
      [8, 'b8'],
    ] as const)
      s.accept(env(n, id), 'resume');
    expect(shown).toEqual([
      [1, 'm1'],
      [2, 'm2'],
      [3, 'm3'],
      [4, 'a4'],
      [5, 'a5'],
      [4, 'b4'],
      [5, 'b5'],
      [8, 'b8'],
    ]);
    expect(s.positions(10)).toEqual({ [C]: 8 });
    expect(s.lastIds(10)).toEqual({ [C]: 'b8' });
  });

  it('a rewind to or past the position changes nothing', () => {
    const { s, shown } = streams();
    s.accept(env(1, 'm1'), 'live');
    s.accept(env(2, 'm2'), 'live');
    expect(s.rewind(C, 2)).toBe(false);
    expect(s.rewind(C, 7)).toBe(false);
    s.accept(env(3, 'm3'), 'live');
    expect(shown.map(([n]) => n)).toEqual([1, 2, 3]);
  });
});
