/**
 * Whether the pipeline itself carried every message, read from Kafka after the heal. A gap fill
 * repairs what the live path skipped, so the client-side checks pass whether a filled message was
 * late or lost in the pipeline; this tells the two apart: every stored message must be on the event
 * topic (the relay's hop), and every message a member got by fill must have been routed to some
 * node for that member (the delivery worker's hop) -- then the fill covered a late or reordered
 * copy, not a lost one. The last hop (a gateway's consumer to its connection) is not audited here.
 */
import { randomUUID } from 'node:crypto';
import { createKafkaClient, createLagProbe, runConsumer } from '../../common/kafka/index.js';
import { createLogger } from '../../common/log.js';
import { decodeNodeRecord, nodeTopic } from '../../common/node-records.js';

/** `${conversation_id}#${sequence}` of a timeline entry in an event, or null (read marks, creation). */
function entryKey(event: unknown): string | null {
  const m = (event as { message?: { conversation_id?: unknown; sequence_number?: unknown } } | null)?.message;
  return m && typeof m.conversation_id === 'string' && typeof m.sequence_number === 'number'
    ? `${m.conversation_id}#${m.sequence_number}`
    : null;
}

export interface PipelineRecords {
  /** Entries seen on the event topic. */
  published: Set<string>;
  /** Entry -> users it was routed to on a node or the broadcast topic ('all': every member). */
  routed: Map<string, Set<string> | 'all'>;
  /** Records on the dead-letter topic. */
  deadLettered: number;
}

export interface PipelineAudit {
  published: number;
  /** Stored but never on the event topic. */
  unpublished: string[];
  /** Deliveries the member got by fill (`user|conv#seq`). */
  filled: number;
  /** ...of which the pipeline never routed to that member: a loss the fill hid. */
  filled_never_routed: string[];
  /** The same grouped into runs with the faults around them (the first 100). */
  never_routed_runs?: NeverRoutedRun[];
  dead_lettered: number;
}

export function auditPipeline(
  records: PipelineRecords,
  stored: ReadonlyArray<{ conversation_id: string; sequence_number: number }>,
  filled: ReadonlyArray<{ user: string; key: string }>,
): PipelineAudit {
  const unpublished = stored.map((m) => `${m.conversation_id}#${m.sequence_number}`).filter((k) => !records.published.has(k));
  const filledNeverRouted = filled
    .filter((f) => {
      const to = records.routed.get(f.key);
      return to === undefined || (to !== 'all' && !to.has(f.user));
    })
    .map((f) => `${f.user}|${f.key}`);
  return {
    published: records.published.size,
    unpublished,
    filled: filled.length,
    filled_never_routed: filledNeverRouted,
    dead_lettered: records.deadLettered,
  };
}

/** Consecutive sequences of one member and conversation the pipeline never routed, with the faults around them. */
export interface NeverRoutedRun {
  user: string;
  conversation_id: string;
  from_sequence: number;
  to_sequence: number;
  /** When the first and last of them were committed, seconds into the run. */
  committed_s: [number, number];
  /** Faults active within `slackS` of those commits (`kind target start-end`). */
  faults: string[];
}

/**
 * Groups `filled_never_routed` entries into runs and names the faults around each, so a failed
 * audit says where to look (finding 16 had only counts to go on).
 */
export function neverRoutedRuns(
  neverRouted: readonly string[],
  committedAtMs: ReadonlyMap<string, number>,
  t0: number,
  faults: ReadonlyArray<{ kind: string; target: string; start_s: number; end_s: number }>,
  slackS = 6,
): NeverRoutedRun[] {
  const byPair = new Map<string, number[]>();
  for (const e of neverRouted) {
    const [user, key] = e.split('|') as [string, string];
    const [conv, seq] = key.split('#') as [string, string];
    const k = `${user}|${conv}`;
    const l = byPair.get(k);
    if (l) l.push(Number(seq));
    else byPair.set(k, [Number(seq)]);
  }
  const runs: NeverRoutedRun[] = [];
  for (const [k, seqs] of byPair) {
    const [user, conv] = k.split('|') as [string, string];
    seqs.sort((a, b) => a - b);
    let start = 0;
    for (let i = 1; i <= seqs.length; i++) {
      if (i < seqs.length && seqs[i] === seqs[i - 1]! + 1) continue;
      const from = seqs[start]!;
      const to = seqs[i - 1]!;
      const at = (seq: number) => Math.round(((committedAtMs.get(`${conv}#${seq}`) ?? Number.NaN) - t0) / 100) / 10;
      const first = at(from);
      const last = at(to);
      runs.push({
        user,
        conversation_id: conv,
        from_sequence: from,
        to_sequence: to,
        committed_s: [first, last],
        faults: faults
          .filter((f) => f.start_s - slackS <= last && f.end_s + slackS >= first)
          .map((f) => `${f.kind} ${f.target} ${f.start_s}-${f.end_s}`),
      });
      start = i;
    }
  }
  return runs.sort((a, b) => a.committed_s[0] - b.committed_s[0]);
}

/** Reads the event, delivery, node and dead-letter topics from the start until nothing is left. */
export async function readPipeline(
  brokers: string,
  t: { events: string; deliveries: string; dlq: string; nodes: string[] },
  timeoutMs: number,
): Promise<PipelineRecords> {
  const log = createLogger({ level: 'silent', nodeId: 'chaos-audit', role: 'chaos' });
  const client = createKafkaClient({ brokers: brokers.split(','), clientId: 'chaos-audit', log });
  const out: PipelineRecords = { published: new Set(), routed: new Map(), deadLettered: 0 };
  const route = (key: string, to: string[] | null) => {
    const had = out.routed.get(key);
    if (had === 'all') return;
    if (to === null) return void out.routed.set(key, 'all');
    const s = had ?? new Set<string>();
    for (const u of to) s.add(u);
    out.routed.set(key, s);
  };
  const topics = [t.events, t.deliveries, t.dlq, ...t.nodes.map(nodeTopic)];
  const groupId = `chaos-audit-${randomUUID()}`;
  const consumer = await runConsumer(client, {
    groupId,
    topic: topics,
    fromBeginning: true,
    log,
    join: { timeoutMs: 30_000, required: true },
    handleBatch: async (rs) => {
      for (const r of rs) {
        if (r.value === null) continue;
        if (r.topic === t.dlq) {
          out.deadLettered++;
          continue;
        }
        try {
          if (r.topic === t.events) {
            const k = entryKey(JSON.parse(r.value));
            if (k) out.published.add(k);
            continue;
          }
          const d = decodeNodeRecord(r.value);
          if (d.kind !== 'events') continue;
          for (const x of d.deliveries) {
            const k = entryKey(x.event);
            if (k) route(k, x.recipients);
          }
        } catch {
          /* not ours to judge here: the roles dead-letter what they cannot decode */
        }
      }
    },
  });
  const probe = createLagProbe(client);
  try {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      let left = 0;
      for (const topic of topics) {
        const lag = await probe.lag(groupId, topic).catch(() => null);
        left += lag === null ? 1 : lag.reduce((n, p) => n + p.lag, 0);
      }
      if (left === 0) break;
      if (Date.now() > deadline) throw new Error(`pipeline audit: ${left} records left unread after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 500));
    }
  } finally {
    await probe.close();
    await consumer.stop();
  }
  return out;
}
