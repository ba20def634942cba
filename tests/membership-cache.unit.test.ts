import { describe, expect, it } from 'vitest';
import { MembershipCache } from '../common/membership.js';

describe('membership cache', () => {
  it('shares one load per conversation and keeps at most maxEntries', async () => {
    let loads = 0;
    const cache = new MembershipCache(
      {
        audienceOf: async (c) => {
          loads++;
          return { large: false, members: [`${c}-u`] };
        },
      },
      2,
    );
    const [a, b] = await Promise.all([cache.members('c1'), cache.members('c1')]);
    expect(a).toBe(b);
    expect(loads).toBe(1);
    await cache.members('c2');
    await cache.members('c3');
    expect(cache.size).toBe(2);
    await cache.members('c1');
    expect(loads).toBe(4);
  });

  it('a members_added event applies to the cached set; a load that raced it is not stored', async () => {
    let release!: (v: { large: boolean; members: string[] }) => void;
    const cache = new MembershipCache({ audienceOf: () => new Promise((r) => (release = r)) }, 10);
    const stale = cache.members('c');
    cache.add('c', ['new'], false, 1);
    release({ large: false, members: ['old'] }); // read before the insert committed
    expect([...(await stale)]).toEqual(['old']);
    let loads = 0;
    (cache as unknown as { source: { audienceOf: () => Promise<unknown> } }).source.audienceOf = async () => {
      loads++;
      return { large: false, members: ['old', 'new'] };
    };
    expect([...(await cache.members('c'))].sort()).toEqual(['new', 'old']);
    expect(loads).toBe(1);
    cache.add('c', ['third'], false, 2);
    expect((await cache.members('c')).has('third')).toBe(true);
  });

  it('audiences reads the conversations neither cached nor loading in one query, and shares loads in flight', async () => {
    const batches: string[][] = [];
    const singles: string[] = [];
    let releaseSingle!: (v: { large: boolean; members: string[] }) => void;
    const cache = new MembershipCache(
      {
        audienceOf: (c) => {
          singles.push(c);
          return new Promise((r) => (releaseSingle = r));
        },
        audiencesOf: async (ids) => {
          batches.push([...ids]);
          return new Map(ids.map((c) => [c, { large: c === 'big', members: c === 'big' ? [] : [`${c}-u`], seq: 7 }]));
        },
      },
      10,
    );
    const loading = cache.members('c1'); // a single load in flight: shared, not read again
    const all = cache.audiences(['c1', 'c2', 'c3', 'big', 'c2']);
    releaseSingle({ large: false, members: ['c1-u'] });
    const got = await all;
    expect(batches).toEqual([['c2', 'c3', 'big']]);
    expect(singles).toEqual(['c1']);
    expect([...got.keys()].sort()).toEqual(['big', 'c1', 'c2', 'c3']);
    expect(got.get('big')).toEqual({ large: true, seq: 7 });
    expect(got.get('c3')).toEqual({ large: false, members: new Set(['c3-u']), seq: 7 });
    expect([...(await loading)]).toEqual(['c1-u']);
    // Now cached: no more reads.
    await cache.audiences(['c1', 'c2', 'c3', 'big']);
    await cache.members('c2');
    expect(batches.length).toBe(1);
    expect(singles.length).toBe(1);
  });

  it('a members_added event during a batched load wins over what the load read', async () => {
    let release!: (m: Map<string, { large: boolean; members: string[]; seq: number }>) => void;
    const cache = new MembershipCache(
      {
        audienceOf: async () => ({ large: false, members: ['fresh'], seq: 9 }),
        audiencesOf: () => new Promise((r) => (release = r)),
      },
      10,
    );
    const all = cache.audiences(['a', 'b']);
    cache.add('a', ['new'], false, 3);
    release(
      new Map([
        ['a', { large: false, members: ['old'], seq: 2 }],
        ['b', { large: false, members: ['x'], seq: 2 }],
      ]),
    );
    await all;
    // The superseded load was not stored: the next read is fresh.
    expect([...(await cache.members('a'))]).toEqual(['fresh']);
    expect([...(await cache.members('b'))]).toEqual(['x']);
  });

  it('isMember re-reads once when the cached set lacks the user', async () => {
    let members = ['a'];
    const cache = new MembershipCache({ audienceOf: async () => ({ large: false, members: [...members] }) }, 10);
    expect((await cache.members('c')).has('b')).toBe(false);
    members = ['a', 'b'];
    expect((await cache.isMember('c', 'b'))?.has('b')).toBe(true);
  });

  it('a large room is known as such, never by member list; a members_added event can make a room large', async () => {
    const cache = new MembershipCache({ audienceOf: async (c) => ({ large: c === 'big', members: c === 'big' ? [] : ['a'] }) }, 10);
    expect(await cache.audience('big')).toMatchObject({ large: true });
    expect(await cache.isMember('big', 'a')).toBeNull();
    expect([...(await cache.members('small'))]).toEqual(['a']);
    cache.add('small', ['b'], true, 1);
    expect(await cache.audience('small')).toEqual({ large: true, seq: 1 });
    expect((await cache.members('small')).size).toBe(0);
  });

  it('membership changes apply in timeline order: one the loaded state already reflects (a replay, a redelivery) changes nothing', async () => {
    const cache = new MembershipCache({ audienceOf: async () => ({ large: false, members: ['a', 'b'], seq: 10 }) }, 10);
    expect([...(await cache.members('c'))]).toEqual(['a', 'b']);
    // b was removed at #8 and added again at #9 (both before the load at #10): a replay of them is no news.
    cache.remove('c', ['b'], 8);
    cache.add('c', ['x'], false, 9);
    expect([...(await cache.members('c'))]).toEqual(['a', 'b']);
    cache.remove('c', ['b'], 11);
    expect([...(await cache.members('c'))]).toEqual(['a']);
    // A redelivered old addition does not put the removed member back.
    cache.add('c', ['b'], false, 9);
    expect([...(await cache.members('c'))]).toEqual(['a']);
    cache.add('c', ['b'], false, 12);
    expect([...(await cache.members('c'))].sort()).toEqual(['a', 'b']);
  });
});
