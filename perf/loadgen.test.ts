import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { randomBytes } from 'node:crypto';
import { newHist, recordMs, encodeHist, mergeEncoded, summarize, decodeHist, percentileCurve } from './lib/hist.js';
import { leastSquares } from './lib/fit.js';
import { dueCount, intendedTime, slotOf, totalMessages } from './lib/schedule.js';
import { parseProm } from './lib/sampler.js';
import { signHS256 } from './lib/jwt.js';
import { parseArgs } from './lib/args.js';
import { mergeConnect, stormTally, tallyReports } from './lib/tally.js';
import type { ConnSpec, WorkerMsg, WorkerReport } from './lib/types.js';
import { createHmac } from 'node:crypto';
import { LineDecoder, Workers, encodeLine, ensureGoWorker } from './lib/workers.js';
import { makeConversations, makeUsers } from './lib/realchat-api.js';
import { startTestServer, type TestServer } from '../tests/harness/server.js';

describe('histogram merge across workers', () => {
  it('merges encoded histograms exactly (count, max, percentiles)', () => {
    const a = newHist();
    const b = newHist();
    for (let i = 1; i <= 900; i++) recordMs(a, 1); // 900 x 1 ms
    for (let i = 1; i <= 100; i++) recordMs(b, 100); // 100 x 100 ms
    const merged = mergeEncoded([encodeHist(a), encodeHist(b)]);
    const s = summarize(merged);
    expect(s.count).toBe(1000);
    expect(s.p50).toBeCloseTo(1, 2);
    expect(s.p95).toBeCloseTo(100, 0); // would be 1 ms if b were dropped
    expect(s.max).toBeCloseTo(100, 0);
  });
  it('round-trips sub-millisecond values', () => {
    const a = newHist();
    recordMs(a, 0.25);
    const d = decodeHist(encodeHist(a));
    expect(d.totalCount).toBe(1);
    expect(d.maxValue).toBeGreaterThanOrEqual(249);
    expect(d.maxValue).toBeLessThanOrEqual(251);
  });
  it('an empty worker contributes nothing', () => {
    const a = newHist();
    recordMs(a, 5);
    expect(summarize(mergeEncoded([encodeHist(a), encodeHist(newHist()), ''])).count).toBe(1);
  });
});

describe('memory per connection fit', () => {
  it('recovers slope and intercept of an exact line', () => {
    const f = leastSquares([0, 1000, 5000, 10000], [50e6, 50e6 + 6.6e6, 50e6 + 33e6, 50e6 + 66e6]);
    expect(f.slope).toBeCloseTo(6600, 6);
    expect(f.intercept).toBeCloseTo(50e6, 0);
    expect(f.r2).toBeCloseTo(1, 9);
  });
  it('is a least-squares fit, not the endpoint slope', () => {
    // y = 2x with one noisy point; endpoints alone would give slope 2
    const f = leastSquares([0, 1, 2, 3], [0, 2, 6, 6]);
    expect(f.slope).toBeCloseTo(2.2, 9);
    expect(f.intercept).toBeCloseTo(0.2, 9);
    expect(f.r2).toBeLessThan(1);
  });
  it('refuses degenerate input', () => {
    expect(() => leastSquares([1], [1])).toThrow();
    expect(() => leastSquares([1, 1], [1, 2])).toThrow();
  });
});

describe('open-loop scheduler', () => {
  it('intended times are fixed by rate, independent of when sends happen', () => {
    expect(intendedTime(1000, 100, 0)).toBe(1000);
    expect(intendedTime(1000, 100, 1)).toBe(1010);
    expect(intendedTime(1000, 100, 250)).toBe(3500);
    expect(intendedTime(0, 3, 1)).toBeCloseTo(333.333, 3);
  });
  it('a stalled sender catches up: everything intended before now is due at once', () => {
    // rate 1000/s; the loop was blocked for 2 s: 2001 messages are due, none is skipped or re-timed
    expect(dueCount(0, 1000, 1_000_000, 2000)).toBe(2001);
    expect(dueCount(0, 1000, 1_000_000, 1999.5)).toBe(2000);
    expect(dueCount(0, 1000, 1_000_000, -1)).toBe(0);
    expect(dueCount(0, 1000, 500, 2000)).toBe(500);
  });
  it('total and slot assignment', () => {
    expect(totalMessages(1000, 60)).toBe(60000);
    expect(totalMessages(0, 60)).toBe(0);
    expect([0, 1, 2, 3, 4].map((k) => slotOf(k, 2))).toEqual([0, 1, 0, 1, 0]);
  });
});

