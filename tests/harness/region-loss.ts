/**
 * Clients and scenarios shared by the multi-region test and measurements (tests/two-regions*.test.ts,
 * perf/regions.measure.ts): a WebSocket client that timestamps every frame, conversation set-up,
 * and a region lost mid-stream with the automatic failover and its return, checked across regions.
 */
import postgres from 'postgres';
import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import { History, type HistoryReport } from './history.js';
import { createConversationAt, storedMessages } from './queries.js';
import { startRegionPair, type RegionPair, type RegionStack } from './region-pair.js';

export interface Stamped {
  at: number;
  frame: Record<string, any>;
}

/** A WebSocket client that timestamps every frame (performance.now(), one clock for the whole run). */
export class RegionClient {
  readonly frames: Stamped[] = [];
  private readonly waiters = new Map<string, (f: Stamped) => void>();
  private constructor(private readonly ws: WebSocket) {
    ws.on('message', (data) => {
      const s: Stamped = { at: performance.now(), frame: JSON.parse(data.toString()) };
      this.frames.push(s);
      const key = s.frame.idempotency_key ?? s.frame.ref;
      if ((s.frame.type === 'ack' || s.frame.type === 'error') && key) this.waiters.get(key)?.(s);
    });
  }
  /** `resume`: hello's fields of that name (`resume`, `resume_last_ids`). */
  static async connect(url: string, token: string, resume: Record<string, unknown> = {}): Promise<RegionClient> {
    const ws = new WebSocket(url, { handshakeTimeout: 5000 });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    const c = new RegionClient(ws);
    ws.send(JSON.stringify({ type: 'hello', token, ...resume }));
    const t0 = Date.now();
    while (!c.frames.some((f) => f.frame.type === 'welcome')) {
      const refused = c.frames.find((f) => f.frame.type === 'error');
      if (refused || Date.now() - t0 > 10_000) throw new Error(`hello refused: ${JSON.stringify(refused?.frame ?? 'no welcome')}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    return c;
  }
  /** Sends; resolves with the answer (ack or error) and when it came, or null after timeoutMs. */
  send(conversationId: string, key: string, payload: unknown, timeoutMs = 15_000): Promise<{ sentAt: number; answer: Stamped | null }> {
    const sentAt = performance.now();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiters.delete(key);
        resolve({ sentAt, answer: null });
      }, timeoutMs);
      this.waiters.set(key, (s) => {
        clearTimeout(timer);
        this.waiters.delete(key);
        resolve({ sentAt, answer: s });
      });
      this.ws.send(JSON.stringify({ type: 'send', conversation_id: conversationId, idempotency_key: key, payload }));
    });
  }
  /** message id -> when it first arrived, and how. */
  arrivals(): Map<string, { at: number; via: string; sequence: number; conversation: string }> {
    const out = new Map<string, { at: number; via: string; sequence: number; conversation: string }>();
    for (const { at, frame } of this.frames)
      if (frame.type === 'message' && !out.has(frame.message.message_id))
        out.set(frame.message.message_id, {
          at,
          via: frame.via,
          sequence: frame.message.sequence_number,
          conversation: frame.message.conversation_id,
        });
    return out;
  }
  messageFrames(): Array<Record<string, any>> {
    return this.frames.filter((f) => f.frame.type === 'message').map((f) => f.frame.message);
  }
  close(): void {
    this.ws.terminate();
  }
}

export async function conversations(pair: RegionPair, home: RegionStack, owner: string, members: string[], n: number): Promise<string[]> {
  const token = await pair.issueToken(owner);
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push(await createConversationAt(home.port, token, members));
  return out;
}

/** Waits until region r's database holds every one of the conversations (their copies mirrored). */
export async function mirrored(r: RegionStack, convs: string[]): Promise<void> {
  const sql = postgres(r.databaseUrl, { max: 1, onnotice: () => {} });
  try {
    const t0 = Date.now();
    for (;;) {
      const [row] = await sql`SELECT count(*)::int AS n FROM conversations WHERE id = ANY(${convs}::uuid[])`;
      if (row!.n === convs.length) return;
      if (Date.now() - t0 > 60_000) throw new Error(`only ${row!.n} of ${convs.length} conversations reached region ${r.name}`);
      await new Promise((res) => setTimeout(res, 200));
    }
  } finally {
    await sql.end();
  }
}

export interface RegionLossResult {
  rtt_ms: number;
  failover_after_ms: number;
  /** Acknowledged by region a before the kill / after it (none can be: a is gone). */
  acked_before_kill: number;
  /** kill -> the first send from b to a-homed conversations that is accepted (b is home now). */
  rto_ms: number;
  /** Acknowledged in a but not in b's copy when b took over. */
  rpo_entries: number;
  /** After a returned: acknowledged messages stored in b (the new home) exactly once, by key. */
  acked_lost: number;
  acked_stored_twice: number;
  /** Message ids delivered more than once to b's client; sequences out of order there. */
  duplicates_at_client: number;
  reordered_at_client: number;
  /** Conversations where a's client had seen entries past b's takeover point, and what was wrong with their rewinds (v1.4). */
  rewinds_expected: number;
  rewind_problems: string[];
  /** Restarting a's broker and roles (its return). */
  return_ms: number;
  /**
   * A send from a client of the returned region to one of the conversations b took over, before
   * a's mirror applier runs (only the gateway's catch-up can know of the failover then): where it
   * was stored.
   */
  send_after_return: string;
  /** a's roles back -> every RPO entry re-appended in b. */
  rpo_recovered_ms: number | null;
  /**
   * The history checker on b's history (rehomed at each takeover): every send and ack of both
   * users, b's client's stream and alice's (her client of a up to the takeover, then her client
   * moved to b). Clean: nothing lost, duplicated, reordered, gapped or divergent for either.
   */
  history: HistoryReport;
  /** Deliveries checked, by how they arrived. */
  arrivals: Record<string, number>;
  /** a's copy of the conversations equals b's history once a applied b's stream. */
  copies_equal: boolean;
}

/**
 * Region a is killed (kill -9 of its roles and broker; its database stays, as a disk would) while
 * its client streams `rate` sends a second into a's conversations; b's client sends to one of them
 * until b has taken it over (RTO); a returns and b re-appends what a had acknowledged but not
 * mirrored (RPO). Every acknowledged message must end up stored once in b.
 */
export async function regionLoss(opts: {
  rttMs: number;
  failoverAfterMs: number;
  rate: number;
  conversations: number;
  /** Cut the link this long before the kill, so that much of a's stream is surely not mirrored (an RPO window to recover). */
  cutBeforeKillMs?: number;
}): Promise<RegionLossResult> {
  const { rttMs, rate: RATE, conversations: CONVERSATIONS, failoverAfterMs: FAILOVER_AFTER_MS } = opts;
  const pair = await startRegionPair({ rttMs, failoverAfterMs: FAILOVER_AFTER_MS });
  const clients: RegionClient[] = [];
  const bSql = postgres(pair.b.databaseUrl, { max: 1, onnotice: () => {} });
  try {
    const [alice, bob] = [randomUUID(), randomUUID()];
    const convs = await conversations(pair, pair.a, alice, [bob], CONVERSATIONS);
    await mirrored(pair.b, convs);
    const a = await RegionClient.connect(pair.a.wsUrl, await pair.issueToken(alice));
    const b = await RegionClient.connect(pair.b.wsUrl, await pair.issueToken(bob));
    clients.push(a, b);
    // Alice streams into her home region; a is killed in the middle of it.
    const acked: Array<{ key: string; conv: string; id: string }> = [];
    const h = new History();
    let stop = false;
    const streaming = (async () => {
      for (let i = 0; !stop; i++) {
        const conv = convs[i % convs.length]!;
        const key = `a-${i}`;
        h.send(alice, conv, key);
        const r = await a.send(conv, key, { i }, 3000);
        if (r.answer?.frame.type === 'ack') {
          acked.push({ key, conv, id: r.answer.frame.message_id });
          h.ack(alice, key, r.answer.frame as never);
        } else if (!r.answer) break;
        await new Promise((res) => setTimeout(res, 1000 / RATE));
      }
    })();
    await new Promise((r) => setTimeout(r, 5000));
    if (opts.cutBeforeKillMs) {
      await pair.partition();
      await new Promise((r) => setTimeout(r, opts.cutBeforeKillMs));
    }
    const killedAt = performance.now();
    await pair.killRegion('a');
    // a is gone: the link to it may as well be up again (b's probes then find nothing, as in a real loss).
    if (opts.cutBeforeKillMs) await pair.heal();
    stop = true;
    await streaming;
    const ackedBeforeKill = acked.length;
    // Bob sends to one of a's conversations until it is accepted: refused home_unreachable until
    // b's mirror applier takes the conversations over. The same key each time, as the SDK retries
    // (a new key would be refused `after_refused` behind the first).
    let rtoMs = Number.NaN;
    h.send(bob, convs[0]!, 'b-rto');
    for (let i = 0; ; i++) {
      const r = await b.send(convs[0]!, 'b-rto', { i }, 5000);
      if (r.answer?.frame.type === 'ack') {
        h.ack(bob, 'b-rto', r.answer.frame as never);
        rtoMs = r.answer.at - killedAt;
        break;
      }
      if (performance.now() - killedAt > 120_000) throw new Error('no failover within 120 s');
      await new Promise((res) => setTimeout(res, 100));
    }
    // Alice's client of a, moved to b (as a load balancer would once a is gone), resumes from
    // positions in a's numbering with the message id at each: where it saw entries past b's
    // takeover point it is rewound there (v1.4), and b's entries follow from the next number.
    const seenInA = new Map<string, { seq: number; id: string }>();
    for (const m of a.messageFrames())
      if ((seenInA.get(m.conversation_id)?.seq ?? 0) < m.sequence_number)
        seenInA.set(m.conversation_id, { seq: m.sequence_number, id: m.message_id });
    const takeovers = new Map(
      (
        await bSql`SELECT conversation_id::text AS c, max(takeover_seq)::int AS t FROM region_failovers
        WHERE conversation_id = ANY(${convs}::uuid[]) GROUP BY conversation_id`
      ).map((r) => [r.c as string, r.t as number]),
    );
    const moved = await RegionClient.connect(pair.b.wsUrl, await pair.issueToken(alice), {
      resume: Object.fromEntries([...seenInA].map(([c, v]) => [c, v.seq])),
      resume_last_ids: Object.fromEntries([...seenInA].map(([c, v]) => [c, v.id])),
    });
    clients.push(moved);
    await new Promise((r) => setTimeout(r, 1500));
    const expectedRewinds = [...seenInA].filter(([c, v]) => v.seq > (takeovers.get(c) ?? Number.MAX_SAFE_INTEGER)).map(([c]) => c);
    const rewindProblems: string[] = [];
    const rewound = moved.frames.filter((f) => f.frame.type === 'rewind').map((f) => f.frame);
    for (const c of convs) {
      const r = rewound.find((f) => f.conversation_id === c);
      const expected = expectedRewinds.includes(c);
      if (!expected && r) rewindProblems.push(`${c}: rewound though its position was b's`);
      if (!expected) continue;
      if (!r) rewindProblems.push(`${c}: no rewind (saw ${seenInA.get(c)!.seq}, takeover ${takeovers.get(c)})`);
      else if (r.after_sequence !== takeovers.get(c))
        rewindProblems.push(`${c}: rewound to ${r.after_sequence}, takeover ${takeovers.get(c)}`);
      const first = moved.messageFrames().find((m) => m.conversation_id === c);
      if (first && first.sequence_number !== takeovers.get(c)! + 1)
        rewindProblems.push(`${c}: resumed from ${first.sequence_number}, not ${takeovers.get(c)! + 1}`);
    }
    // What b had of a's acknowledged messages at the takeover (the conversations are b's now).
    const keysInB = async () =>
      new Set(
        (await bSql`SELECT idempotency_key FROM messages WHERE conversation_id = ANY(${convs}::uuid[]) AND sender_id = ${alice}`).map(
          (r) => r.idempotency_key as string,
        ),
      );
    const atTakeover = await keysInB();
    const rpo = acked.filter((m) => !atTakeover.has(m.key));
    // a comes back: its relay publishes what it had not, b re-appends the RPO entries.
    const returning = performance.now();
    await pair.restartRegion('a', { withoutMirror: true });
    const returnedAt = performance.now();
    const a2 = await RegionClient.connect(pair.a.wsUrl, await pair.issueToken(alice));
    clients.push(a2);
    h.send(alice, convs[1]!, 'a-after-return');
    const afterReturn = await a2.send(convs[1]!, 'a-after-return', {}, 10_000);
    if (afterReturn.answer?.frame.type === 'ack') h.ack(alice, 'a-after-return', afterReturn.answer.frame as never);
    let sendAfterReturn: string;
    if (afterReturn.answer?.frame.type !== 'ack') sendAfterReturn = `refused: ${JSON.stringify(afterReturn.answer?.frame ?? 'no answer')}`;
    else {
      // A forwarded send is committed in b before it is acknowledged; one a took as home reaches b
      // only through a's relay, MirrorMaker and b's applier.
      const [inB] = await bSql`SELECT 1 FROM messages WHERE sender_id = ${alice} AND idempotency_key = 'a-after-return'`;
      sendAfterReturn = inB ? 'forwarded to the new home' : 'stored in the old home';
    }
    await pair.startMirror('a');
    let recoveredMs: number | null = null;
    for (;;) {
      const now = await keysInB();
      if (rpo.every((m) => now.has(m.key))) {
        recoveredMs = performance.now() - returnedAt;
        break;
      }
      if (performance.now() - returnedAt > 120_000) break;
      await new Promise((res) => setTimeout(res, 250));
    }
    await new Promise((r) => setTimeout(r, 3000));
    // The history checker on b's history: both readers must end with every stored message.
    const storedB = (await Promise.all(convs.map((c) => storedMessages(pair.b.databaseUrl, c)))).flat();
    const ids = new Set(storedB.map((m) => m.message_id));
    const hasAll = (c: RegionClient) =>
      ids.size ===
      new Set(
        c
          .messageFrames()
          .map((m) => m.message_id)
          .filter((id) => ids.has(id)),
      ).size;
    for (const t0 = Date.now(); !(hasAll(b) && hasAll(moved)) && Date.now() - t0 < 60_000; )
      await new Promise((res) => setTimeout(res, 250));
    // alice's view: her client of a up to each takeover (the rewind dropped the rest), then the moved client
    for (const { frame } of a.frames)
      if (frame.type === 'message' && frame.message.sequence_number <= (takeovers.get(frame.message.conversation_id) ?? 0))
        h.receive(alice, frame.message, { via: frame.via });
    for (const { frame } of moved.frames) if (frame.type === 'message') h.receive(alice, frame.message, { via: frame.via });
    for (const { frame } of b.frames) if (frame.type === 'message') h.receive(bob, frame.message, { via: frame.via });
    const history = h.check(storedB, () => [alice, bob], { rehomed: takeovers, conversations: convs });
    // a applied b's stream: its copy is b's history
    let copiesEqual = false;
    for (const t0 = Date.now(); !copiesEqual && Date.now() - t0 < 30_000; ) {
      const storedA = (await Promise.all(convs.map((c) => storedMessages(pair.a.databaseUrl, c)))).flat();
      copiesEqual = JSON.stringify(storedA) === JSON.stringify(storedB);
      if (!copiesEqual) await new Promise((res) => setTimeout(res, 500));
    }
    const rows = await bSql`SELECT idempotency_key, count(*)::int AS n FROM messages
      WHERE conversation_id = ANY(${convs}::uuid[]) AND sender_id = ${alice} GROUP BY idempotency_key`;
    const stored = new Map(rows.map((r) => [r.idempotency_key as string, r.n as number]));
    const seen = new Set<string>();
    let duplicates = 0;
    let reordered = 0;
    const lastSeq = new Map<string, number>();
    for (const m of b.messageFrames()) {
      if (seen.has(m.message_id)) duplicates++;
      seen.add(m.message_id);
      if (m.sequence_number <= (lastSeq.get(m.conversation_id) ?? 0)) reordered++;
      lastSeq.set(m.conversation_id, m.sequence_number);
    }
    return {
      rtt_ms: rttMs,
      failover_after_ms: FAILOVER_AFTER_MS,
      acked_before_kill: ackedBeforeKill,
      rto_ms: Math.round(rtoMs),
      rpo_entries: rpo.length,
      acked_lost: acked.filter((m) => !stored.has(m.key)).length,
      acked_stored_twice: acked.filter((m) => (stored.get(m.key) ?? 0) > 1).length,
      duplicates_at_client: duplicates,
      reordered_at_client: reordered,
      rewinds_expected: expectedRewinds.length,
      rewind_problems: rewindProblems,
      return_ms: Math.round(returnedAt - returning),
      send_after_return: sendAfterReturn,
      rpo_recovered_ms: recoveredMs === null ? null : Math.round(recoveredMs),
      history,
      arrivals: h.arrivals(),
      copies_equal: copiesEqual,
    };
  } finally {
    for (const c of clients) c.close();
    await bSql.end();
    await pair.stop();
  }
}
