/**
 * Multi-region measurements (issue "Phase 7", docs/multi-region.md "Measured"): two regions as real
 * processes (tests/harness/region-pair.ts) with REGION_RTT_MS of round trip between them, at each
 * RTT in turn:
 * - replication lag: a message committed in its home region (its sender's ack) until a member
 *   connected to the other region has it live, next to the same for a member in the home region;
 * - send latency (send -> ack) of a conversation homed in the sender's region against one homed in
 *   the other (forwarded): the price of one home per conversation;
 * and, once (the last RTT), a region lost mid-stream (kill -9 of its roles and broker) with the
 * automatic failover: the time until the surviving region's client can send to the lost region's
 * conversation again (RTO), the acknowledged entries not replicated at the takeover (RPO), and after
 * the lost region returns, the history across regions (every acknowledged message stored once in
 * the new home, none delivered twice to a client, order intact).
 *
 * Not part of `npm test` (it takes minutes): `npm run perf:regions`; knobs REGION_RTT_MS (list,
 * default 20,60,150), REGION_RATE (msg/s per phase, default 50), REGION_SECONDS (per phase, default 20).
 * Writes perf/results/regions-<stamp>.json and .md.
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import postgres from 'postgres';
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { createConversationAt } from '../tests/harness/queries.js';
import { startRegionPair, type RegionPair, type RegionStack } from '../tests/harness/region-pair.js';

const RTTS = (process.env.REGION_RTT_MS ?? '20,60,150').split(',').map(Number);
const RATE = Number(process.env.REGION_RATE ?? 50);
const SECONDS = Number(process.env.REGION_SECONDS ?? 20);
const FAILOVER_AFTER_MS = 3000;
const CONVERSATIONS = 10;

interface Stamped {
  at: number;
  frame: Record<string, any>;
}

/** A WebSocket client that timestamps every frame (performance.now(), one clock for the whole run). */
class Client {
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
  static async connect(url: string, token: string): Promise<Client> {
    const ws = new WebSocket(url, { handshakeTimeout: 5000 });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    const c = new Client(ws);
    ws.send(JSON.stringify({ type: 'hello', token }));
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

function pct(values: number[]): { n: number; p50: number; p90: number; p99: number; max: number } {
  const s = [...values].sort((x, y) => x - y);
  const at = (q: number) => (s.length ? Math.round(s[Math.min(s.length - 1, Math.floor(q * s.length))]! * 10) / 10 : NaN);
  return { n: s.length, p50: at(0.5), p90: at(0.9), p99: at(0.99), max: at(1) };
}

/** Sends RATE msg/s for SECONDS from `client` round-robin over `convs`; every answer with its timing. */
async function stream(client: Client, convs: string[], tag: string) {
  const sends: Array<Promise<{ key: string; conv: string; sentAt: number; answer: Stamped | null }>> = [];
  const total = RATE * SECONDS;
  const t0 = performance.now();
  for (let i = 0; i < total; i++) {
    const due = t0 + (i * 1000) / RATE;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const conv = convs[i % convs.length]!;
    const key = `${tag}-${i}`;
    sends.push(client.send(conv, key, { i, tag }).then((r) => ({ key, conv, ...r })));
  }
  return Promise.all(sends);
}

async function conversations(pair: RegionPair, home: RegionStack, owner: string, members: string[], n: number): Promise<string[]> {
  const token = await pair.issueToken(owner);
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push(await createConversationAt(home.port, token, members));
  return out;
}

/** Waits until region r's database holds every one of the conversations (their copies mirrored). */
async function mirrored(r: RegionStack, convs: string[]): Promise<void> {
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

interface RttResult {
  rtt_ms: number;
  /** send -> ack, by where the conversation's home is relative to the sender. */
  send_local_ms: ReturnType<typeof pct>;
  send_remote_ms: ReturnType<typeof pct>;
  refused: { local: number; remote: number };
  /** ack at the sender -> live at a member in the home region / in the other region. */
  delivered_home_ms: ReturnType<typeof pct>;
  replication_lag_ms: ReturnType<typeof pct>;
  arrivals_other_region: Record<string, number>;
}

async function measureRtt(rttMs: number): Promise<RttResult> {
  const pair = await startRegionPair({ rttMs });
  const clients: Client[] = [];
  try {
    const [alice, bob, carol] = [randomUUID(), randomUUID(), randomUUID()];
    // Homed in a: alice (a) sends locally, bob (b) receives across; carol (a) receives at home.
    const convs = await conversations(pair, pair.a, alice, [bob, carol], CONVERSATIONS);
    await mirrored(pair.b, convs);
    const a = await Client.connect(pair.a.wsUrl, await pair.issueToken(alice));
    const aHome = await Client.connect(pair.a.wsUrl, await pair.issueToken(carol));
    const b = await Client.connect(pair.b.wsUrl, await pair.issueToken(bob));
    clients.push(a, aHome, b);
    // Warm-up: the forwarder's connections, the consumers' first fetches.
    for (let i = 0; i < 20; i++) {
      await a.send(convs[i % convs.length]!, `warm-a-${i}`, {});
      await b.send(convs[i % convs.length]!, `warm-b-${i}`, {});
    }
    await new Promise((r) => setTimeout(r, 2000));

    const local = await stream(a, convs, 'local');
    await new Promise((r) => setTimeout(r, 3000 + rttMs * 10));
    const remote = await stream(b, convs, 'remote');
    await new Promise((r) => setTimeout(r, 3000 + rttMs * 10));

    const ackMs = (rs: typeof local) => rs.filter((r) => r.answer?.frame.type === 'ack').map((r) => r.answer!.at - r.sentAt);
    const refusedOf = (rs: typeof local) => rs.filter((r) => r.answer?.frame.type !== 'ack').length;
    const homeArrivals = aHome.arrivals();
    const otherArrivals = b.arrivals();
    const deliveredHome: number[] = [];
    const lag: number[] = [];
    const via: Record<string, number> = {};
    let missing = 0;
    for (const r of local) {
      if (r.answer?.frame.type !== 'ack') continue;
      const id = r.answer.frame.message_id as string;
      const home = homeArrivals.get(id);
      const other = otherArrivals.get(id);
      if (home) deliveredHome.push(home.at - r.answer.at);
      if (other) {
        lag.push(other.at - r.answer.at);
        via[other.via] = (via[other.via] ?? 0) + 1;
      } else missing++;
    }
    expect(missing, 'acknowledged messages that never reached the other region').toBe(0);
    return {
      rtt_ms: rttMs,
      send_local_ms: pct(ackMs(local)),
      send_remote_ms: pct(ackMs(remote)),
      refused: { local: refusedOf(local), remote: refusedOf(remote) },
      delivered_home_ms: pct(deliveredHome),
      replication_lag_ms: pct(lag),
      arrivals_other_region: via,
    };
  } finally {
    for (const c of clients) c.close();
    await pair.stop();
  }
}

interface RegionLossResult {
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
  /** a's return -> every RPO entry re-appended in b. */
  rpo_recovered_ms: number | null;
}

async function measureRegionLoss(rttMs: number): Promise<RegionLossResult> {
  const pair = await startRegionPair({ rttMs, failoverAfterMs: FAILOVER_AFTER_MS });
  const clients: Client[] = [];
  const bSql = postgres(pair.b.databaseUrl, { max: 1, onnotice: () => {} });
  try {
    const [alice, bob] = [randomUUID(), randomUUID()];
    const convs = await conversations(pair, pair.a, alice, [bob], CONVERSATIONS);
    await mirrored(pair.b, convs);
    const a = await Client.connect(pair.a.wsUrl, await pair.issueToken(alice));
    const b = await Client.connect(pair.b.wsUrl, await pair.issueToken(bob));
    clients.push(a, b);
    // Alice streams into her home region; a is killed in the middle of it.
    const acked: Array<{ key: string; conv: string; id: string }> = [];
    let stop = false;
    const streaming = (async () => {
      for (let i = 0; !stop; i++) {
        const conv = convs[i % convs.length]!;
        const key = `a-${i}`;
        const r = await a.send(conv, key, { i }, 3000);
        if (r.answer?.frame.type === 'ack') acked.push({ key, conv, id: r.answer.frame.message_id });
        else if (!r.answer) break;
        await new Promise((res) => setTimeout(res, 1000 / RATE));
      }
    })();
    await new Promise((r) => setTimeout(r, 5000));
    const killedAt = performance.now();
    await pair.killRegion('a');
    stop = true;
    await streaming;
    const ackedBeforeKill = acked.length;
    // Bob sends to one of a's conversations until it is accepted: refused home_unreachable until
    // b's mirror applier takes the conversations over.
    let rtoMs = Number.NaN;
    for (let i = 0; ; i++) {
      const r = await b.send(convs[0]!, `b-rto-${i}`, { i }, 5000);
      if (r.answer?.frame.type === 'ack') {
        rtoMs = r.answer.at - killedAt;
        break;
      }
      if (performance.now() - killedAt > 120_000) throw new Error('no failover within 120 s');
      await new Promise((res) => setTimeout(res, 100));
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
    const returnedAt = performance.now();
    await pair.restartRegion('a');
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
      rpo_recovered_ms: recoveredMs === null ? null : Math.round(recoveredMs),
    };
  } finally {
    for (const c of clients) c.close();
    await bSql.end();
    await pair.stop();
  }
}

describe('multi-region measurements', () => {
  it('replication lag and send latency by RTT; a region lost and back', async () => {
    const started = new Date().toISOString();
    const byRtt: RttResult[] = [];
    for (const rtt of RTTS) {
      byRtt.push(await measureRtt(rtt));
      console.log(JSON.stringify(byRtt.at(-1)));
    }
    const loss = await measureRegionLoss(RTTS.includes(60) ? 60 : RTTS[0]!);
    console.log(JSON.stringify(loss));
    const out = join(process.cwd(), 'perf', 'results');
    mkdirSync(out, { recursive: true });
    const base = join(out, `regions-${started.replace(/[-:]/g, '').slice(0, 15)}`);
    const result = { started, rate: RATE, seconds: SECONDS, conversations: CONVERSATIONS, by_rtt: byRtt, region_loss: loss };
    writeFileSync(`${base}.json`, `${JSON.stringify(result, null, 2)}\n`);
    const row = (r: RttResult) =>
      `| ${r.rtt_ms} | ${r.send_local_ms.p50} / ${r.send_local_ms.p99} | ${r.send_remote_ms.p50} / ${r.send_remote_ms.p99} | ${r.delivered_home_ms.p50} / ${r.delivered_home_ms.p99} | ${r.replication_lag_ms.p50} / ${r.replication_lag_ms.p99} | ${r.refused.local} / ${r.refused.remote} |`;
    writeFileSync(
      `${base}.md`,
      [
        `# Multi-region measurements (${started})`,
        '',
        `\`npm run perf:regions\`: two regions, every role a real process, on one 2-core machine; ${RATE} msg/s for ${SECONDS} s per phase over ${CONVERSATIONS} conversations homed in a. Times in ms, p50 / p99.`,
        '',
        '| RTT | send, home here | send, home in the other region (forwarded) | ack -> live at a member, home region | ack -> live at a member, other region (replication lag) | refused local / remote |',
        '|---|---|---|---|---|---|',
        ...byRtt.map(row),
        '',
        `Region a lost (kill -9 of its roles and broker) at RTT ${loss.rtt_ms} ms, automatic failover after ${loss.failover_after_ms} ms of silence:`,
        '',
        `- RTO (kill -> b's first accepted send to a's conversation): ${loss.rto_ms} ms`,
        `- RPO: ${loss.rpo_entries} acknowledged entries not in b at the takeover, of ${loss.acked_before_kill} acknowledged; re-appended ${loss.rpo_recovered_ms} ms after a returned`,
        `- after a's return: acknowledged lost ${loss.acked_lost}, stored twice ${loss.acked_stored_twice}; at b's client: duplicates ${loss.duplicates_at_client}, out of order ${loss.reordered_at_client}`,
        '',
      ].join('\n'),
    );
    console.log(`wrote ${base}.json and .md`);
    expect(loss.acked_lost).toBe(0);
    expect(loss.acked_stored_twice).toBe(0);
  }, 3_600_000);
});
