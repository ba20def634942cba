/** A connection's send fences (gateway/send-fence.ts): a retriable refusal holds back the later sends of its conversation. */
import { describe, expect, it } from 'vitest';
import { AppError } from '../common/errors.js';
import { FENCE_TTL_MS, MAX_FENCES, SendFences } from '../gateway/send-fence.js';

const unavailable = () => new AppError('unavailable', 'database down');

function fences() {
  const clock = { ms: 1_000 };
  return { f: new SendFences(() => clock.ms), clock };
}

/** The refusal admit() throws, or null when the send may run. */
function admitted(f: SendFences, t: ReturnType<SendFences['ticket']>): AppError | null {
  try {
    f.admit(t);
    return null;
  } catch (err) {
    return err as AppError;
  }
}

describe('send fences', () => {
  it('refuses the later sends of a conversation until the refused key is sent again', () => {
    const { f } = fences();
    const k1 = f.ticket('a', 'k1');
    const k2 = f.ticket('a', 'k2');
    const b1 = f.ticket('b', 'b1');
    expect(admitted(f, k1)).toBeNull();
    f.refused(k1, unavailable());
    const err = admitted(f, k2);
    expect(err).toMatchObject({ code: 'unavailable', reason: 'after_refused', retriable: true });
    expect(err!.message).toContain('"k1"');
    // The fenced refusal does not move the fence.
    f.refused(k2, err);
    expect(admitted(f, b1)).toBeNull();
    expect(admitted(f, f.ticket('a', 'k3'))).not.toBeNull();
    // The retry of k1 lifts it; k1 refused again fences anew.
    const k1again = f.ticket('a', 'k1');
    expect(admitted(f, k1again)).toBeNull();
    f.refused(k1again, unavailable());
    expect(admitted(f, f.ticket('a', 'k2'))).not.toBeNull();
    expect(admitted(f, f.ticket('a', 'k1'))).toBeNull();
    expect(admitted(f, f.ticket('a', 'k2'))).toBeNull();
    // k3 was turned away too: the fence waits for it before it lifts.
    expect(f.size).toBe(1);
    expect(admitted(f, f.ticket('a', 'k3'))).toBeNull();
    expect(f.size).toBe(0);
  });

  it('the sends it turned away come back first, in their order: a new send cannot overtake them', () => {
    const { f } = fences();
    const r1 = f.ticket('a', 'r1');
    expect(admitted(f, r1)).toBeNull();
    f.refused(r1, unavailable());
    expect(admitted(f, f.ticket('a', 'r2'))).not.toBeNull();
    expect(admitted(f, f.ticket('a', 'r3'))).not.toBeNull();
    // r1 is sent again and stored: r2 and r3 still wait for their retries, so a new r4 is refused
    // (with the head, r2, named) and queued behind them.
    expect(admitted(f, f.ticket('a', 'r1'))).toBeNull();
    const r4 = admitted(f, f.ticket('a', 'r4'));
    expect(r4).toMatchObject({ reason: 'after_refused' });
    expect(r4!.message).toContain('"r2"');
    // Out of order: r3 before r2 is refused again.
    expect(admitted(f, f.ticket('a', 'r3'))).not.toBeNull();
    // r2 admitted, refused again (rate limited): it stays at the head.
    const r2 = f.ticket('a', 'r2');
    expect(admitted(f, r2)).toBeNull();
    f.refused(r2, new AppError('rate_limited', 'slow down'));
    expect(admitted(f, f.ticket('a', 'r3'))).not.toBeNull();
    for (const k of ['r2', 'r3', 'r4']) expect(admitted(f, f.ticket('a', k)), k).toBeNull();
    expect(f.size).toBe(0);
  });

  it('only retriable refusals fence', () => {
    const { f } = fences();
    for (const code of ['forbidden', 'conflict', 'invalid_frame', 'not_found', 'payload_too_large'] as const) {
      f.refused(f.ticket('a', code), new AppError(code, code));
    }
    expect(admitted(f, f.ticket('a', 'next'))).toBeNull();
    f.refused(f.ticket('a', 'r'), new AppError('rate_limited', 'slow down'));
    expect(admitted(f, f.ticket('a', 'next'))).not.toBeNull();
    const { f: g } = fences();
    // An unexpected error is answered `internal`, which clients retry.
    g.refused(g.ticket('a', 'i'), new Error('bug'));
    expect(admitted(g, g.ticket('a', 'next'))).not.toBeNull();
  });

  it('a send refused at arrival (too many in flight) fences only the sends that arrived after it', () => {
    const { f } = fences();
    const early = f.ticket('a', 'early');
    const overflow = f.ticket('a', 'overflow');
    const late = f.ticket('a', 'late');
    f.refused(overflow, new AppError('rate_limited', 'too many in flight'));
    expect(admitted(f, early)).toBeNull();
    expect(admitted(f, late)).not.toBeNull();
    // An earlier send refused afterwards takes the fence: its retry must come first.
    f.refused(early, unavailable());
    expect(admitted(f, f.ticket('a', 'overflow'))).toMatchObject({ reason: 'after_refused' });
    expect(admitted(f, f.ticket('a', 'early'))).toBeNull();
    expect(admitted(f, f.ticket('a', 'overflow'))).toBeNull();
  });

  it('a fence whose key never comes back expires', () => {
    const { f, clock } = fences();
    f.refused(f.ticket('a', 'k1'), unavailable());
    clock.ms += FENCE_TTL_MS;
    expect(admitted(f, f.ticket('a', 'k2'))).not.toBeNull();
    clock.ms += 1;
    expect(admitted(f, f.ticket('a', 'k2'))).toBeNull();
  });

  it(`holds at most ${MAX_FENCES} fences, dropping expired ones first, then the oldest`, () => {
    const { f, clock } = fences();
    f.refused(f.ticket('old', 'k'), unavailable());
    clock.ms += FENCE_TTL_MS + 1;
    for (let i = 0; i < MAX_FENCES; i++) f.refused(f.ticket(`c${i}`, 'k'), unavailable());
    expect(f.size).toBe(MAX_FENCES);
    expect(admitted(f, f.ticket('c0', 'other'))).not.toBeNull();
    f.refused(f.ticket('one-more', 'k'), unavailable());
    expect(f.size).toBe(MAX_FENCES);
    expect(admitted(f, f.ticket('c0', 'other'))).toBeNull();
    expect(admitted(f, f.ticket('one-more', 'other'))).not.toBeNull();
  });
});
