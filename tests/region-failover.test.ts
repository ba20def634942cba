/**
 * Regional failover, the data layer (docs/multi-region.md): region a is lost with entries it
 * acknowledged and never mirrored (the RPO window); region b takes over (npm run region --
 * failover) and numbers the conversation after the last entry it had; when a returns, its unmirrored
 * entries reach b and are re-appended with new numbers (same message ids and keys; one a client
 * already retried in b is not added twice), and a's copy follows the new home. Nothing acknowledged
 * is lost, nothing is stored twice, and a can no longer number the conversation. Real PostgreSQL,
 * two databases standing for two regions; the streams are carried by hand (drainStream).
 */
import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Sql } from '../common/db.js';
import { createLogger } from '../common/log.js';
import { createMirrorApplier } from '../delivery/mirror/applier.js';
import { failover } from '../delivery/mirror/failover.js';
import { repoRoot } from './harness/proc.js';
import { drainStream, regionDb, snapshot, type RegionDb } from './harness/regions.js';

const history = async (sql: Sql, conv: string) =>
  (
    await sql<{ sequence: number; id: string; sender_id: string; idempotency_key: string }[]>`
      SELECT sequence::int AS sequence, id, sender_id, idempotency_key FROM messages WHERE conversation_id = ${conv} ORDER BY sequence`
  ).map((r) => ({ ...r }));

