/** The history checker must catch each kind of fault before a green end-to-end run means anything. */
import { describe, expect, it } from 'vitest';
import { History, isClean, type StoredMessage } from './harness/history.js';

const C = 'c';
const msg = (seq: number, over: Partial<StoredMessage> = {}): StoredMessage => ({
  conversation_id: C,
  sequence_number: seq,
  message_id: `m${seq}`,
  sender_id: 'alice',
  idempotency_key: `k${seq}`,
  payload: seq,
  ...over,
});
const db = [1, 2, 3].map((s) => msg(s));

function run(received: StoredMessage[], stored = db, acks: Array<[string, number, string]> = []) {
  const h = new History();
  for (const s of [1, 2, 3]) h.send('alice', C, `k${s}`);
  for (const [key, seq, id] of acks) h.ack('alice', key, { conversation_id: C, sequence_number: seq, message_id: id });
  for (const m of received) h.receive('bob', m);
  return h.check(stored, () => ['bob']);
}

describe('history checker', () => {
  it('passes a clean history', () => {
    expect(isClean(run(db, db, [['k1', 1, 'm1']]))).toBe(true);
  });
  it('catches a lost message (never received)', () => {
    expect(run([msg(1), msg(2)]).lost).toHaveLength(1);
  });
  it('catches an acked message that is not stored', () => {
    expect(run(db, db, [['k9', 9, 'm9']]).lost).toHaveLength(1);
  });
  it('catches a duplicate', () => {
    expect(run([msg(1), msg(2), msg(2), msg(3)]).duplicated).toHaveLength(1);
  });
  it('catches reordering', () => {
    expect(run([msg(1), msg(3), msg(2)]).reordered).toHaveLength(1);
  });
  it('catches a gap in delivery', () => {
    expect(run([msg(1), msg(3), msg(2)]).gapped.length).toBeGreaterThan(0);
  });
  it('catches a gap in the database', () => {
    expect(run([msg(1), msg(3)], [msg(1), msg(3)]).gapped).toContain('db c missing sequence 2');
  });
  it('catches divergent content', () => {
    expect(run([msg(1), msg(2, { payload: 'other' }), msg(3)]).divergent).toHaveLength(1);
  });
  it("catches a sender's messages stored out of its send order", () => {
    const stored = [msg(1, { idempotency_key: 'k2' }), msg(2, { idempotency_key: 'k1' }), msg(3)];
    expect(run(stored, stored).senderOrder).toHaveLength(1);
  });
});