describe('helpers', () => {
  it('parses prom-client text, summing labelled series', () => {
    const m = parseProm(
      [
        '# HELP nodejs_heap_size_used_bytes x',
        'nodejs_heap_size_used_bytes 1234',
        'nodejs_gc_duration_seconds_sum{kind="minor"} 0.5',
        'nodejs_gc_duration_seconds_sum{kind="major"} 0.25',
        'unrelated_metric 9',
      ].join('\n'),
    );
    expect(m['nodejs_heap_size_used_bytes']).toBe(1234);
    expect(m['nodejs_gc_duration_seconds_sum']).toBeCloseTo(0.75, 9);
    expect(m['unrelated_metric']).toBeUndefined();
  });
  it('signs HS256 JWTs that verify with the secret', () => {
    const t = signHS256({ sub: 'u1', exp: 2 }, 's3cret');
    const [h, b, sig] = t.split('.');
    expect(createHmac('sha256', 's3cret').update(`${h}.${b}`).digest('base64url')).toBe(sig);
    expect(JSON.parse(Buffer.from(b!, 'base64url').toString())).toEqual({ sub: 'u1', exp: 2 });
  });
});

describe('cluster scenario options', () => {
  it('allows up to 250000 connections for cluster only, and parses the gateway list', () => {
    const o = parseArgs([
      'cluster',
      '--connections',
      '100000',
      '--urls',
      'http://127.0.0.1:8080,http://127.0.0.1:8081',
      '--conversations',
      '500',
    ]);
    expect(o.scenario).toBe('cluster');
    expect(o.connections).toBe(100000);
    expect(o.urls).toEqual(['http://127.0.0.1:8080', 'http://127.0.0.1:8081']);
    expect(o.conversations).toBe(500);
    expect(() => parseArgs(['cluster', '--connections', '250001'])).toThrow(/1\.\.250000/);
    expect(() => parseArgs(['idle', '--connections', '60000'])).toThrow(/1\.\.50000/);
    expect([o.offlineMembers, parseArgs(['cluster', '--offline-members', '99800']).offlineMembers]).toEqual([0, 99800]);
    expect(() => parseArgs(['cluster', '--offline-members', '100001'])).toThrow(/<= 100000/);
    const g = parseArgs([
      'cluster',
      '--gateways',
      '8',
      '--base-port',
      '9000',
      '--jwt-secret-file',
      '/x',
      '--storm',
      '--storm-rate',
      '4000',
    ]);
    expect([g.gateways, g.basePort, g.jwtSecretFile, g.auth, g.storm, g.stormRate, o.storm]).toEqual([
      8,
      9000,
      '/x',
      'jwt',
      true,
      4000,
      false,
    ]);
  });
  it("reads a gateway's realchat_active_connections from its labelled series", () => {
    expect(parseProm('realchat_active_connections{node_id="gateway-3"} 12500\n')['realchat_active_connections']).toBe(12500);
  });
});

describe('merging worker reports', () => {
  const report = (over: Partial<WorkerReport>): WorkerReport => ({
    workerId: 0,
    hist: '',
    sent: 0,
    acked: 0,
    delivered: 0,
    duplicates: 0,
    gaps: 0,
    errors: {},
    acked_per_conv: {},
    unique_per_conn_conv: [],
    first_recv_ms: 0,
    last_recv_ms: 0,
    open: 0,
    ...over,
  });
  it('counts loss per member of each conversation against the acked messages, across workers', () => {
    const h = newHist();
    recordMs(h, 2);
    const tally = tallyReports(
      [
        report({
          workerId: 0,
          hist: encodeHist(h),
          sent: 3,
          acked: 3,
          delivered: 5,
          open: 1,
          errors: { closed_1006: 1 },
          acked_per_conv: { a: 2, b: 1 },
          unique_per_conn_conv: [
            [0, 'a', 2],
            [2, 'b', 1],
          ],
        }),
        report({
          workerId: 1,
          sent: 1,
          acked: 1,
          delivered: 2,
          open: 2,
          errors: { closed_1006: 2 },
          acked_per_conv: { a: 1 },
          unique_per_conn_conv: [[1, 'a', 2]],
        }),
      ],
      new Map([
        ['a', [0, 1]],
        ['b', [2, 3]],
      ]),
    );
    // a: 3 acked x 2 members, member 0 and 1 miss one each; b: 1 acked x 2 members, member 3 got nothing
    expect([tally.expected_deliveries, tally.lost]).toEqual([8, 3]);
    expect([tally.sent, tally.acked, tally.delivered, tally.open]).toEqual([4, 4, 7, 3]);
    expect(tally.errors).toEqual({ closed_1006: 3 });
    expect(tally.latency_ms.count).toBe(1);
  });
  it('accept rate spans all workers; no workers means nothing open', () => {
    const c = mergeConnect([
      { attempted: 10, open: 10, failed: 0, first_attempt_ms: 1000, last_open_ms: 2000 },
      { attempted: 10, open: 8, failed: 2, first_attempt_ms: 1500, last_open_ms: 3000 },
    ]);
    expect(c).toEqual({ open: 18, failed: 2, accept_per_s: 9 });
    expect(mergeConnect([])).toEqual({ open: 0, failed: 0, accept_per_s: 0 });
  });
  it('merges storms over workers; 100k reopen times do not overflow the stack (no spread into Math.max)', () => {
    const reopen = Array.from({ length: 100_000 }, (_, i) => i);
    const st = stormTally(
      [
        report({ storm: { dropped: 100_000, reopened: 99_999, failed: 1, resumed_ms: reopen, reopen_ms: reopen } }),
        report({ storm: { dropped: 2, reopened: 2, failed: 0, resumed_ms: [5, 200_000], reopen_ms: [5, 200_000] } }),
        report({}),
      ],
      7,
    );
    expect(st).toMatchObject({ dropped: 100_002, reopened: 100_001, failed: 1, all_reconnected_s: 200, resume_max_s: 200, lost: 7 });
    expect(st.resume_p50_s).toBeCloseTo(50, 0);
  });
});

