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
import { describe, expect, it } from 'vitest';
import { conversations, mirrored, RegionClient, regionLoss, type Stamped } from '../tests/harness/region-loss.js';
import { startRegionPair, type RegionStack } from '../tests/harness/region-pair.js';

const RTTS = (process.env.REGION_RTT_MS ?? '20,60,150').split(',').map(Number);
const RATE = Number(process.env.REGION_RATE ?? 50);
const SECONDS = Number(process.env.REGION_SECONDS ?? 20);
const FAILOVER_AFTER_MS = 3000;
const CONVERSATIONS = 10;

function pct(values: number[]): { n: number; p50: number; p90: number; p99: number; max: number } {
  const s = [...values].sort((x, y) => x - y);
  const at = (q: number) => (s.length ? Math.round(s[Math.min(s.length - 1, Math.floor(q * s.length))]! * 10) / 10 : NaN);
  return { n: s.length, p50: at(0.5), p90: at(0.9), p99: at(0.99), max: at(1) };
}

/**
 * Sends `rate` msg/s for SECONDS from `client` into `conv`, as the SDK does: a refused send is sent
 * again with its key (later ones are refused `after_refused` until it is), within 30 s. Each
 * send's time is from its first attempt to its ack.
 */
async function stream(client: RegionClient, conv: string, tag: string, rate: number) {
  const sends: Array<Promise<{ key: string; conv: string; sentAt: number; answer: Stamped | null; attempts: number; refusals: string[] }>> =
    [];
  const total = Math.round(rate * SECONDS);
  const t0 = performance.now();
  const sendUntilAcked = async (key: string, payload: unknown) => {
    const first = performance.now();
    const refusals: string[] = [];
    for (let attempt = 1; ; attempt++) {
      const r = await client.send(conv, key, payload);
      if (r.answer?.frame.type === 'ack' || performance.now() - first > 30_000)
        return { key, conv, sentAt: first, answer: r.answer, attempts: attempt, refusals };
      refusals.push(r.answer ? `${r.answer.frame.code}/${r.answer.frame.reason ?? '-'}` : 'timeout');
      await new Promise((res) => setTimeout(res, Math.min(1000, 100 * attempt)));
    }
  };
  // Each sender starts at a random point of its period, so the senders do not send in lockstep.
  const offset = Math.random() * (1000 / rate);
  for (let i = 0; i < total; i++) {
    const wait = t0 + offset + (i * 1000) / rate - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    sends.push(sendUntilAcked(`${tag}-${i}`, { i, tag }));
  }
  return Promise.all(sends);
}

interface RttResult {
  rtt_ms: number;
  /** send -> ack, by where the conversation's home is relative to the sender. */
  send_local_ms: ReturnType<typeof pct>;
  send_remote_ms: ReturnType<typeof pct>;
  refused: { local: Record<string, number>; remote: Record<string, number> };
  /** ack at the sender -> live at a member in the home region / in the other region. */
  delivered_home_ms: ReturnType<typeof pct>;
  replication_lag_ms: ReturnType<typeof pct>;
  arrivals_other_region: Record<string, number>;
}

