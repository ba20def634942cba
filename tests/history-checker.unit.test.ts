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

describe('history checker: unexpected, conflicting acks, unsent, sender order, arrival paths', () => {
  /** alice sent k1..k3; bob received what is given, with `via` per message (default live). */
  function history(received: Array<StoredMessage | [StoredMessage, 'live' | 'fill' | 'resume', number?]>) {
    const h = new History();
    for (const s of [1, 2, 3]) h.send('alice', C, `k${s}`);
    for (const r of received) {
      const [m, via, atMs] = Array.isArray(r) ? r : [r, 'live' as const];
      h.receive('bob', m, { via, ...(atMs === undefined ? {} : { atMs }) });
    }
    return h;
  }

  it('catches a received message that was never stored', () => {
    const r = history([...db, msg(4, { message_id: 'phantom' })]).check(db, () => ['bob']);
    expect(r.unexpected).toEqual(['bob got c#4 (phantom), never stored']);
    expect(isClean(history(db).check(db, () => ['bob']))).toBe(true);
  });

  it('catches a received message in a conversation with nothing stored, when that conversation is checked', () => {
    const stray = msg(1, { conversation_id: 'd', message_id: 'stray' });
    const h = history([...db, stray]);
    expect(h.check(db, () => ['bob'], { conversations: ['d'] }).unexpected).toHaveLength(1);
    expect(h.check(db, () => ['bob']).unexpected).toHaveLength(0);
  });

  it('catches a received (and stored) message its sender never sent', () => {
    const forged = msg(4, { idempotency_key: 'never-sent' });
    const stored = [...db, forged];
    const r = history([...db, forged]).check(stored, () => ['bob']);
    expect(r.unexpected).toEqual(['bob got c#4 (alice/never-sent), never sent']);
    expect(r.unsent).toHaveLength(1);
  });

  it('catches one key acked as two different messages', () => {
    const h = history(db);
    h.ack('alice', 'k1', { conversation_id: C, sequence_number: 1, message_id: 'm1' });
    h.ack('alice', 'k1', { conversation_id: C, sequence_number: 1, message_id: 'm1' });
    expect(h.check(db, () => ['bob']).conflictingAcks).toEqual([]);
    h.ack('alice', 'k1', { conversation_id: C, sequence_number: 4, message_id: 'm4' });
    expect(h.check(db, () => ['bob']).conflictingAcks).toHaveLength(1);
  });

  it('catches stored messages nobody sent, for senders the history records (all of them with allSendersRecorded)', () => {
    const stored = [...db, msg(4, { idempotency_key: 'ghost' }), msg(5, { sender_id: 'carol', idempotency_key: 'setup' })];
    const h = history(stored);
    expect(h.check(stored, () => ['bob']).unsent).toEqual(['c#4 (alice/ghost) stored, never sent']);
    expect(h.check(stored, () => ['bob'], { allSendersRecorded: true }).unsent).toHaveLength(2);
  });

  it("checks each sender's order per conversation against its first send, retries included", () => {
    const h = new History();
    for (const k of ['k1', 'k2', 'k1', 'k3']) h.send('alice', C, k);
    for (const m of db) h.receive('bob', m);
    expect(h.check(db, () => ['bob']).senderOrder).toEqual([]);
    // k1 retried after k2 was stored: stored order 2, 1, 3 against send order 1, 2, 3.
    const swapped = [msg(1, { idempotency_key: 'k2' }), msg(2, { idempotency_key: 'k1' }), msg(3)];
    expect(h.check(swapped, () => []).senderOrder).toEqual(['alice/k2 stored as c#1, before k1 (#2) sent earlier']);
    // Another conversation's sends are ordered on their own.
    const other = new History();
    other.send('alice', 'd', 'k2');
    for (const k of ['k1', 'k3']) other.send('alice', C, k);
    expect(other.check(swapped, () => []).senderOrder).toEqual([]);
  });

  it('counts deliveries by how they arrived and fails fills outside the given windows', () => {
    const h = history([msg(1), [msg(2), 'fill', 1_000], [msg(3), 'fill', 5_000]]);
    h.receive('carol', msg(1), { via: 'resume' });
    h.receive('carol', msg(2));
    expect(h.arrivals()).toEqual({ live: 1, fill: 2, resume: 1, unknown: 1 });
    expect(h.check(db, () => ['bob']).fillsOutsideWindows).toEqual([]);
    expect(h.check(db, () => ['bob'], { fillWindows: [[500, 6_000]] }).fillsOutsideWindows).toEqual([]);
    const r = h.check(db, () => ['bob'], { fillWindows: [[500, 2_000]] });
    expect(r.fillsOutsideWindows).toEqual([`bob got c#3 by fill at ${new Date(5_000).toISOString()}`]);
    expect(isClean(r)).toBe(false);
  });
});