// Encoded by the Go worker (perf/go/loadgen: realchat-loadgen --encode-hist ...), hdrhistogram-go's
// V2 compressed encoding: 900 x 1 ms, 99 x 100 ms, 1 x 0.25 ms; and 250.5 ms, 3.25 ms.
const GO_HIST_1000 = 'HISTFAAAADB42pJpmSzMwMDAzQABzFCaEURcm7yEwf4DROAzM9NN7g6+hxnHGAEBAAD//6AACRQ=';
const GO_HIST_2 = 'HISTFAAAACt42pJpmSzMwMDAxgABzFCaEURcm7yEwf4DRGCjJtPUVCZAAAAA//90dAZl';

describe('Go worker histograms merge like Node workers', () => {
  const jsHist = (values: number[]): string => {
    const h = newHist();
    for (const v of values) recordMs(h, v);
    return encodeHist(h);
  };
  const values1000 = [...Array<number>(900).fill(1), ...Array<number>(99).fill(100), 0.25];
  it('decodes to the same counts as the same values recorded in JS', () => {
    const fromGo = mergeEncoded([GO_HIST_1000]);
    const fromJs = mergeEncoded([jsHist(values1000)]);
    expect(summarize(fromGo)).toEqual(summarize(fromJs));
    expect(percentileCurve(fromGo)).toEqual(percentileCurve(fromJs));
    expect(summarize(fromGo).count).toBe(1000);
  });
  it('merges Go and Node workers into one distribution, exactly', () => {
    const mixed = mergeEncoded([GO_HIST_1000, jsHist([7, 8]), GO_HIST_2, '']);
    const allJs = mergeEncoded([jsHist([...values1000, 7, 8, 250.5, 3.25])]);
    expect(summarize(mixed)).toEqual(summarize(allJs));
    expect(percentileCurve(mixed)).toEqual(percentileCurve(allJs));
    expect(summarize(mixed).max).toBeCloseTo(250.5, 0);
  });
});