describe('regional failover: a lost with unmirrored entries, b takes over, a returns (real PostgreSQL)', () => {
  let a: RegionDb;
  let b: RegionDb;
  const log = createLogger({ level: 'silent', nodeId: 'failover-test', role: 'mirror' });
  beforeAll(async () => {
    [a, b] = await Promise.all([regionDb('a'), regionDb('b')]);
  });
  afterAll(async () => {
    await a?.sql.end({ timeout: 1 });
    await b?.sql.end({ timeout: 1 });
  });

  it('nothing acknowledged is lost or stored twice; b numbers after its last entry; a follows the new home and is fenced', async () => {
    const [alice, bob] = [randomUUID(), randomUUID()];
    const conv = (await a.store.createConversation(alice, [bob], 'ha', null)).conversation_id;
    const acked = new Map<string, { region: string; sequence: number; message_id: string }>();
    const send = async (r: RegionDb, name: string, who: string, key: string) => {
      const res = await r.store.sendMessage(who, conv, key, { key }, 12, null);
      acked.set(`${who}/${key}`, { region: name, sequence: res.envelope.sequence_number, message_id: res.envelope.message_id });
      return res;
    };
    for (let k = 1; k <= 5; k++) await send(a, 'a', k % 2 ? alice : bob, `m${k}`);
    const aToB = createMirrorApplier({ sql: b.sql, sourceRegion: 'a', log, queryTimeoutMs: 10_000 });
    const bToA = createMirrorApplier({ sql: a.sql, sourceRegion: 'b', log, queryTimeoutMs: 10_000 });
    expect((await aToB.apply(await drainStream(a.sql))).applied).toBeGreaterThan(5);

    // The RPO window: a acknowledges three more, and is lost before they are mirrored.
    await send(a, 'a', alice, 'm6');
    await send(a, 'a', bob, 'm7');
    await send(a, 'a', alice, 'm8');
    const unmirrored = await drainStream(a.sql);
    expect(unmirrored.filter((r) => r.type === 'message.created')).toHaveLength(3);

    // Failover: b is the home now, after the last entry it had (5).
    expect(await failover(b.sql, { from: 'a', to: 'b', queryTimeoutMs: 10_000, outboxMode: 'table' })).toEqual({ conversations: 1 });
    const [homeInB] = await b.sql`SELECT home_region, home_epoch, last_seq::int AS last_seq FROM conversations WHERE id = ${conv}`;
    expect(homeInB).toEqual({ home_region: null, home_epoch: 1, last_seq: 5 });
    expect(await failover(b.sql, { from: 'a', to: 'b', queryTimeoutMs: 10_000, outboxMode: 'table' })).toEqual({ conversations: 0 });
    // b takes sends at once. Bob, whose m7 was acknowledged by a but never mirrored, retries it in b
    // (same key, as the SDK does when its region changes); and writes something new.
    const retried = await send(b, 'b', bob, 'm7');
    expect(retried.envelope.sequence_number).toBe(6);
    await send(b, 'b', bob, 'm9');

    // a returns: its unmirrored entries reach b (twice: a redelivery) and are re-appended once each,
    // except m7, which b already has under bob's key.
    const first = await aToB.apply(unmirrored);
    expect(first).toMatchObject({ reappended: 2, duplicate: 1, homedHere: 0 });
    expect(await aToB.apply(unmirrored)).toMatchObject({ reappended: 0, homedHere: 0 });
    const finalHistory = await history(b.sql, conv);
    expect(finalHistory.map((m) => [m.sequence, m.idempotency_key])).toEqual([
      [1, 'm1'],
      [2, 'm2'],
      [3, 'm3'],
      [4, 'm4'],
      [5, 'm5'],
      [6, 'm7'],
      [7, 'm9'],
      [8, 'm6'],
      [9, 'm8'],
    ]);
    // Re-appended with the message ids a acknowledged.
    for (const key of ['m6', 'm8'])
      expect(finalHistory.find((m) => m.idempotency_key === key)!.id).toBe(acked.get(`${alice}/${key}`)!.message_id);
    // Every acknowledged send is stored once in the new home.
    for (const [senderKey] of acked) {
      const [sender, key] = senderKey.split('/');
      expect(
        finalHistory.filter((m) => m.sender_id === sender && m.idempotency_key === key),
        senderKey,
      ).toHaveLength(1);
    }

    // a applies b's stream (the re-homing, b's entries, the re-appended ones): its copy is b's history.
    const bStream = await drainStream(b.sql);
    const applied = await bToA.apply(bStream);
    expect(applied).toMatchObject({ unknownConversation: 0, invalid: 0, gaps: 0 });
    expect(await history(a.sql, conv)).toEqual(finalHistory);
    const [homeInA] = await a.sql`SELECT home_region, home_epoch, last_seq::int AS last_seq FROM conversations WHERE id = ${conv}`;
    expect(homeInA).toEqual({ home_region: 'b', home_epoch: 1, last_seq: 9 });
    // a cannot number the conversation any more.
    await expect(a.store.sendMessage(alice, conv, 'm10', { key: 'm10' }, 13, null)).rejects.toMatchObject({ reason: 'home_elsewhere' });
    // A client that saw a's m8 at 8 is rewound to the takeover point, in either region (v1.4); one
    // whose position is the new numbering's (m6 at 8), or at or below the takeover point, is not.
    const m8 = acked.get(`${alice}/m8`)!.message_id;
    const m6 = acked.get(`${alice}/m6`)!.message_id;
    for (const r of [a, b]) {
      expect(await r.store.failoverRewinds(new Map([[conv, 8]]), new Map([[conv, m8]])), r.name).toEqual(new Map([[conv, 5]]));
      expect(await r.store.failoverRewinds(new Map([[conv, 8]]), new Map([[conv, m6]])), r.name).toEqual(new Map());
      expect(await r.store.failoverRewinds(new Map([[conv, 5]]), new Map([[conv, m8]])), r.name).toEqual(new Map());
    }
    // Applying b's stream again changes nothing.
    expect(await bToA.apply(bStream)).toMatchObject({ applied: 0, reappended: 0 });
    expect(await history(a.sql, conv)).toEqual(finalHistory);
  });

  it('non-message entries of the RPO window (an edit, a delete, members, a role, a read receipt): both copies end equal to the new home', async () => {
    const [alice, bob, carol] = [randomUUID(), randomUUID(), randomUUID()];
    const conv = (await a.store.createConversation(alice, [bob], 'rpo', null)).conversation_id;
    const m1 = await a.store.sendMessage(alice, conv, 'n1', { text: 'first' }, 17, null);
    const m2 = await a.store.sendMessage(bob, conv, 'n2', { text: 'second' }, 18, null);
    await a.store.sendMessage(alice, conv, 'n3', { text: 'third' }, 17, null);
    const aToB = createMirrorApplier({ sql: b.sql, sourceRegion: 'a', log, queryTimeoutMs: 10_000 });
    const bToA = createMirrorApplier({ sql: a.sql, sourceRegion: 'b', log, queryTimeoutMs: 10_000 });
    await aToB.apply(await drainStream(a.sql));

    // The RPO window holds every kind of entry, and a receipt, acknowledged by a and never mirrored.
    await a.store.editMessage(alice, conv, m1.envelope.message_id, 'e-a', { text: 'edited in a' }, 23, null);
    await a.store.deleteMessage(bob, conv, m2.envelope.message_id, 'd-a', null);
    await a.store.addMembers(alice, conv, [carol], null, 'add-carol');
    await a.store.setRole(alice, conv, carol, 'admin', null, 'role-carol');
    await a.store.markRead(bob, conv, 7, null);
    await a.store.sendMessage(carol, conv, 'n4', { text: 'carol in a' }, 22, null);
    const unmirrored = await drainStream(a.sql);
    expect(unmirrored.length).toBeGreaterThanOrEqual(6);
    const inA = await snapshot(a.sql, conv);
    expect(inA.members).toContainEqual({ user_id: carol, role: 'admin' });

    expect(await failover(b.sql, { from: 'a', to: 'b', queryTimeoutMs: 10_000, outboxMode: 'table' })).toEqual({ conversations: 1 });
    // b, the home now, edits the same message before a returns, and bob writes.
    await b.store.editMessage(alice, conv, m1.envelope.message_id, 'e-b', { text: 'edited in b' }, 23, null);
    await b.store.sendMessage(bob, conv, 'n5', { text: 'bob in b' }, 20, null);

    // a returns: b re-appends a's window; a follows b's stream (the re-homing, then b's entries).
    expect(await aToB.apply(unmirrored)).toMatchObject({ reappended: 5, applied: 1, invalid: 0 });
    expect(await bToA.apply(await drainStream(b.sql))).toMatchObject({ unknownConversation: 0, invalid: 0, gaps: 0 });
    const inB = await snapshot(b.sql, conv);
    expect(await snapshot(a.sql, conv)).toEqual(inB);
    // The new home's order decides: a's edit, re-appended after b's, is the text; bob's message is
    // deleted; carol is an admin; bob's receipt (a's numbering, 7) never marks more than he saw.
    const byId = new Map(inB.entries.map((e) => [(e as { message_id: string }).message_id, e as Record<string, unknown>]));
    expect(byId.get(m1.envelope.message_id)).toMatchObject({ payload: { text: 'edited in a' } });
    expect(byId.get(m2.envelope.message_id)).toMatchObject({ payload: null });
    expect(inB.members).toContainEqual({ user_id: carol, role: 'admin' });
    expect(inB.conversation).toMatchObject({ last_seq: 10, member_count: 3 });
  });

  it("npm run region -- failover re-homes a lost region's conversations in the region it runs against, and refuses bad arguments", async () => {
    const carol = randomUUID();
    const conv = (await a.store.createConversation(carol, [], null, null)).conversation_id;
    await createMirrorApplier({ sql: b.sql, sourceRegion: 'a', log, queryTimeoutMs: 10_000 }).apply(await drainStream(a.sql));
    const cli = join(repoRoot(fileURLToPath(import.meta.url)), 'dist', 'delivery', 'mirror', 'region-cli.js');
    const run = (args: string[], region = 'b') =>
      spawnSync(process.execPath, [cli, ...args], {
        env: { PATH: process.env.PATH ?? '', DATABASE_URL: b.url, REALCHAT_REGION: region },
        encoding: 'utf8',
        timeout: 60_000,
      });
    const ok = run(['failover', '--from', 'a']);
    expect([ok.status, ok.stderr]).toEqual([0, '']);
    expect(JSON.parse(ok.stdout)).toEqual({ from: 'a', to: 'b', conversations: 1 });
    expect((await b.sql`SELECT home_region FROM conversations WHERE id = ${conv}`)[0]).toEqual({ home_region: null });
    for (const [args, region] of [
      [['failover'], 'b'],
      [['failover', '--from', 'b'], 'b'],
      [['failover', '--from', 'a', '--to', 'c'], 'b'],
      [['rewind', '--from', 'a'], 'b'],
    ] as const) {
      const bad = run([...args], region);
      expect([args.join(' '), bad.status]).toEqual([args.join(' '), 2]);
    }
  });
});