describe('history checker across a regional failover (rehomed)', () => {
  // The old home acked k1..k4 at 1..4; the new home had 1..2 when it took over (takeover 2), then
  // bob's b1 became 3 and the RPO window (k3, k4) was re-appended as 4 and 5 with the same ids.
  const newHome = [
    msg(1),
    msg(2),
    msg(3, { message_id: 'mb1', sender_id: 'bob', idempotency_key: 'b1' }),
    msg(4, { message_id: 'm3', idempotency_key: 'k3', payload: 3 }),
    msg(5, { message_id: 'm4', idempotency_key: 'k4', payload: 4 }),
  ];
  function failedOver(stored: StoredMessage[], acks: Array<[string, number, string]>) {
    const h = new History();
    for (const s of [1, 2, 3, 4]) h.send('alice', C, `k${s}`);
    for (const [key, seq, id] of acks) h.ack('alice', key, { conversation_id: C, sequence_number: seq, message_id: id });
    h.send('bob', C, 'b1');
    // alice sent k5 once the old home was gone, and it was stored before her re-appended k3, k4
    h.send('alice', C, 'k5');
    for (const m of stored) h.receive('carol', m);
    return h.check(stored, () => ['carol'], { rehomed: new Map([[C, 2]]) });
  }
  const oldAcks: Array<[string, number, string]> = [
    ['k1', 1, 'm1'],
    ['k2', 2, 'm2'],
    ['k3', 3, 'm3'],
    ['k4', 4, 'm4'],
  ];

  it("holds the old home's acks past the takeover to their message ids, re-appended past it, out of their sender's order", () => {
    const k5First = [
      ...newHome.slice(0, 3),
      msg(4, { message_id: 'm5', idempotency_key: 'k5', payload: 5 }),
      ...newHome.slice(3).map((m) => ({ ...m, sequence_number: m.sequence_number + 1 })),
    ];
    expect(isClean(failedOver(newHome, oldAcks))).toBe(true);
    expect(isClean(failedOver(k5First, oldAcks))).toBe(true);
    // without the option the same history is a loss (the acked sequences hold other messages)
    const h = new History();
    for (const [key, seq, id] of oldAcks) h.ack('alice', key, { conversation_id: C, sequence_number: seq, message_id: id });
    expect(h.check(newHome, () => []).lost).toHaveLength(2);
  });
  it('catches an RPO entry never re-appended, and one stored only at or before the takeover', () => {
    expect(failedOver(newHome.slice(0, 4), oldAcks).lost).toEqual([
      'acked alice/k4 (seq 4 in the old home, past the takeover at 2) never re-appended',
    ]);
    const early = [msg(1), msg(2, { message_id: 'm3', idempotency_key: 'k3', payload: 3 }), ...newHome.slice(2)];
    expect(failedOver(early, oldAcks).lost).toContain('acked alice/k3 (seq 3 in the old home, past the takeover at 2) never re-appended');
  });
  it('still holds acks at or before the takeover to their sequence', () => {
    expect(failedOver(newHome, [...oldAcks, ['k2', 2, 'm2']]).lost).toEqual([]);
    expect(failedOver(newHome, [['k2', 2, 'other'], ...oldAcks.slice(2)]).lost).toEqual(['acked alice/k2 (seq 2) not stored as acked']);
  });
});
