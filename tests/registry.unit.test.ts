import { describe, expect, it } from 'vitest';
import { ConnectionRegistry } from '../gateway/registry.js';
import type { Connection } from '../gateway/connection.js';
import type { Envelope } from '../common/protocol.js';

/** A stand-in with the parts of Connection the registry calls. */
function fakeConnection(userId: string, subscribed: string[] = []) {
  const got: string[] = [];
  const conn = {
    userId,
    deliverMessage: (_env: Envelope, frame: string) => void got.push(frame),
    sendFrame: (frame: string) => void got.push(frame),
    isSubscribed: (c: string) => subscribed.includes(c),
    join: (c: string, seq: number) => void got.push(`join ${c} ${seq}`),
  };
  return { conn: conn as unknown as Connection, got };
}

const env = { conversation_id: 'c', sequence_number: 1 } as unknown as Envelope;

describe('ConnectionRegistry', () => {
  it('reaches every connection of a user, one or many, and forgets each once', () => {
    const r = new ConnectionRegistry();
    const a1 = fakeConnection('a', ['c']);
    const a2 = fakeConnection('a');
    const a3 = fakeConnection('a', ['c']);
    const b = fakeConnection('b', ['c']);
    for (const x of [a1, a2, a3, b, a1]) r.add(x.conn);
    expect(r.size).toBe(4);
    expect(r.deliverMessage(['a', 'b', 'nobody'], env)).toBe(4);
    r.deliverFrame(['a', 'b'], 'typing', { exceptUser: 'b', conversationId: 'c' });
    expect(a1.got).toHaveLength(2);
    expect(a2.got).toHaveLength(1); // not subscribed to c
    expect(b.got).toHaveLength(1); // excepted
    r.remove(a2.conn);
    r.remove(a3.conn);
    r.remove(a3.conn);
    expect(r.size).toBe(2);
    r.join(['a', 'b'], 'd', 7);
    expect(a1.got.at(-1)).toBe('join d 7');
    expect(a3.got.at(-1)).not.toBe('join d 7');
    expect([...r.all()]).toEqual([a1.conn, b.conn]);
    r.remove(a1.conn);
    expect(r.hasUser('a')).toBe(false);
    r.add(a2.conn);
    expect(r.deliverMessage(['a'], env)).toBe(1);
    expect(r.size).toBe(2);
  });
});