async function measureRtt(rttMs: number): Promise<RttResult> {
  const pair = await startRegionPair({ rttMs });
  const clients: RegionClient[] = [];
  const connect = async (r: RegionStack, user: string) => {
    const c = await RegionClient.connect(r.wsUrl, await pair.issueToken(user));
    clients.push(c);
    return c;
  };
  try {
    // Per conversation (homed in a) a sender in each region, each at RATE / CONVERSATIONS; one
    // watcher in each region is a member of all of them. Many senders, not one: a connection's
    // requests run one after another (its send order), so one connection alone forwards about one
    // send per round trip.
    const [watcherA, watcherB] = [randomUUID(), randomUUID()];
    const convs: string[] = [];
    const inA: string[] = [];
    const inB: string[] = [];
    for (let i = 0; i < CONVERSATIONS; i++) {
      inA.push(randomUUID());
      inB.push(randomUUID());
      convs.push(...(await conversations(pair, pair.a, inA[i]!, [inB[i]!, watcherA, watcherB], 1)));
    }
    await mirrored(pair.b, convs);
    const sendersA = await Promise.all(inA.map((u) => connect(pair.a, u)));
    const sendersB = await Promise.all(inB.map((u) => connect(pair.b, u)));
    const home = await connect(pair.a, watcherA);
    const other = await connect(pair.b, watcherB);
    // Warm-up: the forwarder's connections, the consumers' first fetches.
    for (let i = 0; i < CONVERSATIONS; i++) {
      await sendersA[i]!.send(convs[i]!, 'warm-a', {});
      await sendersB[i]!.send(convs[i]!, 'warm-b', {});
    }
    await new Promise((r) => setTimeout(r, 2000));

    const phase = async (from: RegionClient[], tag: string) =>
      (await Promise.all(from.map((c, i) => stream(c, convs[i]!, `${tag}-${i}`, RATE / CONVERSATIONS)))).flat();
    const local = await phase(sendersA, 'local');
    await new Promise((r) => setTimeout(r, 3000 + rttMs * 10));
    const remote = await phase(sendersB, 'remote');
    await new Promise((r) => setTimeout(r, 3000 + rttMs * 10));

    const ackMs = (rs: typeof local) => rs.filter((r) => r.answer?.frame.type === 'ack').map((r) => r.answer!.at - r.sentAt);
    /** Refusals on the way, by code/reason ("timeout": no answer within 15 s), and sends never acknowledged. */
    const refusedOf = (rs: typeof local) => {
      const out: Record<string, number> = {};
      for (const r of rs) {
        for (const k of r.refusals) out[k] = (out[k] ?? 0) + 1;
        if (r.answer?.frame.type !== 'ack') out.never_acknowledged = (out.never_acknowledged ?? 0) + 1;
      }
      return out;
    };
    const homeArrivals = home.arrivals();
    const otherArrivals = other.arrivals();
    const deliveredHome: number[] = [];
    const lag: number[] = [];
    const via: Record<string, number> = {};
    let missing = 0;
    for (const r of local) {
      if (r.answer?.frame.type !== 'ack') continue;
      const id = r.answer.frame.message_id as string;
      const atHome = homeArrivals.get(id);
      const atOther = otherArrivals.get(id);
      if (atHome) deliveredHome.push(atHome.at - r.answer.at);
      if (atOther) {
        lag.push(atOther.at - r.answer.at);
        via[atOther.via] = (via[atOther.via] ?? 0) + 1;
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

describe('multi-region measurements', () => {
  it('replication lag and send latency by RTT; a region lost and back', async () => {
    const started = new Date().toISOString();
    const byRtt: RttResult[] = [];
    for (const rtt of RTTS) {
      byRtt.push(await measureRtt(rtt));
      console.log(JSON.stringify(byRtt.at(-1)));
    }
    const loss = await regionLoss({
      rttMs: RTTS.includes(60) ? 60 : RTTS[0]!,
      failoverAfterMs: FAILOVER_AFTER_MS,
      rate: RATE,
      conversations: CONVERSATIONS,
    });
    console.log(JSON.stringify(loss));
    const out = join(process.cwd(), 'perf', 'results');
    mkdirSync(out, { recursive: true });
    const base = join(out, `regions-${started.replace(/[-:]/g, '').slice(0, 15)}`);
    const result = { started, rate: RATE, seconds: SECONDS, conversations: CONVERSATIONS, by_rtt: byRtt, region_loss: loss };
    writeFileSync(`${base}.json`, `${JSON.stringify(result, null, 2)}\n`);
    const row = (r: RttResult) =>
      `| ${r.rtt_ms} | ${r.send_local_ms.p50} / ${r.send_local_ms.p99} | ${r.send_remote_ms.p50} / ${r.send_remote_ms.p99} | ${r.delivered_home_ms.p50} / ${r.delivered_home_ms.p99} | ${r.replication_lag_ms.p50} / ${r.replication_lag_ms.p99} | ${JSON.stringify(r.refused.local)} / ${JSON.stringify(r.refused.remote)} |`;
    writeFileSync(
      `${base}.md`,
      [
        `# Multi-region measurements (${started})`,
        '',
        `\`npm run perf:regions\`: two regions, every role a real process, on one 2-core machine; ${RATE} msg/s for ${SECONDS} s per phase over ${CONVERSATIONS} conversations homed in a, one sender per conversation in each region. Times in ms, p50 / p99.`,
        '',
        '| RTT | send, home here | send, home in the other region (forwarded) | ack -> live at a member, home region | ack -> live at a member, other region (replication lag) | refused local / remote |',
        '|---|---|---|---|---|---|',
        ...byRtt.map(row),
        '',
        `Region a lost (kill -9 of its roles and broker) at RTT ${loss.rtt_ms} ms, automatic failover after ${loss.failover_after_ms} ms of silence:`,
        '',
        `- RTO (kill -> b's first accepted send to a's conversation): ${loss.rto_ms} ms`,
        `- RPO: ${loss.rpo_entries} acknowledged entries not in b at the takeover, of ${loss.acked_before_kill} acknowledged; re-appended ${loss.rpo_recovered_ms} ms after a's roles were back (restarting its broker and roles took ${loss.return_ms} ms)`,
        `- after a's return: acknowledged lost ${loss.acked_lost}, stored twice ${loss.acked_stored_twice}; at b's client: duplicates ${loss.duplicates_at_client}, out of order ${loss.reordered_at_client}`,
        '',
      ].join('\n'),
    );
    console.log(`wrote ${base}.json and .md`);
    expect(loss.acked_lost).toBe(0);
    expect(loss.acked_stored_twice).toBe(0);
  }, 3_600_000);
});