describe('Go worker message framing (JSON lines)', () => {
  it('one command per line', () => {
    const line = encodeLine({ cmd: 'send', startMs: 1.5, rate: 10, total: 3, slots: [{ conn: 1, conv: 'c\n"x' }] });
    expect(line.endsWith('\n')).toBe(true);
    expect(line.slice(0, -1).includes('\n')).toBe(false); // newlines inside strings are escaped
    expect(JSON.parse(line)).toEqual({ cmd: 'send', startMs: 1.5, rate: 10, total: 3, slots: [{ conn: 1, conv: 'c\n"x' }] });
  });
  it('reassembles events split across chunks; other lines come back as log text', () => {
    const d = new LineDecoder();
    const ready = JSON.stringify({ ev: 'ready', workerId: 2 } satisfies WorkerMsg);
    const report = JSON.stringify({ ev: 'report', report: { workerId: 2, hist: 'HISTF', errors: {} } });
    expect(d.push(ready.slice(0, 5))).toEqual([]);
    expect(d.push(`${ready.slice(5)}\n${report.slice(0, 10)}`)).toEqual([{ ev: 'ready', workerId: 2 }]);
    const out = d.push(`${report.slice(10)}\npanic: something\n\n{"not":"an event"}\n`);
    expect(out).toHaveLength(3);
    expect((out[0] as Extract<WorkerMsg, { ev: 'report' }>).report.workerId).toBe(2);
    expect(out[1]).toBe('panic: something');
    expect(out[2]).toBe('{"not":"an event"}');
  });
  it('--engine go is accepted for the targets the Go worker speaks', () => {
    expect(parseArgs(['group', '--engine', 'go', '--go-procs', '2'])).toMatchObject({ engine: 'go', goProcs: 2 });
    expect(parseArgs(['pairs']).engine).toBe('node');
    expect(() => parseArgs(['pairs', '--engine', 'rust'])).toThrow(/--engine/);
    expect(() => parseArgs(['pairs', '--target', 'socketio', '--engine', 'go'])).toThrow(/does not drive socketio/);
    expect(() => parseArgs(['compare', '--engine', 'go'])).toThrow(/--targets realchat,ws,centrifugo/);
    expect(parseArgs(['compare', '--engine', 'go', '--targets', 'realchat,centrifugo']).targets).toEqual(['realchat', 'centrifugo']);
  });
});

// End to end: the Go worker (built by perf/go/build.sh if needed) against an in-process RealChat on
// PGlite: 8 connections in 4 conversations, 2 s at 40 msg/s, through the same parent code as a run.
describe('Go worker against an in-process server (smoke)', () => {
  let server: TestServer;
  beforeAll(async () => {
    ensureGoWorker(() => {});
    server = await startTestServer('pglite');
  }, 300_000);
  afterAll(async () => {
    await server?.close();
  });
  it('connects (one from an explicit local port), sends open loop, every member receives every acked message', async () => {
    const runId = randomBytes(4).toString('hex');
    const users = await makeUsers(server.http, 8, 'jwt', server.secret, runId);
    const groups = [0, 2, 4, 6].map((i) => [users[i]!, users[i + 1]!]);
    const convs = await makeConversations(server.http, groups, runId);
    const members = new Map(convs.map((c, g) => [c, [2 * g, 2 * g + 1]]));
    const port = 20_000 + Math.floor(Math.random() * 10_000);
    const specs: ConnSpec[] = users.map((u, i) => ({
      idx: i,
      userId: u.userId,
      token: u.token,
      convs: [convs[Math.floor(i / 2)]!],
      localAddress: `127.0.0.${2 + (i % 2)}`,
      ...(i === 0 ? { localPort: port } : {}),
    }));
    const logs: string[] = [];
    const workers = new Workers(2, (s) => logs.push(s), { engine: 'go', goProcs: 1 });
    try {
      await workers.all(
        (w) => ({
          cmd: 'init',
          init: {
            workerId: w,
            target: 'realchat',
            url: server.wsUrl,
            runId,
            conns: specs.filter((s) => s.idx % 2 === w),
            payloadBytes: 16,
          },
        }),
        'ready',
        10_000,
      );
      const connected = await workers.all({ cmd: 'connect', upTo: 4, ratePerS: 100 }, 'connected', 20_000);
      expect(mergeConnect(connected.map((m) => (m as Extract<WorkerMsg, { ev: 'connected' }>).result))).toMatchObject({
        open: 8,
        failed: 0,
      });
      const slots = specs.map((s) => ({ conn: s.idx, conv: s.convs[0]! }));
      const startMs = performance.timeOrigin + performance.now() + 200;
      await workers.all({ cmd: 'send', startMs, rate: 40, total: 80, slots }, 'sent', 20_000);
      await new Promise((r) => setTimeout(r, 1000));
      const reports = (await workers.all({ cmd: 'report' }, 'report', 10_000)).map(
        (m) => (m as Extract<WorkerMsg, { ev: 'report' }>).report,
      );
      const tally = tallyReports(reports, members);
      expect(tally.errors).toEqual({});
      expect([tally.sent, tally.acked, tally.expected_deliveries, tally.delivered, tally.lost]).toEqual([80, 80, 160, 160, 0]);
      expect([tally.duplicates, tally.gaps, tally.open]).toEqual([0, 0, 8]);
      expect(tally.latency_ms.count).toBe(160);
      expect(tally.latency_ms.p50).toBeGreaterThan(0);
      expect(tally.latency_ms.max).toBeLessThan(5000);
    } finally {
      await workers.close();
    }
    expect(logs.filter((l) => l.includes('error'))).toEqual([]);
  }, 60_000);
});
